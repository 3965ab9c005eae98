"""A protected attribute the model never sees, grouped over by fairness: `features.entity_df.attributes` end to end.

The demo rides get a numeric `region` column that agrees with the label on 80 % of the rows, so an estimator given
it would use it. The spec names it as an attribute (evaluation only), a fairness group and a slice. Through the
training DAG the factory builds for that spec, on the real Feast repo and a real SQLite MLflow store: the
point-in-time training set carries `region` next to the label and lists it in its lineage; the logged model's
signature, feature columns and feature profile lack it; evaluate computes fairness and a slice over it on the
held-out rows; the model scores rows without it (batch and serving never need it); and `reproduce` rebuilds the same
snapshot, attribute included. Operators run through execute() with the context Airflow would give them.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import pytest
import yaml

from airflow_mlops import config
from airflow_mlops.core import lineage
from airflow_mlops.core.offline import land_landing_dir
from airflow_mlops.core.spec import ModelSpec, parse_spec
from airflow_mlops.hooks.feast import FeastHook
from airflow_mlops.hooks.mlflow import MLflowHook

if TYPE_CHECKING:
    from airflow_mlops.operators.evaluation import EvaluateModelOperator
    from airflow_mlops.operators.features import FeastBuildTrainingSetOperator
    from airflow_mlops.operators.training import SklearnTrainModelOperator

pytestmark = pytest.mark.integration

MODEL = "ride_fairness"
DEMO_SPEC = config.project_dir() / "include" / "models" / "ride_completion.yaml"


def spec_text() -> str:
    """The demo spec with `region` as an evaluation-only attribute, a fairness group and a slice."""
    data = yaml.safe_load(DEMO_SPEC.read_text(encoding="utf-8"))
    data["name"] = MODEL
    data["validation"] = {"suite": None}  # the demo's suite fixes the training set's column set without region
    data["features"]["entity_df"]["attributes"] = ["region"]
    data["training"]["params"] = {"max_iter": 20, "max_leaf_nodes": 8}
    data["evaluation"].update(
        thresholds={"roc_auc": {"min": 0.5}}, bootstrap_samples=100,
        slices=[{"column": "region"}, *data["evaluation"]["slices"]],
        fairness={"groups": ["region"], "metrics": ["demographic_parity_difference"], "max": 0.99,
                  "min_group_rows": 10})
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture
def spec(mlops_home: Path, small_demo: Any, migrated_db: Path, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> ModelSpec:
    """Rides with a `region` landed in the offline store, the Feast repo applied, an empty MLflow store."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    (mlops_home / "mlflow").mkdir()
    shutil.copy(migrated_db, mlops_home / "mlflow" / "mlflow.db")
    tables = dict(small_demo[1])
    rides = tables["rides"]
    agrees = np.random.default_rng(3).random(len(rides)) < 0.8
    tables["rides"] = rides.assign(region=np.where(agrees, rides["completed"], 1 - rides["completed"]).astype("int64"))
    for dataset, frame in tables.items():
        target = config.paths().landing_dir / dataset / "demo.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target, index=False)
    land_landing_dir(config.paths().landing_dir, config.paths().offline_dir)
    FeastHook().apply()
    models = tmp_path / "models"
    models.mkdir()
    (models / f"{MODEL}.yaml").write_text(spec_text(), encoding="utf-8")
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    return parse_spec(spec_text(), str(models / f"{MODEL}.yaml"))


def context(task_id: str) -> Any:
    dag_id, run_id = f"{MODEL}__train", "manual__2026-10-04T00:00:00+00:00"
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, try_number=1, run_id=run_id)
    dag_run = SimpleNamespace(dag_id=dag_id, run_id=run_id, run_type="manual", triggering_user_name="alice")
    return {"dag": SimpleNamespace(dag_id=dag_id), "ti": ti, "dag_run": dag_run, "run_id": run_id,
            "logical_date": None, "outlet_events": defaultdict(SimpleNamespace), "triggering_asset_events": {}}


def artifact(run_id: str, path: str) -> Any:
    import mlflow.artifacts

    with MLflowHook().activated():
        return json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{path}"))


