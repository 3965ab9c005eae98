"""KServe V2 / Open Inference Protocol parity with the real clients: `tritonclient.http` and `kserve`.

The session's trained demo state (v1 champion) plus v2 (v1's artifact registered again), served by
the real `airflow-mlops serve` process (uvicorn); v2 is deployed as a 50 % canary, so the server has
two versions loaded. tritonclient (the dev dependency; its gevent import patches nothing, so it runs
in this process) calls the plain and the versioned routes exactly as a user would. The kserve client
cannot be installed beside Airflow (psutil pins, see the Makefile): tests/support/kserve_client_calls.py
runs in `.venv-kserve` (created by `make install`) as a separate client process.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from support.dag_runs import program
from support.demo_state import checkout_trained_demo
from support.serving_process import ServingProcess, serving_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PROJECT = Path(__file__).resolve().parents[2]
KSERVE_PYTHON = PROJECT / ".venv-kserve" / "bin" / "python"
MODEL = "ride_completion"
TOKEN = "s3cret-admin-token"
REQUEST = {"trip_distance_km": 3.2, "surge_multiplier": 1.25, "pickup_hour": 8.0}
DRIVER = 1001

REGISTER_V2 = program("register_champion_again")


@pytest.fixture(scope="module")
def server() -> Iterator[ServingProcess]:
    demo = checkout_trained_demo()
    assert demo.run(REGISTER_V2, timeout=300)[0] == {"versions": ["1", "2"]}
    env = {**demo.env, "MLOPS_SERVING_ADMIN_TOKEN": TOKEN}
    with serving_process(MODEL, env, demo.root / "serving-v2.log") as served:
        deployed = httpx.post(f"{served.url}/admin/deploy", headers={"Authorization": f"Bearer {TOKEN}"},
                              json={"version": "2", "mode": "canary", "fraction": 0.5}, timeout=120)
        assert deployed.status_code == 200, deployed.text
        yield served


@pytest.fixture(scope="module")
def features(server: ServingProcess) -> dict[str, float]:
    """One full feature row (request features + plausible online feature values) in the served columns' order."""
    meta = httpx.get(f"{server.url}/v2/models/{MODEL}", timeout=10).json()
    online = {"conv_rate": 0.5, "acc_rate": 0.8, "avg_daily_trips": 10.0, "rating": 4.5}
    values = {**REQUEST, **online}
    return {tensor["name"]: values[tensor["name"]] for tensor in meta["inputs"]}


@pytest.fixture(scope="module")
def triton(server: ServingProcess) -> Iterator[Any]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=30)
    yield client
    client.close()


def invocations(server: ServingProcess, features: dict[str, float]) -> float:
    """The same row through MLflow /invocations: the reference prediction (p1 of MLflow's [[p0, p1]])."""
    response = httpx.post(f"{server.url}/invocations", json={"dataframe_records": [features]}, timeout=30)
    assert response.status_code == 200, response.text
    p0, p1 = response.json()["predictions"][0]
    assert p0 + p1 == pytest.approx(1.0)
    return float(p1)


def triton_inputs(features: dict[str, float], binary: bool, rows: int = 2) -> list[Any]:
    import tritonclient.http as httpclient

    tensors = []
    for name, value in features.items():
        tensor = httpclient.InferInput(name, [rows], "FP64")
        tensor.set_data_from_numpy(np.full(rows, value, dtype=np.float64), binary_data=binary)
        tensors.append(tensor)
    return tensors


def json_output() -> list[Any]:
    import tritonclient.http as httpclient

    return [httpclient.InferRequestedOutput("predict_proba", binary_data=False)]


def served_versions(server: ServingProcess) -> list[str]:
    return list(httpx.get(f"{server.url}/v2/models/{MODEL}", timeout=10).json()["versions"])


# ---------------------------------------------------------------------------- tritonclient.http
def test_tritonclient_health_metadata_and_readiness_on_plain_and_versioned_routes(triton: Any,
                                                                                  server: ServingProcess) -> None:
    from tritonclient.utils import InferenceServerException

    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    assert sorted(served_versions(server)) == ["1", "2"]
    assert triton.is_model_ready(MODEL) and triton.is_model_ready(MODEL, "1") and triton.is_model_ready(MODEL, "2")
    assert not triton.is_model_ready(MODEL, "3"), "registered (nothing) but not served here"
    assert not triton.is_model_ready("other_model")
    plain, versioned = triton.get_model_metadata(MODEL), triton.get_model_metadata(MODEL, "2")
    assert plain["name"] == versioned["name"] == MODEL and versioned["inputs"] == plain["inputs"]
    assert plain["outputs"] == [{"name": "predict_proba", "datatype": "FP64", "shape": [-1]}]
    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata(MODEL, "7")
    assert info.value.status() == "404" and "['1', '2']" in info.value.message()


def test_tritonclient_infer_json_matches_invocations(triton: Any, server: ServingProcess,
                                                     features: dict[str, float]) -> None:
    expected = invocations(server, features)
    result = triton.infer(MODEL, triton_inputs(features, binary=False), outputs=json_output(), request_id="t-json")
    answer = result.get_response()
    assert answer["model_name"] == MODEL and answer["id"] == "t-json"
    assert answer["outputs"][0]["datatype"] == "FP64" and answer["outputs"][0]["shape"] == [2]
    assert result.as_numpy("predict_proba").tolist() == pytest.approx([expected, expected])


