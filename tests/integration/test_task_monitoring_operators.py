"""The monitoring and batch operators on a multiclass and a regression champion (real SQLite MLflow registry).

Each model is trained on generated rows and registered the way the training DAG registers a version
(support/task_models.py), with its training snapshot (the drift reference) and its evaluation metric.
Predictions are written through the real PredictionLog with the fields the serving app logs for the task,
in two windows: `quiet` (rows drawn like the training rows) and `moved` (the served rows moved, so the
predictions move). The drift operator must see prediction drift only in `moved`; the performance operator
must flip from ok to detected when the labels are made worse, in the metric's direction (f1_macro falling,
rmse rising). The operators run in this process (`execute()`), as Airflow's task runner calls them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from support.task_models import features, fit, register, target

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NAMES = {"multiclass": "mon_length", "regression": "mon_fare"}
PRIMARY = {"multiclass": "f1_macro", "regression": "rmse"}
ENDS = {"quiet": datetime(2026, 11, 20, 6, tzinfo=UTC), "moved": datetime(2026, 11, 20, 12, tzinfo=UTC)}
ROWS = 400
MONITORING = {"window": "6h", "min_rows": 100, "drift": {"method": "psi", "threshold": 0.2, "drift_share": 0.5},
              "performance": {"tolerance": 0.05, "min_labels": 100}}


class Events:
    """`context["outlet_events"]`: what an operator adds through its alias outlet."""

    def __init__(self) -> None:
        self.added: list[tuple[str, dict[str, Any]]] = []

    def __getitem__(self, outlet: Any) -> Any:
        return SimpleNamespace(add=lambda asset, extra: self.added.append((asset.name, extra)))


def context(run_id: str, events: Events) -> dict[str, Any]:
    return {"ti": SimpleNamespace(dag_id="tasks_monitor", run_id=run_id), "run_id": run_id, "outlet_events": events}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("task-monitoring") / "home"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
            mp.delenv(name, raising=False)
        mp.setenv("MLOPS_HOME", str(home))
        yield {task: _champion(task, home) for task in NAMES}


def _champion(task: str, home: Path) -> dict[str, Any]:
    """Train, snapshot, register as champion with eval.<primary>; log both windows; write good and bad labels."""
    from sklearn import metrics as m

    from airflow_mlops.core.lineage import TAG_TRAINING_SET_PATH
    from airflow_mlops.core.predictions import TaskOutput
    from airflow_mlops.serving.prediction_log import PredictionLog

    name = NAMES[task]
    model = fit(task, rows=600, seed=5)
    snapshot = home / "training_sets" / name / "snapshot.parquet"
    snapshot.parent.mkdir(parents=True)
    train = features(1000, 31)
    train.assign(label=target(task, train, 31)).to_parquet(snapshot, index=False)
    holdout = features(500, 41)
    truth, answered = target(task, holdout, 41), model.predict(holdout)
    value = (m.f1_score(truth, answered, average="macro") if task == "multiclass"
             else m.root_mean_squared_error(truth, answered))
    version = register(model, name, task, tags={TAG_TRAINING_SET_PATH: str(snapshot)},
                       metrics={f"eval.{PRIMARY[task]}": value})
    output = TaskOutput.of(model)
    served = {"quiet": features(ROWS, 51), "moved": features(ROWS, 52, shift=1.5)}
    with PredictionLog(home / "predictions", flush_rows=1000) as log:
        for window, rows in served.items():
            scores = output.score(model, rows)
            start = ENDS[window] - timedelta(hours=6)
            for i in range(ROWS):
                log.append({"request_id": f"{window}-{i}", "time": start + timedelta(seconds=30 * i), "model": name,
                            "model_version": version, "route": "primary", "entity_key": {"driver_id": 1000 + i % 9},
                            "features": dict(rows.iloc[i]), **output.log_fields(scores[i]), "protocol": "predict"})
    for kind, flip in (("good", False), ("bad", True)):
        folder = home / "labels" / name / kind
        folder.mkdir(parents=True)
        quiet = served["quiet"]
        pd.DataFrame({"request_id": [f"quiet-{i}" for i in range(ROWS)],
                      "outcome": target(task, quiet, 51, flip=flip)}).to_parquet(folder / "labels.parquet")
    return {"model": model, "version": version, "champion_value": value, "labels": home / "labels" / name}


# ---------------------------------------------------------------------------- prediction drift
@pytest.mark.parametrize("task", list(NAMES))
def test_prediction_drift_is_seen_when_the_predictions_move(world: dict[str, Any], task: str) -> None:
    from airflow_mlops.dags.assets import drift_alias
    from airflow_mlops.operators.evidently import EvidentlyDriftCheckOperator

    got = {}
    for window, end in ENDS.items():
        events = Events()
        operator = EvidentlyDriftCheckOperator(task_id="drift", model_name=NAMES[task], monitoring=MONITORING,
                                               window_end=end.isoformat(), outlets=[drift_alias(NAMES[task])])
        got[window] = (operator.execute(context(f"{task}-{window}", events)), events.added)  # type: ignore[arg-type]
    column = "predicted_class" if task == "multiclass" else "prediction"
    quiet, quiet_events = got["quiet"]
    assert quiet["status"] == "ok" and not quiet_events, quiet
    assert quiet["prediction_drift"]["column"] == column and not quiet["prediction_drift"]["drifted"]
    assert quiet["prediction_drift"]["column_type"] == ("categorical" if task == "multiclass" else "numerical")
    moved, moved_events = got["moved"]
    assert moved["status"] == "detected" and moved["share"] < 0.5, moved  # the inputs alone would not say it
    assert moved["prediction_drift"]["drifted"] and moved["prediction_drift"]["score"] >= 0.2
    assert [name for name, _ in moved_events] == [f"mlops.drift.{NAMES[task]}"]
    assert moved_events[0][1]["prediction_drift"]["column"] == column
    assert "predictions (" in Path(moved["report"]["html"]).read_text()


# ---------------------------------------------------------------------------- delayed-label performance
@pytest.mark.parametrize("task", list(NAMES))
def test_worse_labels_degrade_the_tasks_metric_in_its_direction(world: dict[str, Any], task: str) -> None:
    from airflow_mlops.dags.assets import performance_alias
    from airflow_mlops.operators.monitoring import DelayedLabelPerformanceOperator

    champion = world[task]
    got = {}
    for kind in ("good", "bad"):
        events = Events()
        monitoring = {**MONITORING, "performance": {**MONITORING["performance"],
                                                    "labels": {"path": str(champion["labels"] / kind)}}}
        operator = DelayedLabelPerformanceOperator(
            task_id="performance", model_name=NAMES[task], monitoring=monitoring, label="outcome",
            entity_keys=["driver_id"], task=task, window_end=ENDS["quiet"].isoformat(),
            outlets=[performance_alias(NAMES[task])])
        got[kind] = (operator.execute(context(f"{task}-{kind}", events)), events.added)  # type: ignore[arg-type]
    good, bad = got["good"][0], got["bad"][0]
    metric = PRIMARY[task]
    assert good["metric"] == bad["metric"] == metric and good["rows"] == bad["rows"] == ROWS
    assert good["status"] == "ok" and not got["good"][1], good["reason"]
    assert bad["status"] == "detected", bad["reason"]
    assert good["champion_value"] == pytest.approx(champion["champion_value"])
    if metric == "rmse":  # lower is better: degraded when it rose above champion + tolerance
        assert bad["value"] > bad["threshold"] == pytest.approx(champion["champion_value"] + 0.05)
        assert "is above" in bad["reason"]
    else:
        assert bad["value"] < bad["threshold"] == pytest.approx(champion["champion_value"] - 0.05)
        assert "is below" in bad["reason"]
    assert [name for name, _ in got["bad"][1]] == [f"mlops.performance.{NAMES[task]}"]


def test_a_metric_of_another_task_is_refused_naming_the_task(world: dict[str, Any]) -> None:
    from airflow_mlops.exceptions import SpecError
    from airflow_mlops.operators.monitoring import DelayedLabelPerformanceOperator

    operator = DelayedLabelPerformanceOperator(task_id="performance", model_name=NAMES["regression"],
                                               monitoring=MONITORING, label="outcome", entity_keys=["driver_id"],
                                               primary_metric="roc_auc", task="regression",
                                               window_end=ENDS["quiet"].isoformat())
    with pytest.raises(SpecError, match=r"'roc_auc', not a regression metric; allowed: \['rmse', 'mae', 'r2'"):
        operator.execute(context("wrong-metric", Events()))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- batch: the task from the registry
def test_the_batch_operator_loads_the_champion_with_its_task(world: dict[str, Any]) -> None:
    from airflow_mlops.operators.batch import BatchPredictOperator

    for task in NAMES:
        model = BatchPredictOperator(task_id="batch", model_name=NAMES[task], feature_service="unused",
                                     entity_dataset="unused", entity_keys=["driver_id"]).load_model()
        assert (model.version, model.output.task) == (world[task]["version"], task)
        assert model.output.output_columns()[0] == "prediction"
    multi = BatchPredictOperator(task_id="batch", model_name=NAMES["multiclass"], feature_service="unused",
                                 entity_dataset="unused", entity_keys=["driver_id"]).load_model()
    assert multi.output.output_columns() == ["prediction", "proba_long", "proba_medium", "proba_short"]
