"""The serving app on the real demo state: Feast SQLite online store, SQLite MLflow registry.

A subprocess with its own AIRFLOW_HOME and MLOPS_HOME writes 3 days of demo data and runs the real
feature DAG and training DAG (dag.test): v1 is the champion. Two more versions are registered from it:
v2 (the same artifact: a second version to switch to) and v3 (an artifact that does not exist).
The app then runs in this process (TestClient) and once as `airflow-mlops serve` (uvicorn + httpx).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.connects import connect_attempts
from support.dag_runs import program
from support.demo_state import checkout_trained_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

PROJECT = Path(__file__).resolve().parents[2]
MODEL = "ride_completion"
TOKEN = "s3cret-admin-token"
REQUEST = {"trip_distance_km": 3.2, "surge_multiplier": 1.25, "pickup_hour": 8}
DRIVERS = range(1001, 1201)

RUNNER = program("serving_app_runner")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def demo_state() -> dict[str, Any]:
    """The session's trained demo state (v1 champion) plus v2 (v1's model again) and v3 (a broken artifact)."""
    demo = checkout_trained_demo()
    assert demo.built["features"]["state"] == "success" and demo.built["train"]["state"] == "success", demo.built
    result = demo.run(RUNNER, timeout=300)[0]
    assert result["versions"] == ["1", "2", "3"], result
    return {"tmp": demo.root, "env": demo.env, "home": demo.home}


@pytest.fixture(scope="module")
def state_env(demo_state: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """This process points at the demo state (MLOPS_HOME) and has an admin token."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_FEAST_ONLINE_STORE",
                     "AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW_CONN_FEAST_DEFAULT"):
            mp.delenv(name, raising=False)
        mp.setenv("MLOPS_HOME", str(demo_state["home"]))
        mp.setenv("MLOPS_SERVING_ADMIN_TOKEN", TOKEN)
        yield demo_state


def fast_spec(**serving: Any) -> Any:
    from airflow_mlops.serving.app import load_spec

    spec = load_spec(MODEL)
    return spec.model_copy(update={"serving": spec.serving.model_copy(update={"poll_seconds": 0.3, **serving})})


