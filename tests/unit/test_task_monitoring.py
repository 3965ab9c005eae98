"""Monitoring of multiclass and regression models: labels, the task's metric and its direction, prediction drift.

Predictions are written through the real PredictionLog with the fields the serving app logs per task
(`TaskOutput.log_fields`), read back with the monitoring reader, joined to real label files and judged;
prediction drift runs through Evidently on the output column. Models are real sklearn pipelines
trained on generated rows (support/task_models.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.drift import check_drift
from airflow_mlops.core.performance import LABEL, join_labels, judge, load_labels, threshold_for
from airflow_mlops.core.prediction_window import read_prediction_window
from airflow_mlops.core.predictions import TaskOutput
from airflow_mlops.core.spec import Drift
from airflow_mlops.core.task_metrics import task_metric
from airflow_mlops.exceptions import MonitoringInputError
from airflow_mlops.serving.prediction_log import PredictionLog
from support.task_models import features, fit, target

pytestmark = pytest.mark.unit

COLUMNS = ("a", "b", "c")
T0 = datetime(2026, 11, 20, 8, tzinfo=UTC)
END = T0 + timedelta(hours=24)
ROWS = 300


def served(tmp_path: Path, task: str) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """A model of `task`, its predictions of ROWS generated rows in the log, and those rows' features."""
    model = fit(task, rows=400, columns=COLUMNS)
    output = TaskOutput.of(model)
    x = features(ROWS, 11, COLUMNS)
    scores = output.score(model, x)
    with PredictionLog(tmp_path / "log", flush_rows=1000) as log:
        for i in range(ROWS):
            log.append({"request_id": f"r{i}", "time": T0 + timedelta(minutes=i), "model": "m", "model_version": "2",
                        "route": "primary", "entity_key": {"driver_id": 1000 + i % 7},
                        "features": dict(x.iloc[i]), **output.log_fields(scores[i]), "protocol": "predict"})
    window = read_prediction_window("m", T0, END, directory=tmp_path / "log").frame
    return model, x, window


def write_labels(tmp_path: Path, name: str, values: pd.Series) -> Path:
    folder = tmp_path / "labels" / name
    folder.mkdir(parents=True)
    pd.DataFrame({"request_id": [f"r{i}" for i in range(len(values))], "outcome": values}).to_parquet(
        folder / "batch.parquet", index=False)
    return folder


def verdict(tmp_path: Path, window: pd.DataFrame, name: str, task: str, metric: str, champion: float) -> Any:
    labels = load_labels(tmp_path / "labels" / name, label_column="outcome", join="request_id", entity_keys=[],
                         timestamp_column="event_timestamp", task=task)
    joined = join_labels(window, labels, join="request_id", entity_keys=[], timestamp_column="event_timestamp",
                         tolerance=timedelta(hours=1), start=T0, end=END)
    return judge(joined, metric=metric, champion_version="2", champion_value=champion, tolerance=0.05,
                 min_labels=100, task=task)


@pytest.mark.parametrize(("task", "metric", "direction"), [("regression", "rmse", "above"),
                                                         ("regression", "r2", "below"),
                                                         ("multiclass", "f1_macro", "below"),
                                                         ("multiclass", "log_loss", "above")])
def test_worse_labels_flip_the_verdict_in_the_metrics_direction(tmp_path: Path, task: str, metric: str,
                                                                direction: str) -> None:
    model, x, window = served(tmp_path, task)
    good, bad = target(task, x, 11), target(task, x, 11, flip=True)
    write_labels(tmp_path, "good", good)
    write_labels(tmp_path, "bad", bad)
    champion = task_metric(task, metric, good.tolist(), window)  # what evaluation would have measured
    ok = verdict(tmp_path, window, "good", task, metric, champion)
    worse = verdict(tmp_path, window, "bad", task, metric, champion)
    assert (ok.status, worse.status) == ("ok", "detected"), (ok.reason, worse.reason)
    assert ok.value == pytest.approx(champion) and ok.rows == worse.rows == ROWS
    assert worse.threshold == threshold_for(metric, champion, 0.05)
    assert (worse.threshold > champion) == (direction == "above")  # rmse/log_loss rising is the degradation
    assert f"is {direction} {worse.threshold:.4f}" in worse.reason
    assert worse.details["task"] == task and worse.details["higher_is_better"] == (direction == "below")


