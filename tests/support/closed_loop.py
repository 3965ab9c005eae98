"""The MLOps level-2 loop in a real Airflow, driven only over the REST API (shared by e2e and stack tests).

1. demo data (4 days) lands; `mlops_features` runs; `<model>__train` (run by hand) makes v1 champion;
2. `airflow-mlops serve` answers /predict with v1;
3. drift is injected with the generator: a shifted batch (covariate + concept shift) lands and is
   materialized, and shifted ride requests go through /predict, so the prediction log drifts;
4. `<model>__monitor` (run by hand) emits `mlops.drift.<model>`;
5. the scheduler alone starts `<model>__train` from that event; v2 is evaluated, registered with
   "retrained because: drift ..." lineage, and promoted;
6. the serving app, following the champion alias, answers with v2.

The model spec is the shipped one with three test settings: feature events do not retrain (so the
retrain can only come from drift), the serving app re-reads the alias every second, and the cooldown
is short. The wall time from "drift injected" to "v2 served" is printed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from support.airflow_client import AirflowClient, wait_for
from support.airflow_stack import PROJECT, AirflowStack, airflow_stack
from support.serving_process import serving_process

MODEL = "ride_completion"
FEATURES = "mlops_features"
TRAINING = f"{MODEL}__train"
MONITOR = f"{MODEL}__monitor"
BATCH = f"{MODEL}__batch_predict"
DRIFT_ASSET = f"mlops.drift.{MODEL}"
PREDICTIONS_ASSET = f"mlops.predictions.{MODEL}"
RUN_TIMEOUT_S = 300
SHIFT = {"covariate_shift": 0.8, "concept_shift": 0.8}


class Clock:
    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.marks: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.marks[step] = now
        print(f"[loop] {step}: {now - self.last:.1f}s (total {now - self.started:.1f}s)", flush=True)
        self.last = now


def write_spec(models_dir: Path, **training: Any) -> Path:
    spec = yaml.safe_load((PROJECT / "include" / "models" / f"{MODEL}.yaml").read_text())
    spec["training"].update({"retrain_on_features": False, "schedule": None, **training})
    spec["serving"] = {**spec.get("serving", {}), "poll_seconds": 1.0}
    spec["batch"] = {**spec.get("batch", {}), "schedule": None}  # batch scoring runs on a new champion only
    spec["monitoring"] = {**spec.get("monitoring", {}), "schedule": None, "window": "6h", "cooldown": "20s",
                          "retrain_on": ["drift"]}
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{MODEL}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def ride_requests(start: str, rows: int, seed: int, **shift: float) -> list[dict[str, Any]]:
    """/predict rows (entity key + request-time features) drawn from the demo generator."""
    from datetime import datetime

    from airflow_mlops.core.demo_data import DemoConfig, rides

    cfg = DemoConfig(start=datetime.fromisoformat(f"{start}T00:00:00+00:00"), days=1, seed=seed, **shift)
    frame = rides(cfg).head(rows)
    columns = ["driver_id", "trip_distance_km", "surge_multiplier", "pickup_hour"]
    return [{k: (int(v) if k in ("driver_id", "pickup_hour") else float(v)) for k, v in row.items()}
            for row in frame[columns].to_dict("records")]


def run_features(stack: AirflowStack, client: AirflowClient, first: bool) -> dict[str, Any]:
    """Run the feature DAG on what is in the landing dir; the run that landed and materialized it.

    First: the hourly run due now, so unpausing adds no catch-up run. Later: a plain manual run (the due
    slot is taken; a run without logical date never clashes). Once the landing AssetWatcher is registered,
    a file dropped while the DAG is paused also queues an asset-triggered run, which starts first on
    unpause (max_active_runs=1) and lands the file; the manual run then finds nothing. Either run may
    land it: every new run must succeed and one of them must have materialized. "New" is every run not
    finished before the trigger: an asset-triggered run queued while the DAG was paused (it exists before
    the trigger, so it is not "created after") is the one that lands the file when it starts first.
    """
    known = {r["dag_run_id"] for r in client.dag_runs(FEATURES) if r["state"] in ("success", "failed")}
    run = client.trigger_due_run(FEATURES) if first else client.trigger(FEATURES)
    client.unpause(FEATURES)
    client.wait_for_run(FEATURES, run["dag_run_id"], RUN_TIMEOUT_S, on_poll=stack.check_alive)
    runs = wait_for(lambda: _all_finished([r for r in client.dag_runs(FEATURES) if r["dag_run_id"] not in known]),
                    RUN_TIMEOUT_S, f"every new {FEATURES} run to finish", on_poll=stack.check_alive)
    client.set_paused(FEATURES, True)
    for each in runs:
        assert each["state"] == "success", describe(client, FEATURES, each)
    landed = [r for r in runs if _task_states(client, r).get("materialize") == "success"]
    assert landed, "no run materialized the batch: " + "; ".join(describe(client, FEATURES, r) for r in runs)
    assert_succeeded(client, FEATURES, landed[0], {"land_raw_batches", "materialize"})
    return landed[0]


def _all_finished(runs: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None


def _task_states(client: AirflowClient, run: Mapping[str, Any]) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in client.task_instances(FEATURES, run["dag_run_id"])}


def describe(client: AirflowClient, dag_id: str, run: Mapping[str, Any]) -> str:
    tis = client.task_instances(dag_id, run["dag_run_id"])
    states = ", ".join(f"{ti['task_id']}={ti['state']}" for ti in tis)
    return f"{dag_id} run {run['dag_run_id']} ({run['run_type']}) ended {run['state']}: {states}"


def assert_succeeded(client: AirflowClient, dag_id: str, run: Mapping[str, Any], tasks: set[str]) -> None:
    assert run["state"] == "success", describe(client, dag_id, run)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(dag_id, run["dag_run_id"])}
    assert all(states.get(task) == "success" for task in tasks), describe(client, dag_id, run)


def champion(env: Mapping[str, str]) -> Any:
    from unittest import mock

    from mlflow import MlflowClient

    from airflow_mlops.config import default_tracking_uri

    with mock.patch.dict("os.environ", dict(env)):
        return MlflowClient(tracking_uri=default_tracking_uri()).get_model_version_by_alias(MODEL, "champion")


def predict_versions(server: Any, rows: list[dict[str, Any]], batch: int = 100) -> set[str]:
    versions: set[str] = set()
    for i in range(0, len(rows), batch):
        versions |= {p["model_version"] for p in server.predict(rows[i:i + batch])}
    return versions


DAG_IDS = (FEATURES, TRAINING, MONITOR, BATCH)


def loop_env(home: Path, extra_env: Mapping[str, str] | None = None, **spec_training: Any) -> dict[str, str]:
    """The loop's spec under `home`/models (`spec_training` updates its training block) and the stack env for it."""
    models_dir = write_spec(home / "models", **spec_training).parent
    return {"MLOPS_MODELS_DIR": str(models_dir), **(extra_env or {})}


