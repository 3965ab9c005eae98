"""Refused input over HTTP, on the trained demo model with `serving.validate_ranges: true`.

The session's trained demo state (support/demo_state: feature DAG + training DAG, v1 champion, a
HistGradientBoosting pipeline) served in this process (TestClient). Each class of ambiguous input
(tests/unit/test_serving_refused.py has the exhaustive parse corpus) through every endpoint that
can carry it, answered in that protocol's error shape; and the range check against the feature
ranges the real training job logged with v1.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.demo_state import checkout_trained_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MODEL = "ride_completion"
TOKEN = "s3cret-admin-token"
REQUEST = {"trip_distance_km": 3.2, "surge_multiplier": 1.25, "pickup_hour": 8}
ONLINE = {"conv_rate": 0.5, "acc_rate": 0.8, "avg_daily_trips": 10.0, "rating": 4.5}
FEATURES = {**REQUEST, **ONLINE}
V2 = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def served() -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from airflow_mlops.serving.app import create_app, load_spec
    from airflow_mlops.serving.prediction_log import PredictionLog

    demo = checkout_trained_demo()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_FEAST_ONLINE_STORE",
                     "AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW_CONN_FEAST_DEFAULT"):
            mp.delenv(name, raising=False)
        mp.setenv("MLOPS_HOME", str(demo.home))
        mp.setenv("MLOPS_SERVING_ADMIN_TOKEN", TOKEN)
        spec = load_spec(MODEL)
        spec = spec.model_copy(update={"serving": spec.serving.model_copy(update={"validate_ranges": True})})
        app = create_app(spec, prediction_log=PredictionLog(demo.root / "predictions", flush_seconds=0.2))
        with TestClient(app) as client:
            yield client


@pytest.fixture(scope="module")
def profile(served: Any) -> dict[str, Any]:
    """v1's training-set profile, read from its run the way an operator would (tag -> artifact)."""
    from airflow_mlops.core.training import TAG_FEATURE_PROFILE
    from airflow_mlops.hooks.mlflow import MLflowHook

    client = MLflowHook().get_conn()
    run_id = client.get_model_version(MODEL, "1").run_id
    path = client.get_run(run_id).data.tags[TAG_FEATURE_PROFILE]
    with tempfile.TemporaryDirectory() as tmp:
        return dict(json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text()))


def split(*rows: list[Any]) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(FEATURES), "data": [list(r) for r in rows]}}


def tensors(values: dict[str, Any], datatypes: dict[str, str] | None = None) -> dict[str, Any]:
    return {"inputs": [{"name": k, "shape": [1], "datatype": (datatypes or {}).get(k, "FP64"), "data": [v]}
                       for k, v in values.items()]}