def test_task_metrics_equal_sklearn_on_the_joined_rows(tmp_path: Path) -> None:
    from sklearn import metrics as m

    model, x, window = served(tmp_path, "multiclass")
    labels = target("multiclass", x, 11).tolist()
    predicted = model.predict(x)
    assert task_metric("multiclass", "f1_macro", labels, window) == pytest.approx(
        m.f1_score(labels, predicted, average="macro"))
    assert task_metric("multiclass", "balanced_accuracy", labels, window) == pytest.approx(
        m.balanced_accuracy_score(labels, predicted))
    assert task_metric("multiclass", "log_loss", labels, window) == pytest.approx(
        m.log_loss(labels, model.predict_proba(x), labels=list(model.classes_)))
    unseen = task_metric("multiclass", "log_loss", ["gigantic", *labels[1:]], window)  # a class the model never saw
    assert unseen > task_metric("multiclass", "log_loss", labels, window)
    reg, xr, reg_window = served(tmp_path / "reg", "regression")
    y = target("regression", xr, 11)
    assert task_metric("regression", "rmse", y.tolist(), reg_window) == pytest.approx(
        m.root_mean_squared_error(y, reg.predict(xr)))
    assert task_metric("regression", "mape", y.tolist(), reg_window) == pytest.approx(
        m.mean_absolute_percentage_error(y, reg.predict(xr)))


def test_labels_are_checked_for_the_task(tmp_path: Path) -> None:
    folder = write_labels(tmp_path, "x", pd.Series(["big", "small", None]))
    read = load_labels(folder, label_column="outcome", join="request_id", entity_keys=[],
                       timestamp_column="event_timestamp", task="multiclass")
    assert read.frame[LABEL].tolist() == ["big", "small"] and read.missing_label == 1
    with pytest.raises(MonitoringInputError, match=r"must hold numbers \(regression model\); 2 row\(s\)"):
        load_labels(folder, label_column="outcome", join="request_id", entity_keys=[],
                    timestamp_column="event_timestamp", task="regression")
    numbers = write_labels(tmp_path, "y", pd.Series([3.5, 7.0, 12.25]))
    with pytest.raises(MonitoringInputError, match=r"must hold 0/1 labels \(binary model\)"):
        load_labels(numbers, label_column="outcome", join="request_id", entity_keys=[],
                    timestamp_column="event_timestamp")


def test_prediction_drift_of_the_class_distribution_is_its_own_verdict() -> None:
    """The multiclass class as a categorical column (regression's value is numeric, as a binary probability:
    both run on every operator test, tests/integration/test_task_monitoring_operators.py)."""
    drift = Drift(method="psi", threshold=0.2, drift_share=0.5)
    model = fit("multiclass", rows=400, columns=COLUMNS)
    output = TaskOutput.of(model)
    reference = features(1000, 21, COLUMNS)
    reference[output.drift_column] = output.drift_values(output.score(model, reference))
    same = features(600, 22, COLUMNS)
    same[output.drift_column] = output.drift_values(output.score(model, same))
    quiet = check_drift(reference, same, COLUMNS, drift, prediction=output.drift_column)
    assert quiet.prediction is not None and not quiet.prediction.drifted and not quiet.detected
    assert (quiet.prediction.column, quiet.prediction.column_type) == ("predicted_class", "categorical")
    assert np.isfinite(quiet.prediction.score or np.nan)
    # the same inputs, but the served model answers otherwise: only the predictions moved
    moved = same.copy()
    moved[output.drift_column] = output.drift_values(output.score(model, features(600, 22, COLUMNS, shift=1.5)))
    result = check_drift(reference, moved, COLUMNS, drift, prediction=output.drift_column)
    assert result.share == 0.0 and result.prediction is not None and result.prediction.drifted
    assert result.detected and result.to_dict()["prediction_drift"]["column"] == "predicted_class"
    assert "predicted_class" not in result.drifted_columns
    assert "predictions (predicted_class) DRIFTED" in result.summary()
