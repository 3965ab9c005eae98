"""The `RUNNER` program of tests/integration/test_training_dag.py.

Run in a child process through `DemoState.run` (support/demo_state.py) on the checked-out demo state.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import json
import sys
import time
from typing import Any

from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

from airflow_mlops import demo
from airflow_mlops.core import audit
from airflow_mlops.dags import build_dags
from airflow_mlops.hooks.mlflow import MLflowHook

MODEL = "ride_completion"
dags = build_dags()


def registry() -> dict[str, Any]:
    client = MLflowHook().get_conn()
    versions = client.search_model_versions(f"name = '{MODEL}'")
    aliases: dict[str, str | None] = {}
    for alias in ("champion", "challenger"):
        try:
            aliases[alias] = str(client.get_model_version_by_alias(MODEL, alias).version)
        except Exception:  # noqa: BLE001 - no such alias (yet): the test expects None
            aliases[alias] = None
    model = client.get_registered_model(MODEL)
    return {"versions": {str(v.version): dict(v.tags) for v in versions}, "aliases": aliases,
            "history": [e.__dict__ for e in audit.history(model.tags)],
            "descriptions": {str(v.version): v.description for v in versions},
            "updated": {str(v.version): v.last_updated_timestamp for v in versions},
            "model_tags": dict(model.tags)}


def described(run_id: str) -> dict[str, Any]:
    with create_session() as session:
        tasks = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                     .where(TaskInstance.run_id == run_id)).all())
        found = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetModel.name == f"mlops.model.{MODEL}.champion").order_by(AssetEvent.id))
        events = [e.extra for e in found]
    return {"tasks": {t: str(s) for t, s in tasks.items()}, "events": events}


def run(dag_id: str) -> dict[str, Any]:
    started = time.monotonic()
    dag_run = dags[dag_id].test()
    return {"state": str(dag_run.state), "run_id": dag_run.run_id, "seconds": round(time.monotonic() - started, 1),
            **described(dag_run.run_id)}


def run_tags(run_id: str) -> dict[str, str]:
    client = MLflowHook().get_conn()
    experiment = client.get_experiment_by_name(MODEL)
    assert experiment is not None, MODEL  # the training runs created it
    [run] = client.search_runs([experiment.experiment_id],
                               filter_string=f"tags.`airflow_mlops.airflow.run_id` = '{run_id}'")
    return dict(run.data.tags)


results: dict[str, Any] = {}
# the session's trained demo state: its first training run (run id in argv[1]) is done
results["first"] = {**described(sys.argv[1]), "registry": registry()}
for name in ("second", "third"):
    results[name] = {**run(f"{MODEL}__train"), "registry": registry()}
    results[name]["run_tags"] = run_tags(results[name]["run_id"])
demo.write_demo_batches(days=5, start="2026-10-15", label_noise=1.0)
results["features_noisy"] = run("mlops_features")
results["degraded"] = {**run(f"{MODEL}__train"), "registry": registry()}
print("RESULT " + json.dumps(results, default=str))
