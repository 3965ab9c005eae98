"""One task output for serving, batch and the prediction log (core/predictions.py), on real sklearn models.

Each task's model is a real Pipeline trained on generated rows (support/task_models.py). What is checked:
the task is read from the version's tags and the estimator (a disagreement is refused naming both), the
answer per task (/predict fields, MLflow's pyfunc shapes, V2 tensors and their binary encoding), the
serving scorer's scores and prediction-log records, a canary of another task refused, and binary
answers as they were before tasks existed.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.prediction_window import read_prediction_window
from airflow_mlops.core.predictions import TAG_CLASSES, TAG_TASK, TaskMismatch, TaskOutput, class_text
from airflow_mlops.serving import kserve, kserve_wire
from airflow_mlops.serving.loaded import LoadedModel, ModelLoadError, prepare
from airflow_mlops.serving.mlflow_compat import mlflow_answer
from airflow_mlops.serving.prediction_log import PredictionLog
from airflow_mlops.serving.protocols import EntitySchema, FeatureTable
from airflow_mlops.serving.routing import Slots
from airflow_mlops.serving.scoring import Background, Scorer
from support.task_models import MULTICLASS, features, fit

pytestmark = pytest.mark.unit

COLUMNS = ("a", "b", "c")
TASKS = ("binary", "multiclass", "regression")


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {task: fit(task, rows=300, columns=COLUMNS) for task in TASKS}


def loaded(model: Any, version: str = "1", tags: dict[str, str] | None = None) -> LoadedModel:
    return prepare("m", version, None, model, "now", tags=tags)


# ---------------------------------------------------------------------------- the task of a model
def test_the_task_comes_from_the_estimator_and_the_tags_agree(models: dict[str, Any]) -> None:
    binary, multi, reg = (TaskOutput.of(models[t]) for t in TASKS)
    assert (binary.task, binary.classes) == ("binary", (0, 1))
    assert (multi.task, multi.classes) == ("multiclass", MULTICLASS)  # the estimator's classes_ order
    assert (reg.task, reg.classes) == ("regression", ())
    tagged = TaskOutput.of(models["multiclass"], {TAG_TASK: "multiclass", TAG_CLASSES: json.dumps(MULTICLASS)})
    assert tagged == multi
    assert all(isinstance(c, int) and not isinstance(c, np.integer) for c in binary.classes)  # JSON-native


@pytest.mark.parametrize(("task", "tags", "named"), [
    ("multiclass", {TAG_TASK: "binary"}, "3 classes ['long', 'medium', 'short'], not the 2 of a binary model"),
    ("binary", {TAG_TASK: "regression"}, "is a classifier, not a regression model"),
    ("regression", {TAG_TASK: "multiclass"}, "has no predict_proba; a multiclass model answers class probabilities"),
    ("multiclass", {TAG_CLASSES: '["short", "medium", "long"]'}, "differs from the estimator's classes_"),
    ("binary", {TAG_TASK: "ranking"}, "is not one of ['binary', 'multiclass', 'regression']"),
])
def test_a_model_that_disagrees_with_its_tags_is_refused_at_load(models: dict[str, Any], task: str,
                                                                 tags: dict[str, str], named: str) -> None:
    with pytest.raises(TaskMismatch, match=named.replace("[", r"\[").replace("]", r"\]")):
        TaskOutput.of(models[task], tags)
    with pytest.raises(ModelLoadError, match="m v1 cannot serve"):
        loaded(models[task], tags=tags)


# ---------------------------------------------------------------------------- what each consumer gets
def test_each_task_answers_its_own_shape(models: dict[str, Any]) -> None:
    x = features(4, 1, COLUMNS)
    multi = TaskOutput.of(models["multiclass"])
    proba = multi.score(models["multiclass"], x)
    assert proba.shape == (4, 3)
    answer = multi.answer(proba[0])
    assert answer["prediction"] == models["multiclass"].predict(x)[0]  # the class sklearn's predict gives
    assert list(answer["probabilities"]) == list(MULTICLASS)
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0)
    assert multi.class_of([0.4, 0.4, 0.2]) == "long"  # a tie goes to the first class, as argmax
    reg = TaskOutput.of(models["regression"])
    values = reg.score(models["regression"], x)
    assert reg.answer(values[0]) == {"prediction": pytest.approx(models["regression"].predict(x)[0])}
    binary = TaskOutput.of(models["binary"])
    p = binary.score(models["binary"], x)
    assert binary.answer(p[0]) == {"prediction": float(p[0])}  # as before tasks existed: no label added
    assert binary.log_fields(p[0]) == {"prediction": float(p[0])}


def test_batch_columns_per_task(models: dict[str, Any]) -> None:
    x = features(6, 2, COLUMNS)
    multi = TaskOutput.of(models["multiclass"])
    columns = multi.batch_columns(multi.score(models["multiclass"], x))
    assert list(columns) == multi.output_columns() == ["prediction", "proba_long", "proba_medium", "proba_short"]
    assert list(columns["prediction"]) == list(models["multiclass"].predict(x))
    ints = TaskOutput("multiclass", (1, 2, 3))
    assert ints.batch_columns(np.array([[0.1, 0.7, 0.2]]))["prediction"].dtype == np.int64
    assert TaskOutput.of(models["regression"]).output_columns() == ["prediction"]
    assert [class_text(v) for v in (2, 2.0, np.int64(2), "2", 2.5)] == ["2", "2", "2", "2", "2.5"]


def test_mlflow_pyfunc_shapes_per_task(models: dict[str, Any]) -> None:
    x = features(3, 3, COLUMNS)
    multi = loaded(models["multiclass"])
    proba = multi.predict_matrix(x.to_numpy())
    answer = mlflow_answer(list(proba), multi)
    assert np.array(answer) == pytest.approx(models["multiclass"].predict_proba(x))
    as_predict = LoadedModel("m", "1", None, None, COLUMNS, "now", predict_fn="predict", output=multi.output)
    assert mlflow_answer(list(proba), as_predict) == list(models["multiclass"].predict(x))
    reg = loaded(models["regression"])
    values = reg.predict_matrix(x.to_numpy())
    as_predict = LoadedModel("m", "1", None, None, COLUMNS, "now", predict_fn="predict", output=reg.output)
    assert mlflow_answer(list(values), as_predict) == pytest.approx(models["regression"].predict(x).tolist())


def test_v2_outputs_are_named_and_typed_per_task(models: dict[str, Any]) -> None:
    multi = TaskOutput.of(models["multiclass"])
    scores = [np.array([0.2, 0.5, 0.3]), np.array([0.6, 0.3, 0.1])]
    response = kserve.infer_response("m", "1", "r", scores, ["1", "1"], output=multi)
    assert response["outputs"] == [
        {"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["medium", "long"]},
        {"name": "predict_proba", "shape": [2, 3], "datatype": "FP64", "data": [0.2, 0.5, 0.3, 0.6, 0.3, 0.1]}]
    assert response["parameters"]["classes"] == list(MULTICLASS)
    ints = kserve.infer_response("m", "1", "r", scores[:1], ["1"], output=TaskOutput("multiclass", (3, 5, 9)),
                                 asked=["predict"])
    assert ints["outputs"] == [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [5]}]
    reg = kserve.infer_response("m", "1", "r", [12.5], ["1"], output=TaskOutput("regression", ()))
    assert reg["outputs"] == [{"name": "predict", "shape": [1], "datatype": "FP64", "data": [12.5]}]
    binary = kserve.infer_response("m", "1", "r", [0.25], ["1"])
    assert binary["outputs"] == [{"name": "predict_proba", "shape": [1], "datatype": "FP64", "data": [0.25]}]
    meta = kserve.model_metadata("m", ["1"], COLUMNS, EntitySchema({}, ()), multi)
    assert meta["outputs"] == [{"name": "predict", "datatype": "BYTES", "shape": [-1]},
                               {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}]
    assert meta["parameters"]["task"] == "multiclass" and meta["parameters"]["classes"] == list(MULTICLASS)


def test_v2_requests_name_the_models_outputs_and_binary_outputs_are_encoded_by_type() -> None:
    inputs = [{"name": c, "shape": [1], "datatype": "FP64", "data": [1.0]} for c in COLUMNS]
    names = kserve.output_names(TaskOutput("multiclass", ("x", "y")))
    request = kserve.parse_infer({"inputs": inputs, "outputs": [{"name": "predict", "parameters": {
        "binary_data": True}}]}, wanted=COLUMNS, positional=COLUMNS, schema=EntitySchema({}, ()), outputs=names)
    assert request.outputs == ("predict",) and request.binary_names(["predict", "predict_proba"]) == {"predict"}
    with pytest.raises(kserve.RequestError, match=r"this model has the outputs \['predict', 'predict_proba'\]"):
        kserve.parse_infer({"inputs": inputs, "outputs": [{"name": "label"}]}, wanted=COLUMNS, positional=COLUMNS,
                           schema=EntitySchema({}, ()), outputs=names)
    payload = {"outputs": [{"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["x", "yy"]},
                           {"name": "n", "shape": [2], "datatype": "INT64", "data": [3, -1]}]}
    body, length = kserve_wire.binary_response(payload, {"predict", "n"})
    raw = body[int(length):]
    assert raw[:11] == struct.pack("<I", 1) + b"x" + struct.pack("<I", 2) + b"yy"
    assert struct.unpack("<2q", raw[11:]) == (3, -1)
    assert [o["parameters"]["binary_data_size"] for o in json.loads(body[:int(length)])["outputs"]] == [11, 16]


# ---------------------------------------------------------------------------- the serving scorer and its log
@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def background(log_dir: Path) -> Iterator[Background]:
    sink = PredictionLog(log_dir, flush_seconds=0.1)
    bg = Background(sink, "m")
    yield bg
    bg.close()
    sink.close()


def table(x: pd.DataFrame) -> FeatureTable:
    return FeatureTable(rows=len(x), values={c: x[c].tolist() for c in x.columns})


@pytest.mark.parametrize("task", TASKS)
def test_the_scorer_scores_and_logs_each_task(models: dict[str, Any], background: Background, log_dir: Path,
                                              task: str) -> None:
    model = loaded(models[task])
    shadow = loaded(models[task], version="2")
    scorer = Scorer(SimpleNamespace(route=Slots(model, shadow, "shadow").route), background, "m")  # type: ignore[arg-type]
    x = features(5, 4, COLUMNS)
    scored = scorer.score_table(table(x), "req", "predict")
    assert scored.output == model.output and scored.versions == ["1"] * 5
    expected = models[task].predict(x) if task != "binary" else models[task].predict_proba(x)[:, 1]
    if task == "multiclass":
        assert [model.output.class_of(p) for p in scored.predictions] == list(expected)
    else:
        assert scored.predictions == pytest.approx(list(expected))
    background.wait_idle()
    assert background.sink is not None
    background.sink.flush()
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    frame = read_prediction_window("m", now - timedelta(hours=1), now + timedelta(hours=1), directory=log_dir).frame
    assert len(frame) == 5 and frame["prediction"].notna().all() and (frame["shadow_version"] == "2").all()
    if task == "multiclass":
        assert list(frame["predicted_class"]) == list(expected)
        probabilities = frame[["proba_long", "proba_medium", "proba_short"]].to_numpy()
        assert probabilities == pytest.approx(models[task].predict_proba(x))
        assert frame["prediction"].to_numpy() == pytest.approx(probabilities.max(axis=1))  # the class' probability
    else:
        assert "predicted_class" not in frame.columns
        assert frame["prediction"].tolist() == pytest.approx(list(expected))


def test_a_canary_or_shadow_of_another_task_is_refused(models: dict[str, Any], monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    from airflow_mlops.serving import models as serving_models
    from airflow_mlops.serving.models import ModelManager

    versions = {"1": models["binary"], "2": models["regression"], "3": models["multiclass"]}
    registry = SimpleNamespace(get_model_version=lambda name, v: SimpleNamespace(version=v, run_id=None, tags={}))
    monkeypatch.setattr(serving_models, "load_sklearn", lambda client, name, version: versions[version])
    monkeypatch.setattr(serving_models, "read_profile", lambda client, run_id: None)
    manager = ModelManager("m", client_factory=lambda: registry, follow_alias=None)  # type: ignore[arg-type,return-value]
    manager.start("1")
    for mode in ("canary", "shadow"):
        with pytest.raises(ModelLoadError, match=r"v2 \(regression\) beside v1 \(binary\): both must be of one task"):
            manager.deploy("2", mode, 0.5)
    assert manager.deploy("3", "full")["primary"]["task"] == "multiclass"  # a full switch is a new deployment
    assert manager.status()["primary"]["classes"] == list(MULTICLASS)
