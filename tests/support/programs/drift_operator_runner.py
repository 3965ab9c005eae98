"""The `RUNNER` program of tests/integration/test_drift_operator.py.

Run in a child process through `support.dag_runs.run_in_fresh_airflow` in a fresh AIRFLOW_HOME.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import json
import sys
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from airflow_mlops import config
from airflow_mlops.core import monitoring_history
from airflow_mlops.core.lineage import TAG_TRAINING_SET_PATH
from airflow_mlops.core.spec import Monitoring
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.operators.evidently import EvidentlyDriftCheckOperator
from airflow_mlops.serving.prediction_log import PredictionLog

sys.path.insert(0, sys.argv[1])
from drift_dags import ENDS, MODEL, MONITORING

FEATURES = ["trip_km", "surge", "conv_rate", "avg_rating"]
rng = np.random.default_rng(7)


def draw(n: int, shifted: bool = False) -> Any:
    return pd.DataFrame({"trip_km": rng.gamma(2.0, 6.0 if shifted else 3.0, n),
                         "surge": rng.normal(2.2 if shifted else 1.2, 0.2, n),
                         "conv_rate": rng.beta(4, 6, n), "avg_rating": rng.normal(4.6, 0.2, n)})


# ---- champion with a snapshot ------------------------------------------------------------------
home = config.paths()
snapshot = home.training_sets_dir / MODEL / "snapshot.parquet"
snapshot.parent.mkdir(parents=True)
train = draw(2000).assign(driver_id=rng.integers(1000, 1050, 2000), zone="centre",
                          event_timestamp=pd.Timestamp("2026-11-01", tz="UTC"), completed=rng.integers(0, 2, 2000))
train.to_parquet(snapshot, index=False)
hook = MLflowHook()
experiment = hook.experiment_id(MODEL)
with hook.activated() as client:
    with mlflow.start_run(experiment_id=experiment) as mlflow_run:
        fitted = LogisticRegression().fit(train[FEATURES], train["completed"])
        info = mlflow.sklearn.log_model(fitted, name="model", serialization_format="cloudpickle",
                                        pip_requirements=["scikit-learn"])
        mlflow.log_dict({"feature_columns": FEATURES}, "training/summary.json")
    client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, info.model_uri, mlflow_run.info.run_id,
                                          tags={TAG_TRAINING_SET_PATH: str(snapshot)}).version
    client.set_registered_model_alias(MODEL, "champion", version)
train_run = mlflow_run.info.run_id

# ---- the prediction log -----------------------------------------------------------------------
sizes = {"drifted": 1500, "quiet": 400, "empty": 0, "few": 20}
with PredictionLog(flush_rows=500) as log:
    for name, rows in sizes.items():
        frame = draw(rows, shifted=name == "drifted")
        if name == "drifted":
            frame = frame.drop(columns=["avg_rating"])  # the serving path stopped sending it
        start = ENDS[name] - timedelta(hours=6)
        for i, row in enumerate(frame.to_dict("records")):
            log.append({"request_id": f"{name}-{i}", "time": start + timedelta(seconds=10 * i), "model": MODEL,
                        "model_version": version, "route": "champion", "entity_key": {"driver_id": 1000 + i % 50},
                        "features": row, "prediction": 0.5, "protocol": "predict"})

monitoring = Monitoring.model_validate(MONITORING).model_dump(mode="json")


dags = DagBag(dag_folder=sys.argv[1]).dags


def xcom(run_id: str, key: str) -> Any:
    with create_session() as session:
        row = session.execute(select(XComModel.value).where(XComModel.run_id == run_id,
                                                            XComModel.key == key)).first()
    value = row[0] if row else None
    try:
        return json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return value


def run(name: str) -> dict[str, Any]:
    dag_run = dags[f"drift_{name}"].test()
    with create_session() as session:
        state = session.execute(select(TaskInstance.state).where(TaskInstance.run_id == dag_run.run_id)).scalar()
        found = session.execute(select(AssetModel.name, AssetEvent).join(AssetEvent, AssetEvent.asset_id ==
                                 AssetModel.id).where(AssetEvent.source_run_id == dag_run.run_id)).all()
        events = [{"asset": n, "extra": e.extra, "aliases": sorted(a.name for a in e.source_aliases)}
                  for n, e in found]
    return {"state": str(dag_run.state), "task": str(state), "run_id": dag_run.run_id, "events": events,
            "result": xcom(dag_run.run_id, "return_value"), "link": xcom(dag_run.run_id, "_link_DriftReportLink")}


results: dict[str, Any] = {name: run(name) for name in ENDS}
artifacts = [f.path for f in MLflowHook().get_conn().list_artifacts(train_run, "monitoring/drift")]
results["artifacts"] = [f.path for d in artifacts for f in MLflowHook().get_conn().list_artifacts(train_run, d)]

snapshot.rename(snapshot.with_name("moved.parquet"))
results["missing"] = run("drifted")
try:
    EvidentlyDriftCheckOperator(task_id="drift", model_name=MODEL, monitoring=monitoring,
                                window_end=ENDS["drifted"].isoformat()).execute(
        {"ti": SimpleNamespace(dag_id="adhoc", run_id="manual"), "run_id": "manual"})  # type: ignore[typeddict-item]
    results["missing_error"] = None
except Exception as exc:  # noqa: BLE001 - the test asserts on whatever the operator raised
    results["missing_error"] = f"{type(exc).__name__}: {exc}"
results["history"] = monitoring_history.history(MODEL, "drift")
results["train_run"] = train_run
print("RESULT " + json.dumps(results, default=str))