@pytest.mark.parametrize("version", ["1", "2"])
def test_tritonclient_versioned_infer_is_scored_by_exactly_that_version(triton: Any, server: ServingProcess,
                                                                        features: dict[str, float],
                                                                        version: str) -> None:
    before = pinned_count(server, version)
    rows = 40  # under a 50 % canary, routing 40 rows by id would split them between the versions
    result = triton.infer(MODEL, triton_inputs(features, binary=False, rows=rows), model_version=version,
                          outputs=json_output())
    answer = result.get_response()
    assert answer["model_version"] == version and answer["parameters"]["model_versions"] == [version] * rows
    assert result.as_numpy("predict_proba").tolist() == pytest.approx([invocations(server, features)] * rows)
    assert pinned_count(server, version) == before + 1, "counted under route=\"pinned\", not the canary split"


def pinned_count(server: ServingProcess, version: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    series = f'mlops_serving_requests_total{{model="{MODEL}",route="pinned",status="200",version="{version}"}}'
    return next((float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series)), 0.0)


def test_tritonclient_defaults_binary_inputs_and_binary_outputs(triton: Any, server: ServingProcess,
                                                               features: dict[str, float]) -> None:
    """set_data_from_numpy's default is binary_data=True, and without requested outputs tritonclient asks for
    binary outputs: the binary tensor data extension both ways."""
    expected = invocations(server, features)
    result = triton.infer(MODEL, triton_inputs(features, binary=True))
    output = result.get_output("predict_proba")
    assert output["parameters"] == {"binary_data_size": 16} and "data" not in output
    assert result.as_numpy("predict_proba").tolist() == pytest.approx([expected, expected])
    result = triton.infer(MODEL, triton_inputs(features, binary=True), model_version="2", outputs=json_output())
    assert result.get_response()["model_version"] == "2"
    assert result.as_numpy("predict_proba").tolist() == pytest.approx([expected, expected])


def test_tritonclient_entity_tensors_match_predict(triton: Any, server: ServingProcess) -> None:
    import tritonclient.http as httpclient

    predicted = server.predict([{"driver_id": DRIVER, **REQUEST}])[0]["prediction"]
    driver = httpclient.InferInput("driver_id", [1], "INT64")
    driver.set_data_from_numpy(np.array([DRIVER], dtype=np.int64))
    tensors = [driver]
    for name, value in REQUEST.items():
        tensor = httpclient.InferInput(name, [1], "FP32")
        tensor.set_data_from_numpy(np.array([value], dtype=np.float32), binary_data=False)
        tensors.append(tensor)
    result = triton.infer(MODEL, tensors, model_version="1", outputs=json_output())
    assert result.as_numpy("predict_proba").tolist() == pytest.approx([predicted])


@pytest.mark.parametrize(("call", "status", "named"), [
    (lambda t, i: t.infer(MODEL, i, model_version="3"), "404", "['1', '2']"),
    (lambda t, i: t.infer("other_model", i), "404", "'other_model'"),
    (lambda t, i: t.infer(MODEL, i, outputs=[__import__("tritonclient.http").http.InferRequestedOutput("label")]),
     "400", "outputs[0].name"),
    (lambda t, i: t.infer(MODEL, i, outputs=[__import__("tritonclient.http").http.InferRequestedOutput(
        "predict_proba", class_count=2)]), "400", "classification"),
])
def test_tritonclient_errors_name_the_cause(triton: Any, features: dict[str, float], call: Any, status: str,
                                            named: str) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        call(triton, triton_inputs(features, binary=True))
    assert info.value.status() == status and named in info.value.message(), info.value.message()


def test_model_name_in_the_body_must_agree_with_the_route(server: ServingProcess, features: dict[str, float]) -> None:
    inputs = [{"name": n, "shape": [1], "datatype": "FP64", "data": [v]} for n, v in features.items()]
    url = f"{server.url}/v2/models/{MODEL}/versions/2/infer"
    agree = httpx.post(url, json={"model_name": MODEL, "model_version": "2", "inputs": inputs}, timeout=30)
    assert agree.status_code == 200 and agree.json()["model_version"] == "2"
    clash = httpx.post(url, json={"model_name": MODEL, "model_version": "1", "inputs": inputs}, timeout=30)
    assert clash.status_code == 400 and "'1'" in clash.json()["error"] and "'2'" in clash.json()["error"]
    body_pins = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", content=json.dumps(
        {"model_version": "1", "inputs": inputs}), timeout=30)  # no Content-Type, as tritonclient sends
    assert body_pins.status_code == 200 and body_pins.json()["model_version"] == "1"


# ---------------------------------------------------------------------------- kserve client (own environment)
def test_kserve_rest_client_with_infer_request(server: ServingProcess, features: dict[str, float]) -> None:
    assert KSERVE_PYTHON.exists(), f"{KSERVE_PYTHON} missing: `make install` creates it"
    done = subprocess.run([str(KSERVE_PYTHON), str(PROJECT / "tests/support/kserve_client_calls.py"), server.url,
                           MODEL, json.dumps(features)], capture_output=True, text=True, timeout=180, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    expected = invocations(server, features)
    assert result["server_live"] == result["server_ready"] == result["model_ready"] == {"ok": True}
    for case in ("json", "binary"):
        answer = result[case]["ok"]
        assert (answer["model_name"], answer["id"], answer["output"]) == (MODEL, f"kserve-{case}", "predict_proba")
        assert answer["datatype"] == "FP64" and answer["shape"] == [2]
        assert answer["data"] == pytest.approx([expected, expected])
    assert result["other_name"]["status"] == 400 and "'other_model'" in result["other_name"]["error"]
    assert result["unknown_output"]["status"] == 400 and "outputs[0].name" in result["unknown_output"]["error"]
