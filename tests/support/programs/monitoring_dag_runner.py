"""The `RUNNER` program of tests/integration/test_monitoring_dag.py.

Run in a child process through `support.dag_runs.run_in_fresh_airflow` in a fresh AIRFLOW_HOME.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import json
import shutil
from datetime import UTC, datetime, timedelta
from typing import Any

import mlflow.sklearn
import pandas as pd
from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select

from airflow_mlops import config, demo
from airflow_mlops.core import monitoring_history
from airflow_mlops.core.demo_data import DemoConfig, generate
from airflow_mlops.core.demo_labels import write_demo_labels
from airflow_mlops.dags import build_dags
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.serving.prediction_log import PredictionLog

MODEL = "ride_completion"
FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "rating"]
REQUEST = ["trip_distance_km", "surge_multiplier", "pickup_hour"]
dags = build_dags()
now = datetime.now(UTC)
today = now.replace(hour=0, minute=0, second=0, microsecond=0)


def run(dag_id: str) -> dict[str, Any]:
    dag_run = dags[dag_id].test()
    with create_session() as session:
        tasks = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                     .where(TaskInstance.run_id == dag_run.run_id)).all())
        events = [e.extra for e in session.scalars(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == f"mlops.drift.{MODEL}", AssetEvent.source_run_id == dag_run.run_id))]
        summary = session.scalar(select(XComModel.value).where(
            XComModel.run_id == dag_run.run_id, XComModel.task_id == "summary", XComModel.key == "return_value"))
    records = [r for r in monitoring_history.history(MODEL) if r["run_id"] == dag_run.run_id]
    return {"state": str(dag_run.state), "run_id": dag_run.run_id, "tasks": {t: str(s) for t, s in tasks.items()},
            "drift_events": events, "summary": json.loads(summary) if isinstance(summary, str) else summary,
            "records": [{k: r[k] for k in ("kind", "status", "value", "threshold", "rows")} for r in records]}


def served_last_day() -> Any:
    # requests of the last 24 h, with the features an online store serves (each driver's newest stats row)
    data = generate(DemoConfig(start=now - timedelta(hours=24), days=1, seed=21))
    stats = data["driver_hourly_stats"]
    landing = config.paths().landing_dir / "driver_hourly_stats"
    landing.mkdir(parents=True, exist_ok=True)
    stats.to_parquet(landing / "serving-day.parquet", index=False)  # the feature DAG lands + materializes it
    rides = data["rides"].sort_values("event_timestamp")
    rides = rides[rides["event_timestamp"] < now]
    stats = stats[["driver_id", "event_timestamp", *FEATURES]].sort_values("event_timestamp")
    return pd.merge_asof(rides, stats, on="event_timestamp", by="driver_id", direction="backward").dropna(
        subset=FEATURES).reset_index(drop=True)


def log_predictions(served: Any, tag: str) -> int:
    # the champion scores each request; the serving app's PredictionLog writes it (the old log is replaced)
    with MLflowHook().activated():
        model = mlflow.sklearn.load_model(f"models:/{MODEL}@champion")
    columns = list(model.feature_names_in_)
    scores = model.predict_proba(served[columns])[:, 1]
    shutil.rmtree(config.paths().predictions_dir, ignore_errors=True)
    with PredictionLog(config.paths().predictions_dir, flush_rows=1000) as log:
        for i, row in enumerate(served.to_dict("records")):
            log.append({"request_id": f"{tag}-{i}", "time": row["event_timestamp"].to_pydatetime(), "model": MODEL,
                        "model_version": "1", "route": "champion", "entity_key": {"driver_id": int(row["driver_id"])},
                        "features": {name: float(row[name]) for name in [*FEATURES, *REQUEST]},
                        "prediction": float(scores[i]), "protocol": "predict"})
    return len(served)


results: dict[str, Any] = {}
demo.write_demo_batches(days=14, start=(today - timedelta(days=15)).date().isoformat())
results["features"] = run("mlops_features")["state"]
training = run(f"{MODEL}__train")
results["training"] = {"state": training["state"], "tasks": training["tasks"]}
served = served_last_day()
results["serving_features"] = run("mlops_features")["state"]
results["quiet_rows"] = log_predictions(served, "quiet")
# delayed labels for every logged request, drawn by the demo's own rule (the world did not change)
results["labels"] = write_demo_labels(MODEL, now - timedelta(days=2), now)["rows"]
results["quiet"] = run(f"{MODEL}__monitor")
# the same drivers and stats (no skew), but night requests for much longer trips at high surge
drifted = served.assign(trip_distance_km=served["trip_distance_km"] * 3 + 5,
                        surge_multiplier=served["surge_multiplier"] + 1.5, pickup_hour=3)
results["drifted_rows"] = log_predictions(drifted, "drifted")
results["drifted"] = run(f"{MODEL}__monitor")
print("RESULT " + json.dumps(results, default=str))
