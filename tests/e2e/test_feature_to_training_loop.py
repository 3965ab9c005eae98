"""The loop closes in a real Airflow: a feature run's asset event makes the scheduler start training.

A fresh MLOPS_HOME, `airflow db migrate`, then scheduler, dag-processor, triggerer and api-server as
separate processes (LocalExecutor, SQLite), driven only over the REST API like a user would:

1. demo data (4 days) lands in the landing dir (`airflow-mlops generate-data`);
2. `ride_completion__train` is unpaused (without its weekly catch-up run, see
   `AirflowClient.unpause_without_catchup`), `mlops_features` is triggered and unpaused;
3. the feature run succeeds and emits `mlops.features.driver_hourly_stats` with rows > 0;
4. the scheduler alone starts `ride_completion__train` from that event (run_type asset_triggered)
   and it succeeds: MLflow (SQLite in that MLOPS_HOME) has version 1 under alias `challenger`,
   trained by that very run.

Tasks run in worker processes that may not touch the metadata DB (Airflow 3 Task SDK); dag.test()
runs them in-process and cannot catch a task that does. Every Python process is network-audited.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from support.airflow_client import AirflowClient, parse_time
from support.airflow_stack import airflow_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

FEATURES = "mlops_features"
TRAINING = "ride_completion__train"
MODEL = "ride_completion"
ASSET = "mlops.features.driver_hourly_stats"
FEATURE_RUN_TIMEOUT_S = 150
TRAINING_RUN_TIMEOUT_S = 150


class Clock:
    """Wall time per step, printed as the test goes (pytest -s) and in the failure report."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()

    def lap(self, step: str) -> None:
        now = time.monotonic()
        print(f"[e2e] {step}: {now - self.last:.1f}s (total {now - self.started:.1f}s)", flush=True)
        self.last = now


def _describe(client: AirflowClient, dag_id: str, run: dict[str, Any]) -> str:
    tis = client.task_instances(dag_id, run["dag_run_id"])
    states = ", ".join(f"{ti['task_id']}={ti['state']} (try {ti['try_number']})" for ti in tis)
    return f"{dag_id} run {run['dag_run_id']} ({run['run_type']}) ended {run['state']}: {states}"


def _seconds_between(earlier: str, later: str) -> float:
    return (parse_time(later) - parse_time(earlier)).total_seconds()


def _assert_succeeded(client: AirflowClient, dag_id: str, run: dict[str, Any], tasks: set[str]) -> None:
    """The run succeeded and so did each of `tasks` (the DAG may have more tasks; none may have failed)."""
    assert run["state"] == "success", _describe(client, dag_id, run)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(dag_id, run["dag_run_id"])}
    assert all(states.get(task) == "success" for task in tasks), _describe(client, dag_id, run)
    assert set(states.values()) <= {"success", "skipped"}, _describe(client, dag_id, run)


def _assert_feature_event(client: AirflowClient, feature_run: dict[str, Any], training_run: dict[str, Any]) -> None:
    events = [e for e in client.asset_events(ASSET) if e["source_run_id"] == feature_run["dag_run_id"]]
    assert len(events) == 1, f"expected one {ASSET} event from {feature_run['dag_run_id']}, got {events}"
    event = events[0]
    assert (event["source_dag_id"], event["source_task_id"]) == (FEATURES, "materialize"), event
    assert event["extra"]["feature_view"] == "driver_hourly_stats", event
    assert event["extra"]["rows"] > 0, f"materialize emitted an event without new rows: {event['extra']}"
    created = {(r["dag_id"], r["run_id"]) for r in event["created_dagruns"]}
    assert (TRAINING, training_run["dag_run_id"]) in created, f"event {event['id']} did not create the run: {created}"


def _assert_registered_by(home: Path, training_run: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(version.version) == "1", f"alias challenger points at version {version.version}, expected 1"
    run_tags = client.get_run(version.run_id).data.tags
    assert run_tags.get("airflow_mlops.airflow.run_id") == training_run["dag_run_id"], run_tags
    assert run_tags.get("airflow_mlops.airflow.dag_id") == TRAINING, run_tags


def test_feature_asset_event_starts_training_in_a_real_airflow(tmp_path: Path) -> None:
    clock = Clock()
    home = tmp_path / "home"
    with airflow_stack(home, dag_ids=[FEATURES, TRAINING]) as stack:
        clock.lap("stack up (migrate + 4 components healthy + DAGs parsed)")
        stack.run(["generate-data", "--days", "4"], name="generate-data", exe="airflow-mlops")
        clock.lap("demo data generated (4 days)")
        client = stack.client()
        placeholder = client.unpause_without_catchup(TRAINING)
        feature_run = client.trigger_due_run(FEATURES)
        client.unpause(FEATURES)
        feature_run = client.wait_for_run(FEATURES, feature_run["dag_run_id"], FEATURE_RUN_TIMEOUT_S,
                                          on_poll=stack.check_alive)
        client.set_paused(FEATURES, True)  # no hourly run may add events while we look
        _assert_succeeded(client, FEATURES, feature_run, {"land_raw_batches", "feast_apply", "materialize"})
        clock.lap(f"{FEATURES} {feature_run['run_type']} run succeeded")

        training_run = client.wait_for_run_of_type(TRAINING, "asset_triggered", TRAINING_RUN_TIMEOUT_S,
                                                   on_poll=stack.check_alive)
        _assert_succeeded(client, TRAINING, training_run, {"build_training_set", "train", "register"})
        clock.lap(f"{TRAINING} asset_triggered run succeeded (started by the scheduler)")
        print(f"[e2e] feature run end -> training run queued: "
              f"{_seconds_between(feature_run['end_date'], training_run['queued_at']):.1f}s; "
              f"training run took {training_run['duration']:.1f}s", flush=True)
        _assert_registered_by(home, training_run)
        _assert_feature_event(client, feature_run, training_run)
        # No catch-up (weekly cron) or manual training run; only asset runs, ours the first.
        runs = [r for r in client.dag_runs(TRAINING) if r["dag_run_id"] != placeholder]
        assert {r["run_type"] for r in runs} == {"asset_triggered"}, runs
        assert runs[0]["dag_run_id"] == training_run["dag_run_id"], runs
        assert stack.network_attempts() == "", f"outbound network attempts:\n{stack.network_attempts()}"
        client.close()
        clock.lap("assertions (MLflow, asset event, runs, network audit)")
    clock.lap("stack stopped")
