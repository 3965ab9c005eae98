"""The `RUNNER` program of tests/integration/test_batch_dag.py.

Run in a child process through `DemoState.run` (support/demo_state.py) on the checked-out demo state.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import json
from pathlib import Path
from typing import Any

import mlflow.sklearn
import pandas as pd
from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.taskinstance import TaskInstance
from airflow.sdk.execution_time.context import OutletEventAccessors
from airflow.utils.session import create_session
from sqlalchemy import select

from airflow_mlops import config
from airflow_mlops.core.spec import load_specs
from airflow_mlops.core.training_set import build_training_set, load_entity_df
from airflow_mlops.dags import build_dags
from airflow_mlops.dags.assets import predictions_asset
from airflow_mlops.hooks.feast import FeastHook
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.operators.batch import BatchPredictOperator

MODEL = "ride_completion"
BATCH = f"{MODEL}__batch_predict"
dags = build_dags()
spec = next(s for s in load_specs() if s.name == MODEL)
feats = spec.features
keys, ts, request = list(feats.entity_keys), feats.entity_df.timestamp_column, list(feats.entity_df.request_features)


def run(dag_id: str) -> dict[str, Any]:
    dag_run = dags[dag_id].test()
    with create_session() as session:
        tasks = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                     .where(TaskInstance.run_id == dag_run.run_id)).all())
        found = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetModel.name == f"mlops.predictions.{MODEL}").order_by(AssetEvent.id))
        events = [e.extra for e in found]
    return {"state": str(dag_run.state), "run_id": dag_run.run_id, "tasks": {t: str(s) for t, s in tasks.items()},
            "events": events}


def folder(path: str) -> dict[str, Any]:
    manifest = json.loads((Path(path) / "_manifest.json").read_text())
    frame = pd.read_parquet(path)
    return {"rows": len(frame), "unique_keys": int((~frame.duplicated(keys + [ts])).sum()), "manifest": manifest,
            "columns": list(frame.columns), "versions": sorted(frame["model_version"].unique())}


def training_path_predictions(entity: Any) -> Any:
    # The same rows through the training-set builder and the champion: must equal the batch output.
    lineage = build_training_set(FeastHook().get_store(), feature_service=feats.feature_service, entity_df=entity,
                                 entity_keys=keys, timestamp_column=ts, label=feats.label, request_features=request,
                                 out_dir=config.paths().home / "check_sets")
    frame = pd.read_parquet(lineage["path"])
    with MLflowHook().activated():
        model = mlflow.sklearn.load_model(f"models:/{MODEL}@champion")
    columns = list(model.feature_names_in_)
    return frame.assign(expected=model.predict_proba(frame[columns].astype("float64"))[:, 1])[keys + [ts, "expected"]]


results: dict[str, Any] = {}  # the trained demo state (support/demo_state.py): 5 days of demo data, v1 champion
entity = load_entity_df(config.paths().dataset_dir(spec.batch.entity_dataset or feats.entity_df.dataset), ts,
                        spec.batch.lookback_days, keys + [ts, feats.label] + request)
results["entity_rows"] = len(entity)
for name in ("batch_1", "batch_2"):
    results[name] = run(BATCH)
    results[name]["folder"] = folder(results[name]["events"][-1]["path"]) if results[name]["events"] else None


def operator(**overrides: Any) -> BatchPredictOperator:
    args = dict(task_id="batch_predict", model_name=MODEL, feature_service=feats.feature_service,
                entity_dataset=feats.entity_df.dataset, entity_keys=keys, timestamp_column=ts,
                request_features=request, lookback_days=spec.batch.lookback_days, chunk_rows=spec.batch.chunk_rows,
                outlets=[predictions_asset(MODEL)])
    return BatchPredictOperator(**{**args, **overrides})


def outcome(op: BatchPredictOperator) -> str:
    try:
        op.execute({"run_id": "refused", "outlet_events": OutletEventAccessors()})
    except Exception as exc:  # noqa: BLE001 - the test asserts on whatever the operator raised
        return f"{type(exc).__name__}: {exc}"
    return "ran"


first = results["batch_1"]["events"][0]
again = operator().execute({"run_id": results["batch_1"]["run_id"], "outlet_events": OutletEventAccessors()})
results["unknown_version"] = outcome(operator(version="99"))
results["no_champion"] = outcome(operator(version="challenger_of_tomorrow"))
results["again"] = {"lineage": again, "folder": folder(again["path"])}
root = config.paths().home / "predictions_batch" / MODEL
results["run_folders"] = sorted(p.name for p in root.iterdir())

predicted = pd.read_parquet(first["path"])
joined = predicted.merge(training_path_predictions(entity), on=keys + [ts], how="outer", validate="1:1",
                         indicator=True)
results["vs_training_path"] = {"both": int((joined["_merge"] == "both").sum()), "rows": len(joined),
                               "max_abs_diff": float((joined["prediction"] - joined["expected"]).abs().max())}
print("RESULT " + json.dumps(results, default=str))