@pytest.fixture(scope="module")
def served(state_env: dict[str, Any]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from airflow_mlops.serving.app import create_app
    from airflow_mlops.serving.prediction_log import PredictionLog

    log = PredictionLog(state_env["tmp"] / "predictions", flush_seconds=0.2)
    app = create_app(fast_spec(), prediction_log=log)
    with TestClient(app) as client:
        client.log = log  # type: ignore[attr-defined]
        client.server = app.state.server  # type: ignore[attr-defined]
        yield client


def row(driver_id: int, **extra: Any) -> dict[str, Any]:
    return {"driver_id": driver_id, **REQUEST, **extra}


def admin(client: Any, body: dict[str, Any], token: str | None = TOKEN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/admin/deploy", json=body, headers=headers)


@contextlib.contextmanager
def demo_store() -> Iterator[Any]:
    """The demo state's Feast store, its SQLite online-store connection closed after use: the next module's
    checkout replaces that file and refuses while this process still holds it open (support/demo_state.py)."""
    from airflow_mlops.hooks.feast import FeastHook
    from airflow_mlops.serving.app import close_online_connection

    store = FeastHook().get_store()
    try:
        yield store
    finally:
        close_online_connection(store)


def online_features(driver_ids: list[int]) -> dict[str, list[Any]]:
    with demo_store() as store:
        return store.get_online_features(features=store.get_feature_service("ride_completion_v1"),
                                         entity_rows=[{"driver_id": d} for d in driver_ids],
                                         full_feature_names=False).to_dict()


def online_event_times(driver_ids: list[int]) -> list[float]:
    """Epoch seconds of each driver's online row, as Feast itself reports them."""
    with demo_store() as store:
        answer = store.get_online_features(features=store.get_feature_service("ride_completion_v1"),
                                           entity_rows=[{"driver_id": d} for d in driver_ids],
                                           full_feature_names=False).to_dict(include_event_timestamps=True)
    return [float(t) for t in answer["conv_rate__ts"]]


def model_inputs(driver_id: int) -> tuple[Any, dict[str, float]]:
    """The champion pipeline and the feature row of one driver, assembled independently of the app."""
    import mlflow

    from airflow_mlops.hooks.mlflow import MLflowHook

    with MLflowHook().activated():
        model = mlflow.sklearn.load_model(f"models:/{MODEL}/1")
    online = {name: values[0] for name, values in online_features([driver_id]).items() if name != "driver_id"}
    values = {**REQUEST, **online}
    return model, {c: float(values[c]) for c in model.feature_names_in_}


# ---------------------------------------------------------------------------- /predict and protocols
def test_predict_uses_online_features_in_the_training_column_order(served: Any) -> None:
    import pandas as pd

    model, features = model_inputs(1001)
    assert list(features)[:3] == ["trip_distance_km", "surge_multiplier", "pickup_hour"]
    assert {"conv_rate", "acc_rate", "avg_daily_trips", "rating"} <= set(features), "unprefixed Feast names"
    expected = float(model.predict_proba(pd.DataFrame([features]))[0, 1])
    response = served.post("/predict", json=row(1001), headers={"X-Request-ID": "ride-42"})
    assert response.status_code == 200, response.text
    body = response.json()
    [prediction] = body["predictions"]
    assert prediction["prediction"] == pytest.approx(expected, abs=1e-12)
    assert (prediction["model_version"], prediction["route"], prediction["entity"]) == ("1", "primary",
                                                                                       {"driver_id": 1001})
    assert body["request_id"] == prediction["request_id"] == response.headers["x-request-id"] == "ride-42"
    # degraded exactly when the row is older than the view's TTL (2 days), by the store's own event time
    age = time.time() - online_event_times([1001])[0]
    assert body["model"] == MODEL and body["degraded"] is (age > 2 * 86400), (age, body)
    assert body.get("stale_features") == (["driver_hourly_stats"] if age > 2 * 86400 else None)


def test_predict_batches_every_demo_entity_in_one_request(served: Any) -> None:
    response = served.post("/predict", json={"entities": [row(d) for d in DRIVERS], "request_id": "batch"})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["entity"]["driver_id"] for p in predictions] == list(DRIVERS)
    assert all(0.0 < p["prediction"] < 1.0 and p["model_version"] == "1" for p in predictions)
    assert len({p["request_id"] for p in predictions}) == len(DRIVERS)
    assert len({round(p["prediction"], 9) for p in predictions}) > 50, "online features differ per driver"


def test_negative_and_huge_request_values_are_scored(served: Any) -> None:
    response = served.post("/predict", json=row(1001, trip_distance_km=-5.0, surge_multiplier=1e300))
    assert response.status_code == 200, response.text
    assert 0.0 <= response.json()["predictions"][0]["prediction"] <= 1.0


def test_all_three_protocols_give_the_same_prediction(served: Any) -> None:
    _, features = model_inputs(1002)
    columns, values = list(features), list(features.values())
    expected = served.post("/predict", json=row(1002)).json()["predictions"][0]["prediction"]
    records = [features]
    # (list-of-lists `inputs` is refused for a model with named columns, as MLflow refuses it: test_mlflow_parity)
    mlflow_bodies = [{"dataframe_split": {"columns": columns, "data": [values]}}, {"dataframe_records": records},
                     {"instances": records}, {"inputs": {c: [v] for c, v in features.items()}}]
    got = [served.post("/invocations", json=body) for body in mlflow_bodies]
    csv = ",".join(columns) + "\n" + ",".join(map(repr, values)) + "\n"
    got.append(served.post("/invocations", content=csv, headers={"Content-Type": "text/csv"}))
    for response in got:
        assert response.status_code == 200, response.text
        # MLflow's shape for a model logged with pyfunc_predict_fn="predict_proba": [[p0, p1]] per row
        assert response.json()["predictions"] == [[pytest.approx(1 - expected, abs=1e-12),
                                                   pytest.approx(expected, abs=1e-12)]]
    tensors = [{"name": c, "shape": [1], "datatype": "FP64", "data": [v]} for c, v in features.items()]
    matrix = [{"name": "input-0", "shape": [1, len(values)], "datatype": "FP64", "data": [values]}]
    entity = [{"name": "driver_id", "shape": [1], "datatype": "INT64", "data": [1002]}]
    entity += [{"name": k, "shape": [1, 1], "datatype": "FP32", "data": [[v]]} for k, v in REQUEST.items()]
    for inputs in (tensors, matrix, entity):
        response = served.post(f"/v2/models/{MODEL}/infer", json={"id": "v2-req", "inputs": inputs})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model_name"], body["model_version"], body["id"]) == (MODEL, "1", "v2-req")
        [output] = body["outputs"]
        assert (output["name"], output["shape"], output["datatype"]) == ("predict_proba", [1], "FP64")
        assert output["data"] == [pytest.approx(expected, abs=1e-6)]


def test_health_ready_and_v2_metadata(served: Any) -> None:
    assert served.get("/health").json() == {"status": "ok"}
    ready = served.get("/ready").json()
    assert ready["ready"] is True and ready["primary"]["version"] == "1" and ready["mode"] == "single"
    assert served.get("/v2/health/live").json() == {"live": True}
    assert served.get("/v2/health/ready").json() == {"ready": True}
    assert served.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
    meta = served.get(f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL and meta["versions"] == ["1"] and meta["platform"] == "sklearn"
    assert [i["name"] for i in meta["inputs"]] == list(served.server.manager.primary.feature_columns)
    assert meta["outputs"] == [{"name": "predict_proba", "datatype": "FP64", "shape": [-1]}]
    missing = served.get("/v2/models/other")
    assert missing.status_code == 404 and "other" in missing.json()["error"]


# ---------------------------------------------------------------------------- never 500 for bad input
JSON_CT = {"Content-Type": "application/json"}
ONE = json.dumps(row(1001)).encode()
MALFORMED: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("bad json", "/predict", {"content": b"{bad", "headers": JSON_CT}, 400, "body"),
    ("wrong content type", "/predict", {"content": ONE, "headers": {"Content-Type": "text/plain"}}, 415,
     "Content-Type"),
    ("form post (curl -d)", "/predict", {"data": {"driver_id": "1001"}}, 415, "Content-Type"),
    ("empty body", "/predict", {"content": b"", "headers": JSON_CT}, 400, "body"),
    ("array body", "/predict", {"json": [row(1001)]}, 422, "body"),
    ("missing entity key", "/predict", {"json": REQUEST}, 422, "driver_id"),
    ("string entity key", "/predict", {"json": row(1001) | {"driver_id": "abc"}}, 422, "driver_id"),
    ("int64 overflow", "/predict", {"json": row(10**30)}, 422, "driver_id"),
    ("missing request feature", "/predict", {"json": {"driver_id": 1001, "trip_distance_km": 1.0,
                                                      "pickup_hour": 3}}, 422, "surge_multiplier"),
    ("string feature", "/predict", {"json": row(1001, pickup_hour="8")}, 422, "pickup_hour"),
    ("NaN", "/predict", {"content": ONE.replace(b"3.2", b"NaN"), "headers": JSON_CT}, 422, "trip_distance_km"),
    ("Infinity", "/predict", {"content": ONE.replace(b"3.2", b"-Infinity"), "headers": JSON_CT}, 422,
     "trip_distance_km"),
    ("1e999", "/predict", {"content": ONE.replace(b"3.2", b"1e999"), "headers": JSON_CT}, 422, "trip_distance_km"),
    ("unknown field", "/predict", {"json": row(1001, colour="red")}, 422, "colour"),
    ("online feature sent", "/predict", {"json": row(1001, conv_rate=0.3)}, 422, "conv_rate"),
    ("nested garbage", "/predict", {"json": {"entities": [row(1001) | {"driver_id": {"$gt": 1}}]}}, 422,
     "entities[0].driver_id"),
    ("deep nesting", "/predict", {"content": b"[" * 50_000, "headers": JSON_CT}, 400, "body"),
    ("too many rows", "/predict", {"json": {"entities": [row(1001)] * 1001}}, 413, "entities"),
    ("body above 4 MiB", "/predict", {"content": b" " * (4 * 1024 * 1024 + 1), "headers": JSON_CT}, 413, "body"),
    ("bad request id header", "/predict", {"json": row(1001), "headers": {"X-Request-ID": "a b"}}, 422,
     "X-Request-ID"),
    ("unknown entity", "/predict", {"json": row(999_999)}, 404, "driver_id=999999"),
    ("mlflow: no input key", "/invocations", {"json": {"rows": [[1]]}}, 400, "dataframe_split"),
    # /invocations errors below are MLflow's own (its scoring code reads these bodies): status, error_code, message
    ("mlflow: ragged split", "/invocations", {"json": {"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}},
     400, "dataframe_split"),
    ("mlflow: missing column", "/invocations", {"json": {"dataframe_records": [{"trip_distance_km": 1.0}]}}, 400,
     "surge_multiplier"),
    ("mlflow: text value", "/invocations", {"json": {"dataframe_records": [{"rating": "good"}]}}, 400, "rating"),
    ("mlflow: wrong content type", "/invocations", {"content": b"{}", "headers": {"Content-Type": "text/xml"}}, 415,
     "content types"),
    ("mlflow: too many rows", "/invocations", {"json": {"inputs": [[1, 2, 3, 4, 5, 6, 7]] * 1001}}, 413, "inputs"),
    ("v2: unknown model", "/v2/models/nope/infer", {"json": {"inputs": []}}, 404, "nope"),
    ("v2: no inputs", f"/v2/models/{MODEL}/infer", {"json": {"inputs": []}}, 400, "inputs"),
    ("v2: shape/data mismatch", f"/v2/models/{MODEL}/infer",
     {"json": {"inputs": [{"name": "driver_id", "shape": [2], "datatype": "INT64", "data": [1001]}]}}, 400,
     "inputs[0].data"),
    ("v2: wrong key datatype", f"/v2/models/{MODEL}/infer",
     {"json": {"inputs": [{"name": "driver_id", "shape": [1], "datatype": "FP64", "data": [1001.0]}]
               + [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in REQUEST.items()]}}, 400,
     "inputs[0].datatype"),
]


@pytest.mark.parametrize(("case", "path", "request_kwargs", "status", "field"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_requests_get_a_4xx_naming_the_field(served: Any, case: str, path: str,
                                                       request_kwargs: dict[str, Any], status: int,
                                                       field: str) -> None:
    response = served.post(path, **request_kwargs)
    assert response.status_code == status, (case, response.status_code, response.text)
    body = response.json() if response.headers["content-type"].startswith("application/json") else {}
    if path == "/invocations" and status == 415:  # MLflow answers an unknown content type in plain text
        message = response.text
    elif path == "/invocations":
        assert body["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE"), body
        message = body["message"]
    else:
        message = body["error"] if path.startswith("/v2") else body["detail"]
    assert field in message, (case, message)


def test_an_unknown_entity_in_a_batch_is_named(served: Any) -> None:
    response = served.post("/predict", json={"entities": [row(1001), row(424242), row(1003)]})
    assert response.status_code == 404
    assert "driver_id=424242" in response.json()["detail"] and "1003" not in response.json()["detail"]


# ---------------------------------------------------------------------------- log and metrics
def read_log(directory: Path) -> list[dict[str, Any]]:
    import pandas as pd

    files = sorted(directory.glob(f"{MODEL}/date=*/*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files]).to_dict("records") if files else []


def test_predictions_are_logged_off_the_request_path_and_counted(served: Any, state_env: dict[str, Any]) -> None:
    import pandas as pd

    assert served.post("/predict", json=row(1010, colour="red")).status_code == 422
    response = served.post("/predict", json={"entities": [row(1010), row(1011)], "request_id": "logged"})
    assert response.status_code == 200
    served.server.scorer.background.wait_idle()
    served.log.flush()
    records = {r["request_id"]: r for r in read_log(state_env["tmp"] / "predictions")}
    first = records["logged-0"]
    assert (first["model"], first["model_version"], first["route"], first["protocol"]) == (MODEL, "1", "primary",
                                                                                           "predict")
    assert json.loads(first["entity_key"]) == {"driver_id": 1010}
    features = json.loads(first["features"])
    assert set(features) == set(served.server.manager.primary.feature_columns) and features["pickup_hour"] == 8.0
    assert first["prediction"] == pytest.approx(response.json()["predictions"][0]["prediction"])
    assert first["shadow_version"] is None and math.isnan(first["shadow_prediction"])
    metrics = served.get("/metrics").text
    assert 'mlops_serving_requests_total{model="ride_completion",route="primary",status="200",version="1"}' in metrics
    assert 'route="none",status="422",version="none"' in metrics
    assert 'mlops_serving_model_info{model="ride_completion",slot="primary",version="1"} 1.0' in metrics
    assert 'mlops_serving_prediction_log_dropped_total{model="ride_completion"} 0.0' in metrics
    assert 'mlops_serving_prediction_log_written_total{model="ride_completion"}' in metrics
    assert 'mlops_serving_background_dropped_total{model="ride_completion"} 0.0' in metrics
    # each record carries the age of the online row it was scored on (the store's event time at scoring)
    age = json.loads(first["extra"])["feature_age_seconds"]["driver_hourly_stats"]
    when = pd.Timestamp(first["time"]).timestamp()
    assert age == pytest.approx(when - online_event_times([1010])[0], abs=5.0), first["extra"]
    assert 'mlops_serving_feature_age_seconds_bucket{le="+Inf",model="ride_completion",view="driver_hourly_stats"}' \
        in metrics


# ---------------------------------------------------------------------------- admin, canary, shadow
def test_admin_deploy_needs_the_token(served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_SERVING_ADMIN_TOKEN")
    disabled = admin(served, {"mode": "full"})
    assert disabled.status_code == 403 and "admin disabled" in disabled.json()["detail"]
    monkeypatch.setenv("MLOPS_SERVING_ADMIN_TOKEN", TOKEN)
    for token in (None, "wrong", TOKEN + "x", ""):
        denied = admin(served, {"mode": "full"}, token)
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer", token
    bad = admin(served, {"mode": "canary", "version": "2"})
    assert bad.status_code == 422 and "fraction" in bad.json()["detail"]
    ok = admin(served, {"mode": "full", "version": "1"})
    assert ok.status_code == 200 and ok.json()["primary"]["version"] == "1"


@pytest.mark.parametrize(("version", "reason"), [("99", "no such registered version"), ("3", "cannot be loaded")])
def test_a_failed_deploy_is_409_and_the_old_model_keeps_answering(served: Any, version: str, reason: str) -> None:
    response = admin(served, {"mode": "full", "version": version})
    assert response.status_code == 409, response.text
    assert f"v{version}" in response.json()["detail"] and reason in response.json()["detail"]
    assert response.json()["status"]["primary"]["version"] == "1"
    answer = served.post("/predict", json=row(1001))
    assert answer.status_code == 200 and answer.json()["predictions"][0]["model_version"] == "1"


def test_canary_routes_a_sticky_share_of_entities(served: Any) -> None:
    try:
        deployed = admin(served, {"mode": "canary", "version": "2", "fraction": 0.5})
        assert deployed.status_code == 200 and deployed.json()["secondary"]["version"] == "2"
        batch = {"entities": [row(d) for d in DRIVERS]}
        first = served.post("/predict", json=batch).json()["predictions"]
        routes = {p["entity"]["driver_id"]: (p["route"], p["model_version"]) for p in first}
        assert set(routes.values()) == {("primary", "1"), ("canary", "2")}
        canary_share = sum(r == ("canary", "2") for r in routes.values()) / len(routes)
        assert 0.3 < canary_share < 0.7, canary_share
        again = served.post("/predict", json=batch).json()["predictions"]
        assert {p["entity"]["driver_id"]: (p["route"], p["model_version"]) for p in again} == routes, "sticky"
        assert 'route="canary",status="200",version="2"' in served.get("/metrics").text
    finally:
        assert admin(served, {"mode": "full", "version": "1"}).status_code == 200


def test_shadow_scores_off_the_request_path(served: Any, state_env: dict[str, Any]) -> None:
    try:
        assert admin(served, {"mode": "shadow", "version": "2"}).status_code == 200
        response = served.post("/predict", json={**row(1020), "request_id": "shadowed"})
        [prediction] = response.json()["predictions"]
        assert (prediction["route"], prediction["model_version"]) == ("primary", "1")
        served.server.scorer.background.wait_idle()
        served.log.flush()
        record = {r["request_id"]: r for r in read_log(state_env["tmp"] / "predictions")}["shadowed"]
        assert record["shadow_version"] == "2"
        assert record["shadow_prediction"] == pytest.approx(prediction["prediction"]), "v2 is the same artifact"
    finally:
        assert admin(served, {"mode": "full", "version": "1"}).status_code == 200


def test_spec_promotion_shadow_scores_the_challenger_alias(state_env: dict[str, Any]) -> None:
    """promotion.shadow: true -> the app follows `challenger` into the shadow slot; shadow=False overrides it."""
    from fastapi.testclient import TestClient

    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.serving.app import create_app
    from airflow_mlops.serving.prediction_log import PredictionLog

    spec = fast_spec()
    spec = spec.model_copy(update={"promotion": spec.promotion.model_copy(update={"shadow": True})})
    registry = MLflowHook().get_conn()
    registry.set_registered_model_alias(MODEL, "challenger", "2")
    log = PredictionLog(state_env["tmp"] / "predictions_spec_shadow", flush_seconds=0.2)
    try:
        with TestClient(create_app(spec, prediction_log=log)) as client:
            ready = client.get("/ready").json()
            assert (ready["mode"], ready["shadow_alias"], ready["secondary"]["version"]) == ("shadow", "challenger",
                                                                                             "2")
            response = client.post("/predict", json={**row(1030), "request_id": "spec-shadow"})
            [prediction] = response.json()["predictions"]
            assert (prediction["route"], prediction["model_version"]) == ("primary", "1")
            client.app.state.server.scorer.background.wait_idle()  # type: ignore[attr-defined]
            log.flush()
            record = {r["request_id"]: r for r in read_log(state_env["tmp"] / "predictions_spec_shadow")}
            assert record["spec-shadow"]["shadow_version"] == "2"
            assert record["spec-shadow"]["shadow_prediction"] == pytest.approx(prediction["prediction"])
            registry.delete_registered_model_alias(MODEL, "challenger")  # no challenger: the shadow goes
            deadline = time.monotonic() + 10
            while client.get("/ready").json()["mode"] != "single" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert client.get("/ready").json()["secondary"] is None
        registry.set_registered_model_alias(MODEL, "challenger", "2")
        with TestClient(create_app(spec, shadow=False, prediction_log=log)) as client:  # the CLI's --no-shadow
            ready = client.get("/ready").json()
            assert (ready["mode"], ready["shadow_alias"], ready["secondary"]) == ("single", None, None)
    finally:
        try:
            registry.delete_registered_model_alias(MODEL, "challenger")
        except Exception:  # noqa: BLE001 - already gone
            pass


class LoadLoop:
    """A thread posting single-row /predict requests back to back; records versions and failures."""

    def __init__(self, post: Any) -> None:
        self.post = post
        self.seen: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self.post("/predict", json=row(1001 + len(self.seen) % 200))
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
                continue
            if response.status_code != 200:
                self.failures.append(response.text)
            else:
                self.seen.append(response.json()["predictions"][0]["model_version"])

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_for(self, version: str, timeout: float = 45.0) -> None:
        """Until responses come from `version`, then 20 more from it."""
        deadline = time.monotonic() + timeout
        while not (self.seen and self.seen[-1] == version) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.seen and self.seen[-1] == version, (version, self.seen[-5:], self.failures[:3])
        count = len(self.seen)
        while len(self.seen) < count + 20 and time.monotonic() < deadline + 30:
            time.sleep(0.01)

    def switches(self) -> list[str]:
        return [b for a, b in zip(self.seen, self.seen[1:], strict=False) if a != b]


def test_version_switches_under_load_fail_no_request(served: Any) -> None:
    from airflow_mlops.hooks.mlflow import MLflowHook

    client = MLflowHook().get_conn()
    try:
        with LoadLoop(served.post) as load:
            load.wait_for("1")
            client.set_registered_model_alias(MODEL, "champion", "2")  # the server follows the alias...
            load.wait_for("2")
            client.set_registered_model_alias(MODEL, "champion", "1")
            load.wait_for("1")
            assert admin(served, {"mode": "full", "version": "2"}).status_code == 200  # ...or an admin deploy
            load.wait_for("2")
            assert admin(served, {"mode": "full"}).status_code == 200  # back to the alias' version
            load.wait_for("1")
    finally:
        client.set_registered_model_alias(MODEL, "champion", "1")
    assert load.failures == []
    assert load.switches() == ["2", "1", "2", "1"], "each switch is atomic: no request flips back and forth"
    assert len(load.seen) > 100


# ---------------------------------------------------------------------------- online store down
@pytest.fixture(scope="module")
def pinned_manager(state_env: dict[str, Any]) -> Any:
    """v1 loaded once, shared by the apps below (their lifespans see it loaded and do not start it)."""
    from airflow_mlops.serving.models import ModelManager

    manager = ModelManager(MODEL, follow_alias=None)
    manager.start("1")
    return manager


@contextlib.contextmanager
def store_down_app(spec: Any, store: Any, manager: Any, tmp: Path) -> Iterator[Any]:
    """A test client of an app on `store`; the app leaves a store it was given open, so this closes it after."""
    from fastapi.testclient import TestClient

    from airflow_mlops.serving.app import close_online_connection, create_app
    from airflow_mlops.serving.prediction_log import PredictionLog

    app = create_app(spec, manager=manager, store=store, prediction_log=PredictionLog(tmp / "predictions_down"))
    try:
        with TestClient(app) as client:
            yield client
    finally:
        close_online_connection(store)


def test_sqlite_store_missing_is_503_naming_the_store(state_env: dict[str, Any], pinned_manager: Any) -> None:
    from airflow_mlops.hooks.feast import FeastHook

    missing = state_env["tmp"] / "gone" / "sub" / "online.db"
    store = FeastHook(online_store=f"sqlite:///{missing}").get_store()
    with store_down_app(fast_spec(), store, pinned_manager, state_env["tmp"]) as client:
        response = client.post("/predict", json=row(1001))
        assert response.status_code == 503, response.text
        assert f"sqlite:///{missing}" in response.json()["detail"]
        assert client.get("/ready").status_code == 200, "the model is loaded; the store is a per-request matter"
        columns = list(pinned_manager.primary.feature_columns)
        body = {"dataframe_split": {"columns": columns, "data": [[1] * len(columns)]}}
        assert client.post("/invocations", json=body).status_code == 200, "no Feast needed"
        assert 'route="none",status="503"' in client.get("/metrics").text


def test_feature_fallback_request_answers_degraded(state_env: dict[str, Any], pinned_manager: Any) -> None:
    import numpy as np
    import pandas as pd

    from airflow_mlops.hooks.feast import FeastHook

    store = FeastHook(online_store=f"sqlite:///{state_env['tmp'] / 'gone2' / 'x' / 'online.db'}").get_store()
    with store_down_app(fast_spec(feature_fallback="request"), store, pinned_manager, state_env["tmp"]) as client:
        response = client.post("/predict", json=row(1001))
    assert response.status_code == 200, response.text
    assert response.json()["degraded"] is True
    model = pinned_manager.primary
    frame = pd.DataFrame([{c: REQUEST.get(c, np.nan) for c in model.feature_columns}], dtype="float64")
    assert response.json()["predictions"][0]["prediction"] == pytest.approx(float(model.predict_proba(frame)[0]))


def test_redis_down_fails_fast_with_503(state_env: dict[str, Any], pinned_manager: Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_mlops.serving.features import serving_store

    port = free_port()  # nothing listens here
    monkeypatch.setenv("MLOPS_FEAST_ONLINE_STORE", f"redis://127.0.0.1:{port}/0")
    with store_down_app(fast_spec(), serving_store(), pinned_manager, state_env["tmp"]) as client:
        with connect_attempts(port) as attempts:
            response = client.post("/predict", json=row(1001))
    assert response.status_code == 503 and f"redis://127.0.0.1:{port}" in response.json()["detail"]
    assert len(attempts) == 1, f"{attempts}: redis-py's default retries (~8 s) must be off for serving"


# ---------------------------------------------------------------------------- stale online rows
# Rows count as stale from an age of 1 s on (serving.max_feature_age), whatever the demo data's age.
def test_stale_rows_are_served_only_as_degraded_and_named(state_env: dict[str, Any], pinned_manager: Any) -> None:
    """Policy serve_stale (the default): scored, but never `degraded: false` with a stale row."""
    from airflow_mlops.serving.features import serving_store

    with store_down_app(fast_spec(max_feature_age="1s"), serving_store(), pinned_manager, state_env["tmp"]) as client:
        body = client.post("/predict", json=row(1001)).json()
        infer = {"inputs": [{"name": "driver_id", "shape": [1], "datatype": "INT64", "data": [1001]},
                            *({"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in REQUEST.items())]}
        v2 = client.post(f"/v2/models/{MODEL}/infer", json=infer).json()
        metrics = client.get("/metrics").text
    assert body["degraded"] is True and body["stale_features"] == ["driver_hourly_stats"], body
    assert v2["parameters"]["degraded"] is True and v2["parameters"]["stale_features"] == ["driver_hourly_stats"]
    assert 'mlops_serving_stale_features_total{model="ride_completion",policy="serve_stale",' \
           'view="driver_hourly_stats"} 2.0' in metrics


def test_stale_rows_fail_with_503_naming_the_view_the_age_and_the_fix(state_env: dict[str, Any],
                                                                     pinned_manager: Any) -> None:
    from airflow_mlops.serving.features import serving_store

    spec = fast_spec(stale_features="fail", max_feature_age="1s")
    with store_down_app(spec, serving_store(), pinned_manager, state_env["tmp"]) as client:
        response = client.post("/predict", json=row(1001))
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert "view 'driver_hourly_stats': row " in detail and " old, allowed 1s" in detail, detail
    assert "mlops_features" in detail


def test_stale_rows_under_policy_request_score_from_request_features_only(state_env: dict[str, Any],
                                                                         pinned_manager: Any) -> None:
    import numpy as np
    import pandas as pd

    from airflow_mlops.serving.features import serving_store

    spec = fast_spec(stale_features="request", max_feature_age="1s")
    with store_down_app(spec, serving_store(), pinned_manager, state_env["tmp"]) as client:
        body = client.post("/predict", json=row(1001)).json()
    assert body["degraded"] is True and body["stale_features"] == ["driver_hourly_stats"]
    model = pinned_manager.primary
    frame = pd.DataFrame([{c: REQUEST.get(c, np.nan) for c in model.feature_columns}], dtype="float64")
    assert body["predictions"][0]["prediction"] == pytest.approx(float(model.predict_proba(frame)[0]))


# ---------------------------------------------------------------------------- airflow-mlops serve (uvicorn)
def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def test_cli_serve_under_uvicorn(state_env: dict[str, Any]) -> None:
    port = free_port()
    env = {**state_env["env"], "MLOPS_SERVING_ADMIN_TOKEN": TOKEN}
    cli = Path(sys.executable).with_name("airflow-mlops")
    log_file = state_env["tmp"] / "serve.log"
    with log_file.open("w") as sink:
        server = subprocess.Popen([str(cli), "serve", "--model", MODEL, "--port", str(port)], env=env,
                                  stdout=sink, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.5)
            assert client.get("/ready").json()["primary"]["version"] == "1"
            for _ in range(200):  # warm up
                client.post("/predict", json=row(1001))
            latencies = []
            for i in range(2000):
                started = time.perf_counter()
                response = client.post("/predict", json=row(1001 + i % 200))
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
            print(f"\nuvicorn+httpx keep-alive single-row /predict over 2000 requests: "
                  f"p50 {statistics.median(latencies) * 1e3:.2f} ms, p99 {percentile(latencies, 0.99) * 1e3:.2f} ms")
            assert percentile(latencies, 0.99) < 1.0
        alias_switch_under_load(port)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    output = log_file.read_text()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: the exit status is "killed by SIGTERM"
    assert server.returncode in (0, -signal.SIGTERM), output[-4000:]
    assert "Application startup complete" in output and "Finished server process" in output
    assert "POST /predict" not in output, "no access log line per request"
    records = read_log(state_env["home"] / "predictions")
    assert len([r for r in records if r["protocol"] == "predict"]) >= 2200, "the log is flushed on shutdown"


def alias_switch_under_load(port: int) -> None:
    """A second keep-alive client posts back to back while the champion alias moves 1 -> 2 -> 1."""
    from airflow_mlops.hooks.mlflow import MLflowHook

    registry = MLflowHook().get_conn()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client, LoadLoop(client.post) as load:
            load.wait_for("1")
            registry.set_registered_model_alias(MODEL, "champion", "2")
            load.wait_for("2")  # the server re-reads the alias every serving.poll_seconds (5 s)
            registry.set_registered_model_alias(MODEL, "champion", "1")
            load.wait_for("1")
    finally:
        registry.set_registered_model_alias(MODEL, "champion", "1")
    assert load.failures == [] and load.switches() == ["2", "1"], (load.failures[:3], load.switches())
