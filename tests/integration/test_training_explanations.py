"""The training job explains every version it trains: seeded permutation importance on the held-out rows, logged
to the run (SQLite MLflow) as `explanations/global_importance.json` + a tag + metrics, for each task type; the
same request twice gives the same numbers. The feature profile carries the medians serving explains against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.explanations import IMPORTANCE_ARTIFACT, MAX_ROWS, TAG_IMPORTANCE
from airflow_mlops.core.training import FEATURE_PROFILE_ARTIFACT, holdout
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.jobs.training import TrainingRequest, run_training_job
from support.task_models import features, target
from support.training_sets import demo_training_set, write_training_set

pytestmark = pytest.mark.integration

COLUMNS = ("signal", "weak", "noise")


@pytest.fixture
def home(mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    return mlops_home


def generated_set(task: str, home: Path) -> dict[str, Any]:
    """1,000 rows whose label depends on `signal` (strongly) and `weak`, never on `noise`."""
    x = features(1000, 3, COLUMNS)
    frame = x.assign(label=target(task, x, 3).to_numpy(), driver_id=np.arange(1000) % 17,
                     event_timestamp=pd.date_range("2026-10-01", periods=1000, freq="min", tz="UTC"))
    return write_training_set(frame, home / "training_sets" / task / "set.parquet")


def train(record: dict[str, Any], task: str, label: str = "label", estimator: str | None = None,
          metric: str | None = None) -> dict[str, Any]:
    request = TrainingRequest(model_name=f"explained_{task}", training_set=record, label=label, task=task,
                              estimator=estimator or {"regression": "sklearn.linear_model.Ridge"}.get(
                                  task, "sklearn.linear_model.LogisticRegression"),
                              params={} if task == "regression" else {"max_iter": 500},
                              exclude_columns=["driver_id"], primary_metric=metric)
    return run_training_job(request, MLflowHook())


def logged(run_id: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    client = MLflowHook().get_conn()
    run = client.get_run(run_id)
    assert run.data.tags[TAG_IMPORTANCE] == IMPORTANCE_ARTIFACT
    importance = json.loads(Path(client.download_artifacts(run_id, IMPORTANCE_ARTIFACT)).read_text())
    profile = json.loads(Path(client.download_artifacts(run_id, FEATURE_PROFILE_ARTIFACT)).read_text())
    return importance, profile, run


@pytest.mark.parametrize(("task", "metric", "scoring"), [("binary", None, "roc_auc"),
                                                          ("multiclass", "log_loss", "neg_log_loss"),
                                                          ("regression", None, "neg_root_mean_squared_error")])
def test_every_task_logs_the_importance_of_its_held_out_rows(home: Path, task: str, metric: str | None,
                                                             scoring: str) -> None:
    result = train(generated_set(task, home), task, metric=metric)
    importance, profile, run = logged(result["run_id"])
    assert importance["scoring"] == scoring and importance["method"] == "permutation"
    assert importance["rows"] == importance["held_out_rows"] == 200  # the time split's newest 20 %
    assert [f["feature"] for f in importance["features"]][0] == "signal"
    assert {f["feature"] for f in importance["features"]} == set(COLUMNS)
    assert run.data.metrics["importance.signal"] == importance["features"][0]["importance"] > 0
    assert run.data.metrics["explain_seconds"] > 0
    for column in COLUMNS:  # the baseline of /predict?explain=true
        entry = profile["columns"][column]
        assert entry["min"] <= entry["median"] <= entry["max"]


def test_the_same_request_gives_the_same_importance_and_the_spec_metric_is_its_scorer(
        home: Path, small_demo: Any) -> None:
    record = demo_training_set(small_demo, home / "training_sets" / "ride_completion")
    estimator = "sklearn.ensemble.HistGradientBoostingClassifier"
    first, second = (train(record, "binary", "completed", estimator, "average_precision") for _ in range(2))
    assert first["run_id"] != second["run_id"]
    (one, _, _), (two, _, _) = logged(first["run_id"]), logged(second["run_id"])
    assert one == two and one["seed"] == 7 and one["scoring"] == "average_precision"
    held_out = holdout(pd.read_parquet(record["path"]), label="completed", seed=7)
    assert one["held_out_rows"] == len(held_out) and one["rows"] == min(MAX_ROWS, len(held_out))


def test_the_spec_sets_rows_and_repeats_and_shap_without_shap_fails_before_any_run(home: Path) -> None:
    import importlib.util

    from airflow_mlops.exceptions import TrainingFailed

    record = generated_set("binary", home)
    base = {"model_name": "explained_binary", "training_set": record, "label": "label", "task": "binary",
            "estimator": "sklearn.linear_model.LogisticRegression", "exclude_columns": ["driver_id"]}
    result = run_training_job(TrainingRequest(**base, explanations={"method": "permutation", "max_rows": 120,
                                                                    "repeats": 2}), MLflowHook())
    importance, _, _ = logged(result["run_id"])
    assert (importance["rows"], importance["held_out_rows"], importance["repeats"]) == (120, 200, 2)

    assert importlib.util.find_spec("shap") is None, "shap is not a dependency of this project"
    client = MLflowHook().get_conn()
    runs_before = len(client.search_runs([result["experiment_id"]]))
    with pytest.raises(TrainingFailed, match=r"explanations.method is 'shap'.*`pip install shap`.*method: permutation"):
        run_training_job(TrainingRequest(**base, explanations={"method": "shap"}), MLflowHook())
    assert len(client.search_runs([result["experiment_id"]])) == runs_before, "no run is started for it"