def run_closed_loop(home: Path, extra_env: Mapping[str, str] | None = None) -> float:
    """The whole loop on a stack of its own; returns the seconds from drift injection to v2 served."""
    clock = Clock()
    with airflow_stack(home, dag_ids=DAG_IDS, extra_env=loop_env(home, extra_env)) as stack:
        clock.lap("stack up")
        return run_closed_loop_on(stack, home, clock)


def run_closed_loop_on(stack: AirflowStack, home: Path, clock: Clock | None = None) -> float:
    """The loop on a running `stack` made with `loop_env(home)` and DAG_IDS parsed; seconds drift -> v2 served."""
    clock = clock or Clock()
    client = stack.client()
    stack.run(["generate-data", "--days", "4", "--start", "2026-10-01"], name="generate-v1", exe="airflow-mlops")
    run_features(stack, client, first=True)
    client.unpause_without_catchup(TRAINING)
    first = client.trigger(TRAINING)
    first = client.wait_for_run(TRAINING, first["dag_run_id"], RUN_TIMEOUT_S, on_poll=stack.check_alive)
    assert_succeeded(client, TRAINING, first, {"train", "register", "promote"})
    assert str(champion(stack.env).version) == "1"
    clock.lap("v1 trained and champion")
    client.unpause_without_catchup(BATCH)  # unpaused after v1: only the next champion's event starts it

    with serving_process(MODEL, stack.env, home / "serving.log") as server:
        assert predict_versions(server, ride_requests("2026-10-02", 50, seed=11)) == {"1"}
        clock.lap("serving answers with v1")
        drift_started = time.monotonic()
        stack.run(["generate-data", "--days", "2", "--start", "2026-10-05", "--seed", "8",
                   "--covariate-shift", str(SHIFT["covariate_shift"]),
                   "--concept-shift", str(SHIFT["concept_shift"])], name="generate-drift", exe="airflow-mlops")
        run_features(stack, client, first=False)
        assert predict_versions(server, ride_requests("2026-10-06", 600, seed=12, **SHIFT)) == {"1"}
        # the monitor reads the stored log: wait until every served row is in it
        wait_for(lambda: server.logged_records() >= 650, 60, "the prediction log to store all 650 requests")
        clock.lap("drift injected: shifted batch materialized, 600 shifted requests served by v1 and logged")

        client.unpause_without_catchup(MONITOR)
        monitor = client.trigger(MONITOR)
        monitor = client.wait_for_run(MONITOR, monitor["dag_run_id"], RUN_TIMEOUT_S, on_poll=stack.check_alive)
        assert_drift_event(client, monitor)
        clock.lap("monitoring run emitted the drift event")

        retrain = client.wait_for_run_of_type(TRAINING, "asset_triggered", RUN_TIMEOUT_S,
                                              on_poll=stack.check_alive)
        assert_succeeded(client, TRAINING, retrain, {"retrain_gate", "train", "register", "promote"})
        version = champion(stack.env)
        assert str(version.version) == "2", f"champion is v{version.version} after the drift retrain"
        reason = version.tags.get("airflow_mlops.retrain.reason", "")
        assert "drift" in reason, f"v2 lineage does not say why it was retrained: {version.tags}"
        clock.lap(f"scheduler retrained from the drift event; v2 champion ({reason})")

        wait_for(lambda: server.served_version() == "2", 60, "serving to pick up v2")
        assert predict_versions(server, ride_requests("2026-10-06", 20, seed=13, **SHIFT)) == {"2"}
        loop_s = time.monotonic() - drift_started
        clock.lap(f"serving answers with v2 — drift injected -> v2 served in {loop_s:.1f}s")
        assert_batch_scored_with(client, "2", stack)
        clock.lap("the v2 champion event started batch inference, which scored with v2")
    assert stack.network_attempts() == "", f"outbound network attempts:\n{stack.network_attempts()}"
    client.close()
    return loop_s


