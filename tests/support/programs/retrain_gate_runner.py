"""The `RUNNER` program of tests/integration/test_retrain_gate.py.

Run in a child process through `support.dag_runs.run_in_fresh_airflow` in a fresh AIRFLOW_HOME.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import json
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import airflow.models.dagrun as dagrun_module
import mlflow
from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from airflow.utils.types import DagRunTriggeredByType, DagRunType
from sqlalchemy import select

from airflow_mlops.core.lineage import TAG_RETRAIN_LAST_STARTED
from airflow_mlops.hooks.mlflow import MLflowHook

hook = MLflowHook()
client = hook.get_conn()
dags = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags
PENDING: list[tuple[str, dict[str, Any]]] = []  # (asset name, extra) of the next run's triggering events
original = dagrun_module.get_or_create_dagrun


def as_asset_triggered(**kwargs: Any) -> Any:
    # What the scheduler's _create_dag_runs_asset_triggered makes: an asset_triggered run that
    # consumed real AssetEvent rows. dag.test() itself only makes manual runs.
    run = original(**kwargs)
    if PENDING:
        session = kwargs["session"]
        for name, extra in PENDING:
            asset = session.scalars(select(AssetModel).where(AssetModel.name == name)).one()
            event = AssetEvent(asset_id=asset.id, extra=extra, timestamp=datetime.now(UTC))
            session.add(event)
            run.consumed_asset_events.append(event)
        run.run_type = DagRunType.ASSET_TRIGGERED
        run.triggered_by = DagRunTriggeredByType.ASSET
        session.commit()
        PENDING.clear()
    return run


dagrun_module.get_or_create_dagrun = as_asset_triggered


def logged_run() -> dict[str, str]:
    experiment = hook.experiment_id("gate_model")
    with hook.activated(), mlflow.start_run(experiment_id=experiment) as run:
        folder = tempfile.mkdtemp()
        open(os.path.join(folder, "MLmodel"), "w").write("flavors: {}\n")
        mlflow.log_artifacts(folder, "model")
    return {"run_id": run.info.run_id, "model_uri": f"runs:/{run.info.run_id}/model"}


def run(dag_id: str, events: Iterable[tuple[str, dict[str, Any]]] = (),
        conf: dict[str, Any] | None = None) -> dict[str, Any]:
    PENDING.extend(events)
    dag_run = dags[dag_id].test(run_conf=conf)
    with create_session() as session:
        tasks = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                     .where(TaskInstance.run_id == dag_run.run_id)).all())
    return {"state": str(dag_run.state), "run_id": dag_run.run_id, "tasks": {t: str(s) for t, s in tasks.items()}}


def registry(name: str) -> dict[str, Any]:
    versions = client.search_model_versions(f"name = '{name}'")
    return {"versions": {str(v.version): dict(v.tags) for v in versions},
            "last_started": json.loads(client.get_registered_model(name).tags.get(TAG_RETRAIN_LAST_STARTED, "null"))}


def set_last_start(name: str, hours_ago: float) -> None:
    at = (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat(timespec="seconds")
    value = {"at": at, "dag_id": "elsewhere", "run_id": "earlier", "trigger": "manual"}
    client.set_registered_model_tag(name, TAG_RETRAIN_LAST_STARTED, json.dumps(value))


DRIFT: tuple[str, dict[str, Any]] = (
    "mlops.drift.gate_model", {"share": 0.45, "threshold": 0.3, "rows": 812, "model_version": "1",
                               "drifted_columns": {"trip_distance_km": {"method": "psi", "score": 0.41},
                                                   "surge_multiplier": {"method": "psi", "score": 0.33}}})
results: dict[str, Any] = {}
results["manual"] = {**run("gate_test", conf=logged_run()), "registry": registry("gate_model")}
results["drift_within"] = {**run("gate_test", [DRIFT], conf=logged_run()), "registry": registry("gate_model")}
client.create_registered_model("ride_completion")
set_last_start("ride_completion", 1)
results["training_within"] = run("ride_completion__train", [
    ("mlops.drift.ride_completion", {"share": 0.5, "threshold": 0.3, "drifted_columns": {"pickup_hour": {}}}),
    ("mlops.performance.ride_completion", {"metric": "roc_auc", "value": 0.61, "threshold": 0.7})])
set_last_start("gate_model", 7)
results["drift_after"] = {**run("gate_test", [DRIFT], conf=logged_run()), "registry": registry("gate_model")}
results["features_within"] = {**run("gate_test", [("mlops.features.gate_view", {"rows": 10})], conf=logged_run()),
                              "registry": registry("gate_model")}
print("RESULT " + json.dumps(results, default=str))