def test_the_attribute_is_on_the_held_out_rows_for_fairness_and_never_a_model_input(spec: ModelSpec) -> None:
    from airflow_mlops.dags.factory import training_dag
    from airflow_mlops.jobs.reproduce import rebuild_training_set

    dag = training_dag(spec)
    build = cast("FeastBuildTrainingSetOperator", dag.get_task("build_training_set"))
    train = cast("SklearnTrainModelOperator", dag.get_task("train"))
    evaluate = cast("EvaluateModelOperator", dag.get_task("evaluate"))
    assert build.attributes == ["region"] and train.exclude_columns == ["driver_id", "region"]

    built = build.execute(context("build_training_set"))
    snapshot = pd.read_parquet(built["path"])
    assert built["attributes"] == ["region"] and "region" in built["columns"] and "region" not in built["missing"]
    assert snapshot.columns[:7].tolist() == ["driver_id", "event_timestamp", "completed", "trip_distance_km",
                                             "surge_multiplier", "pickup_hour", "region"]

    train.training_set = built  # what the XComArg resolves to in a DAG run
    trained = train.execute(context("train"))
    request = model_lacks_the_attribute(trained)

    evaluate.training_set, evaluate.challenger = built, trained
    result = evaluate.execute(context("evaluate"))
    assert result["passed_fairness"] is True, result["reasons"]
    fairness_and_slice_are_over_the_attribute(spec, snapshot, trained)
    evaluate.evaluation = {**evaluate.evaluation, "fairness": {**evaluate.evaluation["fairness"], "max": 0.05}}
    held = evaluate.execute(context("evaluate"))  # a tighter bound on the unseen attribute blocks promotion
    assert held["promote"] is False and held["passed_fairness"] is False
    assert any(r.startswith("fairness region: challenger demographic_parity_difference") for r in held["reasons"])

    with MLflowHook().activated():
        rebuilt = rebuild_training_set(request, spec, FeastHook())  # refuses a snapshot with another sha256
    assert rebuilt.columns.tolist() == snapshot.columns.tolist()


def model_lacks_the_attribute(trained: dict[str, Any]) -> Any:
    """The logged model's signature, fitted columns and feature profile lack `region`; the run lists it as an
    attribute of its training set. Returns the logged training request (what `reproduce` reads)."""
    import mlflow.models
    import mlflow.sklearn

    from airflow_mlops.core import training
    from airflow_mlops.jobs.training import REQUEST_ARTIFACT, TrainingRequest

    with MLflowHook().activated() as client:
        info = mlflow.models.get_model_info(trained["model_uri"])
        inputs = [column.name for column in info.signature.inputs.inputs]
        model = mlflow.sklearn.load_model(trained["model_uri"])
        tags = client.get_run(trained["run_id"]).data.tags
    assert "region" not in inputs and "conv_rate" in inputs and "pickup_hour" in inputs
    assert list(model.feature_names_in_) == inputs
    assert tags[lineage.TAG_TRAINING_SET_ATTRIBUTES] == '["region"]'
    profile = json.dumps(artifact(trained["run_id"], training.FEATURE_PROFILE_ARTIFACT))
    assert "region" not in profile and "conv_rate" in profile
    request = TrainingRequest.from_dict(artifact(trained["run_id"], REQUEST_ARTIFACT))
    assert request.training_set["attributes"] == ["region"] and "region" in request.exclude_columns
    return request


def fairness_and_slice_are_over_the_attribute(spec: ModelSpec, snapshot: pd.DataFrame, trained: dict[str, Any]
                                               ) -> None:
    """The report's parity over `region` is fairlearn's on the held-out rows, which the model scores without it."""
    from fairlearn.metrics import demographic_parity_difference

    from airflow_mlops.core import training
    from airflow_mlops.operators.evaluation import score

    report = artifact(trained["run_id"], "evaluation/report.json")
    parity = report["fairness"]["groups"][0]
    assert (parity["column"], parity["metric"]) == ("region", "demographic_parity_difference")
    held_out = training.holdout(snapshot, label="completed", split_config=spec.training.split.model_dump(),
                                seed=spec.training.seed, timestamp_column="event_timestamp")
    with MLflowHook().activated():  # batch scoring and serving send no attribute: the model scores without it
        predicted, _, _ = score(trained["model_uri"], held_out.drop(columns="region"))
    assert predicted is not None
    expected = demographic_parity_difference(held_out["completed"], (predicted >= 0.5).astype(int),
                                             sensitive_features=held_out["region"].astype("string"))
    assert parity["challenger"] == pytest.approx(expected) and parity["challenger"] > 0.05  # region tracks the label
    region_slice = next(s for s in report["slices"] if s["column"] == "region")
    assert sorted(g["group"] for g in region_slice["groups"]) == ["0", "1"] and "error" not in region_slice
    assert sum(g["rows"] for g in region_slice["groups"]) == len(held_out)