def assert_drift_event(client: AirflowClient, monitor: Mapping[str, Any]) -> None:
    assert monitor["state"] == "success", describe(client, MONITOR, monitor)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(MONITOR, monitor["dag_run_id"])}
    assert states.get("check_drift") == "success", describe(client, MONITOR, monitor)
    events = [e for e in client.asset_events(DRIFT_ASSET) if e["source_run_id"] == monitor["dag_run_id"]]
    assert len(events) == 1, f"expected one {DRIFT_ASSET} event from {monitor['dag_run_id']}, got {events}"
    extra = events[0]["extra"]
    assert extra["share"] >= extra["threshold"] and extra["drifted_columns"], extra
    assert extra["report_uri"], extra


def assert_batch_scored_with(client: AirflowClient, version: str, stack: AirflowStack) -> None:
    """The champion asset event alone started `<model>__batch_predict`, which scored with `version`."""
    run = client.wait_for_run_of_type(BATCH, "asset_triggered", RUN_TIMEOUT_S, on_poll=stack.check_alive)
    assert run["state"] == "success", describe(client, BATCH, run)
    assert [r["run_type"] for r in client.dag_runs(BATCH)] == ["asset_triggered"], "one run, from the event"
    events = [e for e in client.asset_events(PREDICTIONS_ASSET) if e["source_run_id"] == run["dag_run_id"]]
    assert len(events) == 1, f"expected one {PREDICTIONS_ASSET} event from {run['dag_run_id']}, got {events}"
    extra = events[0]["extra"]
    assert str(extra["version"]) == version and extra["rows"] > 0, extra
