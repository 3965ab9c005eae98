"""A raw batch dropped into the landing dir starts `mlops_features` by itself, in a real Airflow.

Scheduler, dag-processor, triggerer and api-server on a fresh MLOPS_HOME (LocalExecutor, SQLite),
driven over the REST API only:

1. `mlops_features` (schedule: `mlops.landing` asset OR @hourly) is unpaused without its catch-up
   run; the dag-processor then registers the `mlops_landing_watcher` (watchers exist only for
   unpaused DAGs, from the next parse on) and the triggerer runs `LandingFileTrigger`;
2. a one-day demo batch (`airflow-mlops generate-data --days 1`: one parquet file per dataset,
   written as a temp file and renamed) lands in `landing/<dataset>/`;
3. the trigger fires one event per file (payload names it), the scheduler starts an
   `asset_triggered` run, and the run validates, lands (files move to `_landed/`), applies and
   materializes — success;
4. a few polls later there are still exactly one event per file: landed files never fire again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from support.airflow_client import AirflowClient, holds_for, wait_for
from support.airflow_stack import AirflowStack, airflow_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FEATURES = "mlops_features"
ASSET = "mlops.landing"
WATCHER = "mlops_landing_watcher"
POLL_S = 2  # MLOPS_LANDING_POLL_INTERVAL for this stack
WATCHER_TIMEOUT_S = 90  # next DAG parse after unpausing ([dag_processor] min_file_process_interval) + slack
RUN_TIMEOUT_S = 150
DATASETS = ("driver_hourly_stats", "rides", "trips")


def _lap(started: float, last: list[float], step: str) -> None:
    now = time.monotonic()
    print(f"[e2e] {step}: {now - last[0]:.1f}s (total {now - started:.1f}s)", flush=True)
    last[0] = now


def _watchers(client: AirflowClient) -> list[dict[str, Any]]:
    assets = client.request("GET", "/assets", params={"name_pattern": ASSET})["assets"]
    return [w for a in assets if a["name"] == ASSET for w in a["watchers"]]


def _describe(client: AirflowClient, run: dict[str, Any]) -> str:
    tis = client.task_instances(FEATURES, run["dag_run_id"])
    return f"{run['dag_run_id']} ({run['run_type']}) {run['state']}: " + ", ".join(
        f"{ti['task_id']}={ti['state']}" for ti in tis)


def _landing_files(home: Path) -> set[str]:
    return {f"{d}/{p.name}" for d in DATASETS for p in (home / "landing" / d).glob("*.parquet")}


def _assert_run_landed_the_batch(client: AirflowClient, run: dict[str, Any], files: set[str]) -> None:
    assert run["state"] == "success", _describe(client, run)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(FEATURES, run["dag_run_id"])}
    expected = {"validate_raw_batches", "land_raw_batches", "feast_apply", "materialize"}
    assert {t: states.get(t) for t in expected} == dict.fromkeys(expected, "success"), _describe(client, run)
    consumed = client.request("GET", f"/dags/{FEATURES}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents")
    consumed_files = {e["extra"]["payload"]["file"] for e in consumed["asset_events"] if e["name"] == ASSET}
    assert consumed_files and consumed_files <= files, consumed


def _assert_one_event_per_file(client: AirflowClient, files: set[str], first_run: dict[str, Any]) -> None:
    events = client.asset_events(ASSET)
    payloads = [e["extra"]["payload"] for e in events]
    assert sorted(p["file"] for p in payloads) == sorted(files), payloads
    assert all(e["extra"]["from_trigger"] is True for e in events), events
    created = {r["run_id"] for e in events for r in e["created_dagruns"]}
    assert first_run["dag_run_id"] in created, events


def _stack_options() -> dict[str, Any]:
    # The watcher registers at the DAG's first parse after unpausing: re-parse every 5 s, not every 30 s,
    # so the test does not idle for Airflow's default interval.
    return {"extra_env": {"MLOPS_LANDING_POLL_INTERVAL": str(POLL_S),
                          "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5"}}


def _drop_batch(stack: AirflowStack) -> set[str]:
    stack.run(["generate-data", "--days", "1"], name="generate-data", exe="airflow-mlops")
    files = _landing_files(stack.home)
    assert len(files) == len(DATASETS), files
    return files


def test_a_new_raw_batch_starts_the_feature_pipeline(tmp_path: Path) -> None:
    started = time.monotonic()
    last = [started]
    home = tmp_path / "home"
    with airflow_stack(home, dag_ids=[FEATURES], **_stack_options()) as stack:
        _lap(started, last, "stack up (migrate + 4 components healthy + DAG parsed)")
        client = stack.client()
        assert _watchers(client) == [], "a paused DAG must have no watcher"
        placeholder = client.unpause_without_catchup(FEATURES)
        watchers = wait_for(lambda: _watchers(client), WATCHER_TIMEOUT_S, f"the {WATCHER} to be registered",
                            on_poll=stack.check_alive)
        assert [w["name"] for w in watchers] == [WATCHER]
        _lap(started, last, "unpaused; watcher registered")

        files = _drop_batch(stack)
        _lap(started, last, f"batch dropped: {sorted(files)}")
        run = client.wait_for_run_of_type(FEATURES, "asset_triggered", RUN_TIMEOUT_S, on_poll=stack.check_alive)
        _lap(started, last, f"asset_triggered run {run['state']} (took {run['duration']:.1f}s)")
        _assert_run_landed_the_batch(client, run, files)
        assert _landing_files(home) == set(), "the run must move landed files to _landed/"
        assert {f"{d}/{p.name}" for d in DATASETS for p in (home / "landing" / d / "_landed").iterdir()} == files

        _assert_one_event_per_file(client, files, run)
        # landed files are gone from landing: over three more watcher polls no further event may come
        holds_for(lambda: len(client.asset_events(ASSET)) == len(files), 3 * POLL_S,
                  f"one {ASSET} event per landed file", on_poll=stack.check_alive)
        runs = [r for r in client.dag_runs(FEATURES) if r["dag_run_id"] != placeholder]
        assert {r["run_type"] for r in runs} == {"asset_triggered"}, runs
        assert all(r["state"] in {"success", "queued", "running"} for r in runs), runs
        assert stack.network_attempts() == "", f"outbound network attempts:\n{stack.network_attempts()}"
        client.close()
        _lap(started, last, "assertions")
    _lap(started, last, "stack stopped")