def raw(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


ROW = json.dumps({"driver_id": 1001, **REQUEST})
RECORD = json.dumps(FEATURES)
TENSOR = '{"name": "pickup_hour", "shape": [1], "datatype": "INT64", "data": [8]}'
NULLS = [None] * len(FEATURES)
# (case, path, request kwargs, status, field named in the message)
REFUSED: list[tuple[str, str, dict[str, Any], int, str]] = [
    # a key repeated in one JSON object, any depth, every JSON endpoint -> 400 naming it
    ("dup key /predict", "/predict", raw(ROW[:-1] + ', "driver_id": 1002}'), 400, "driver_id"),
    ("dup key /predict entities[1]", "/predict", raw(f'{{"entities": [{ROW}, {ROW[:-1]}, "pickup_hour": 9}}]}}'),
     400, "entities[1].pickup_hour"),
    ("dup key /invocations row", "/invocations",
     raw(f'{{"dataframe_records": [{RECORD[:-1]}, "rating": 1.0}}]}}'), 400, "dataframe_records[0].rating"),
    ("dup key /invocations top", "/invocations", raw('{"inputs": [[1]], "inputs": [[2]]}'), 400, "inputs"),
    ("dup key v2 tensor", V2, raw(f'{{"inputs": [{TENSOR[:-1]}, "data": [9]}}]}}'), 400, "inputs[0].data"),
    ("dup key v2 parameters", V2, raw(f'{{"inputs": [{TENSOR}], "parameters": {{"a": 1, "a": 2}}}}'), 400,
     "parameters.a"),
    ("dup key admin", "/admin/deploy", {**raw('{"mode": "full", "mode": "canary"}'),
                                        "headers": {"Content-Type": "application/json",
                                                    "Authorization": f"Bearer {TOKEN}"}}, 400, "mode"),
    # a column named twice
    ("dup column split", "/invocations",
     {"json": {"dataframe_split": {"columns": [*FEATURES, "rating"], "data": [[*FEATURES.values(), 1.0]]}}}, 400,
     "dataframe_split.columns"),
    ("dup column csv", "/invocations", {"content": ",".join([*FEATURES, "pickup_hour"]) + "\n"
                                        + ",".join(map(str, [*FEATURES.values(), 9])) + "\n",
                                        "headers": {"Content-Type": "text/csv"}}, 400, "csv header"),
    # NaN / Infinity tokens
    # (a NaN token on /invocations is a missing value, as MLflow reads it: tests/integration/test_mlflow_parity.py)
    ("Infinity v2", V2, raw(json.dumps(tensors(FEATURES)).replace("4.5", "-Infinity")), 400, "inputs[6].data[0]"),
    # V2 data its datatype cannot hold, and shapes
    ("INT64 3.7", V2, {"json": tensors({**FEATURES, "pickup_hour": 3.7}, {"pickup_hour": "INT64"})}, 400,
     "inputs[2].data[0]"),
    ("INT8 out of bounds", V2, {"json": tensors({**FEATURES, "pickup_hour": 300}, {"pickup_hour": "INT8"})}, 400,
     "inputs[2].data[0]"),
    ("UINT16 negative", V2, {"json": tensors({**FEATURES, "pickup_hour": -1}, {"pickup_hour": "UINT16"})}, 400,
     "inputs[2].data[0]"),
    ("INT64 true", V2, {"json": tensors({**FEATURES, "pickup_hour": True}, {"pickup_hour": "INT64"})}, 400,
     "inputs[2].data[0]"),
    ("BOOL 1", V2, {"json": tensors({**FEATURES, "pickup_hour": 1}, {"pickup_hour": "BOOL"})}, 400,
     "inputs[2].data[0]"),
    ("FP16 overflow", V2, {"json": tensors({**FEATURES, "trip_distance_km": 1e6}, {"trip_distance_km": "FP16"})},
     400, "inputs[0].data[0]"),
    ("entity key INT8 overflow", V2, {"json": tensors({"driver_id": 1001, **REQUEST}, {"driver_id": "INT8"})}, 400,
     "inputs[0].data[0]"),
    ("ragged nested data", V2, {"json": {"inputs": [{"name": "input-0", "shape": [2, 7], "datatype": "FP64",
                                                     "data": [[1] * 8, [1] * 6]}]}}, 400, "inputs[0].data"),
    # a row whose features are all missing -> 422 naming the row
    ("all null split row", "/invocations", {"json": split(list(FEATURES.values()), NULLS)}, 422,
     "dataframe_split[1]"),
    ("all null records row", "/invocations", {"json": {"dataframe_records": [dict.fromkeys(FEATURES)]}}, 422,
     "dataframe_records[0]"),
    ("all empty csv row", "/invocations", {"content": ",".join(FEATURES) + "\n" + "," * (len(FEATURES) - 1) + "\n",
                                           "headers": {"Content-Type": "text/csv"}}, 422, "csv[0]"),
    ("all null v2 tensors", V2, {"json": tensors(dict.fromkeys(FEATURES))}, 422, "row 0 of inputs"),
    ("all null v2 matrix", V2, {"json": {"inputs": [{"name": "input-0", "shape": [2, 7], "datatype": "FP32",
                                                     "data": [list(FEATURES.values()), NULLS]}]}}, 422,
     "inputs[0].data[1]"),
    # outside the training-set range (serving.validate_ranges: true) -> 422 naming column and value
    ("pickup_hour 99 /predict", "/predict", {"json": {"driver_id": 1001, **REQUEST, "pickup_hour": 99}}, 422,
     "pickup_hour"),
    ("1e300 /predict batch", "/predict", {"json": {"entities": [{"driver_id": 1001, **REQUEST},
                                                                {"driver_id": 1002, **REQUEST,
                                                                 "surge_multiplier": 1e300}]}}, 422,
     "entities[1].surge_multiplier"),
    ("1e300 /invocations", "/invocations", {"json": split([*list(FEATURES.values())[:-1], 1e300])}, 422,
     "dataframe_split[0].rating"),
    ("pickup_hour 99 v2 features", V2, {"json": tensors({**FEATURES, "pickup_hour": 99})}, 422,
     "inputs[2].data[0]"),
    ("pickup_hour 99 v2 entities", V2, {"json": tensors({"driver_id": 1001, **REQUEST, "pickup_hour": 99},
                                                        {"driver_id": "INT64"})}, 422, "inputs[3].data[0]"),
]


@pytest.mark.parametrize(("case", "path", "request_kwargs", "status", "field"), REFUSED, ids=[r[0] for r in REFUSED])
def test_ambiguous_input_is_refused_in_the_protocols_error_shape(served: Any, case: str, path: str,
                                                                 request_kwargs: dict[str, Any], status: int,
                                                                 field: str) -> None:
    response = served.post(path, **request_kwargs)
    assert response.status_code == status, (case, response.text)
    body = response.json()
    if path == "/invocations":
        assert body["error_code"] == "BAD_REQUEST"
        message = body["message"]
    elif path.startswith("/v2"):
        assert set(body) == {"error"}
        message = body["error"]
    else:
        assert body["field"] == field
        message = body["detail"]
    assert field in message, (case, message)
    if status == 422 and ("99" in case or "1e300" in case):
        assert "serving.validate_ranges" in message and "training set spans" in message, message


def test_v1_logged_its_training_set_profile_and_the_server_checks_against_it(served: Any,
                                                                             profile: dict[str, Any]) -> None:
    from airflow_mlops.serving.input_checks import RANGE_MARGIN

    primary = served.app.state.server.manager.primary
    assert set(profile["columns"]) == set(primary.feature_columns) and profile["rows"] > 1000
    assert served.get("/ready").json()["primary"]["feature_ranges"] is True
    hour = profile["columns"]["pickup_hour"]
    assert (hour["min"], hour["max"]) == (0.0, 23.0), hour
    top = hour["max"] + RANGE_MARGIN * (hour["max"] - hour["min"])  # 25.3: the allowed maximum
    for value, status in ((23, 200), (int(top), 200), (top, 200), (top + 0.01, 422), (-3, 422)):
        response = served.post("/predict", json={"driver_id": 1001, **REQUEST, "pickup_hour": value})
        assert response.status_code == status, (value, response.text)
    refused = served.post("/predict", json={"driver_id": 1001, **REQUEST, "pickup_hour": 99}).json()
    assert refused["detail"] == (
        f"pickup_hour: 99 is outside the range of 'pickup_hour' for {MODEL} v1: [-2.3, 25.3] (its training set spans "
        "[0, 23], plus 10% of that span on each side). Refused because the model spec sets "
        "serving.validate_ranges: true")


def test_in_range_requests_still_answer_in_every_protocol(served: Any) -> None:
    answers = [served.post("/predict", json={"driver_id": 1001, **REQUEST}),
               served.post("/invocations", json=split(list(FEATURES.values()), [None, *list(FEATURES.values())[1:]])),
               served.post(V2, json=tensors(FEATURES, {"pickup_hour": "INT64"}))]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
