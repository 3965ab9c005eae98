"""Serving a multiclass and a regression model: /predict, /invocations against `mlflow models serve`, V2 with
tritonclient, canary and shadow, the prediction log.

On the session's trained demo state (its Feast online store: /predict reads the same online features as
ride_completion), two more registered models are trained on generated rows and registered the way the
training DAG registers a version (support/task_models.py): `ride_length` (multiclass: long / medium /
short) and `ride_fare` (regression). Each is served by the real app under uvicorn in this process (a real
HTTP server, so tritonclient can call it) and, for /invocations parity, by `mlflow models serve` of the
same version as a subprocess. Every answer is checked against the model itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from support.airflow_client import wait_for
from support.airflow_stack import free_port
from support.demo_state import checkout_trained_demo
from support.task_models import DEMO_COLUMNS, MULTICLASS, fit, register

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAMES = {"multiclass": "ride_length", "regression": "ride_fare"}
TOKEN = "tasks-admin-token"
REQUEST = {"trip_distance_km": 3.2, "surge_multiplier": 1.25, "pickup_hour": 8}
ROWS = [[3.2, 1.25, 8, 0.5, 0.8, 10, 4.5], [1.5, 1.0, 23, 0.1, 0.2, 3, 4.9], [-0.4, 0.3, 1, 0.9, 0.99, 0, 0.2]]
COLUMNS = list(DEMO_COLUMNS)
JSON_CT = "application/json"


def spec_of(task: str) -> Any:
    """The demo spec with another name and task (metrics: the task's defaults)."""
    from airflow_mlops.config import models_dir
    from airflow_mlops.core.spec import ModelSpec

    data = yaml.safe_load((models_dir() / "ride_completion.yaml").read_text())
    data = {**data, "name": NAMES[task], "task": task, "evaluation": {}, "monitoring": {}}
    spec = ModelSpec.model_validate(data)
    return spec.model_copy(update={"serving": spec.serving.model_copy(update={"poll_seconds": 0.3})})


class Served:
    """The serving app of one model under uvicorn in a thread, and its prediction log."""

    def __init__(self, task: str, root: Path) -> None:
        import uvicorn

        from airflow_mlops.serving.app import create_app
        from airflow_mlops.serving.prediction_log import PredictionLog

        self.task = task
        self.log_dir = root / f"log-{task}"
        self.log = PredictionLog(self.log_dir, flush_seconds=0.2)
        self.port = free_port()
        app = create_app(spec_of(task), prediction_log=self.log)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{task}", daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), 180, f"the {task} app to start",
                 interval=0.2)
        assert self.server.started, f"the {task} app did not start (see the captured log)"
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=60, **kwargs)

    def logged(self, request_id: str, rows: int) -> pd.DataFrame:
        """The prediction log's rows of one request (waits until all are written)."""
        from airflow_mlops.core.prediction_window import read_prediction_window

        def read() -> list[pd.DataFrame] | None:
            self.log.flush()
            now = datetime.now(UTC)
            frame = read_prediction_window(NAMES[self.task], now - timedelta(hours=1), now + timedelta(hours=1),
                                           directory=self.log_dir).frame
            mine = frame[frame["request_id"].str.startswith(request_id)]
            return [mine.reset_index(drop=True)] if len(mine) >= rows else None

        found: pd.DataFrame = wait_for(read, 30, f"{rows} logged rows of {request_id}", interval=0.2)[0]
        return found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    demo = checkout_trained_demo()
    root = tmp_path_factory.mktemp("serving-tasks")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_FEAST_ONLINE_STORE",
                     "AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW_CONN_FEAST_DEFAULT"):
            mp.delenv(name, raising=False)
        mp.setenv("MLOPS_HOME", str(demo.home))
        mp.setenv("MLOPS_SERVING_ADMIN_TOKEN", TOKEN)
        models = {task: fit(task) for task in NAMES}
        versions = {task: register(models[task], NAMES[task], task) for task in NAMES}
        mlflow = {task: _mlflow_serve(demo, NAMES[task], root / f"mlflow-{task}.log") for task in NAMES}
        apps = {task: Served(task, root) for task in NAMES}
        try:
            for task, (proc, url, log) in mlflow.items():
                wait_for(lambda p=proc, u=url, lg=log: _pinged(p, u, lg), 240, f"mlflow models serve of {task}",
                         interval=0.5)
            yield {"models": models, "versions": versions, "apps": apps, "mlflow": {t: m[1] for t, m in mlflow.items()},
                   "demo": demo}
        finally:
            for app in apps.values():
                app.stop()
                app.log.close()
            for proc, _, _ in mlflow.values():
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _mlflow_serve(demo: Any, name: str, log: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`mlflow models serve` of the champion, as a user runs it (started here, awaited by the fixture)."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**demo.env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{demo.home / 'mlflow' / 'mlflow.db'}"}
    with log.open("w") as out:
        proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion",
                                 "--env-manager", "local", "--port", str(port), "--workers", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}", log


def _pinged(proc: subprocess.Popen[bytes], url: str, log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"mlflow models serve exited {proc.returncode}: {log.read_text()[-3000:]}")
    try:
        return httpx.get(f"{url}/ping", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def frame(features: pd.DataFrame) -> pd.DataFrame:
    return features[COLUMNS].astype("float64")


# ---------------------------------------------------------------------------- /predict
def test_predict_answers_the_class_and_its_probabilities_for_multiclass(world: dict[str, Any]) -> None:
    app, model = world["apps"]["multiclass"], world["models"]["multiclass"]
    response = app.post("/predict", {"request_id": "mc-predict",
                                     "entities": [{"driver_id": d, **REQUEST} for d in (1001, 1002, 1003)]})
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert [list(r) for r in rows] == [["prediction", "probabilities", "model_version", "route", "request_id",
                                        "entity"]] * 3
    logged = app.logged("mc-predict", 3)
    proba = model.predict_proba(frame(logged))  # the model itself on the features the app scored
    for row, expected, p in zip(rows, model.predict(frame(logged)), proba, strict=True):
        assert row["prediction"] == expected and list(row["probabilities"]) == list(MULTICLASS)
        assert list(row["probabilities"].values()) == pytest.approx(p.tolist(), abs=1e-12)
        assert row["model_version"] == world["versions"]["multiclass"]
    assert logged["predicted_class"].tolist() == [r["prediction"] for r in rows]
    assert logged[["proba_long", "proba_medium", "proba_short"]].to_numpy() == pytest.approx(proba, abs=1e-12)


def test_predict_answers_the_value_for_regression(world: dict[str, Any]) -> None:
    app, model = world["apps"]["regression"], world["models"]["regression"]
    response = app.post("/predict", {"request_id": "reg-predict",
                                     "entities": [{"driver_id": d, **REQUEST} for d in (1001, 1002)]})
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert [list(r) for r in rows] == [["prediction", "model_version", "route", "request_id", "entity"]] * 2
    logged = app.logged("reg-predict", 2)
    assert [r["prediction"] for r in rows] == pytest.approx(model.predict(frame(logged)).tolist(), abs=1e-9)
    assert logged["prediction"].tolist() == [r["prediction"] for r in rows]
    assert "predicted_class" not in logged.columns


# ---------------------------------------------------------------------------- /invocations parity
def split(rows: list[list[Any]], columns: list[str] = COLUMNS) -> dict[str, Any]:
    return {"dataframe_split": {"columns": columns, "data": rows}}


def csv(rows: list[list[Any]]) -> str:
    return "\n".join([",".join(COLUMNS), *(",".join(str(v) for v in r) for r in rows)]) + "\n"


BODIES: list[tuple[str, str, str]] = [
    ("split", json.dumps(split(ROWS)), JSON_CT),
    ("records", json.dumps({"dataframe_records": [dict(zip(COLUMNS, r, strict=True)) for r in ROWS]}), JSON_CT),
    ("instances of arrays", json.dumps({"instances": ROWS}), JSON_CT),
    ("csv", csv(ROWS), "text/csv"),
    ("missing column", json.dumps(split([r[1:] for r in ROWS], COLUMNS[1:])), JSON_CT),
]


def same(ours: Any, theirs: Any, path: str = "") -> None:
    """Equal JSON, floats to 1e-12 (numpy and sklearn differ in the last bits); tracebacks not compared."""
    if isinstance(theirs, float) and isinstance(ours, float):
        assert ours == pytest.approx(theirs, abs=1e-12, rel=1e-12), path
    elif isinstance(theirs, dict) and isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), path
        for key in theirs.keys() - {"stack_trace", "message"}:
            same(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(theirs, list) and isinstance(ours, list):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            same(a, b, f"{path}[{i}]")
    else:
        assert ours == theirs, path


@pytest.mark.parametrize("task", list(NAMES))
@pytest.mark.parametrize(("case", "body", "content_type"), BODIES, ids=[b[0] for b in BODIES])
def test_invocations_answer_as_mlflow_models_serve(world: dict[str, Any], task: str, case: str, body: str,
                                                   content_type: str) -> None:
    headers = {"Content-Type": content_type}
    theirs = httpx.post(f"{world['mlflow'][task]}/invocations", content=body.encode(), headers=headers, timeout=30)
    mine = httpx.post(f"{world['apps'][task].url}/invocations", content=body.encode(), headers=headers, timeout=30)
    assert mine.status_code == theirs.status_code, (case, mine.text, theirs.text)
    same(mine.json(), theirs.json(), case)
    if theirs.status_code == 200:
        model = world["models"][task]
        x = pd.DataFrame(ROWS, columns=COLUMNS, dtype="float64")
        want = model.predict(x).tolist() if task == "regression" else model.predict_proba(x).tolist()
        assert np.array(mine.json()["predictions"]) == pytest.approx(np.array(want), abs=1e-9)


# ---------------------------------------------------------------------------- KServe V2 with tritonclient
def test_tritonclient_reads_the_outputs_of_each_task(world: dict[str, Any]) -> None:
    import tritonclient.http as httpclient

    x = pd.DataFrame(ROWS, columns=COLUMNS, dtype="float64")
    for task, name in NAMES.items():
        app, model = world["apps"][task], world["models"][task]
        client = httpclient.InferenceServerClient(f"127.0.0.1:{app.port}", network_timeout=30)
        try:
            meta = client.get_model_metadata(name)
            inputs = []
            for column in COLUMNS:
                tensor = httpclient.InferInput(column, [len(ROWS)], "FP64")
                tensor.set_data_from_numpy(x[column].to_numpy(), binary_data=True)
                inputs.append(tensor)
            result = client.infer(name, inputs)  # no outputs named: every output, as binary data
        finally:
            client.close()
        if task == "regression":
            assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
            assert result.as_numpy("predict") == pytest.approx(model.predict(x), abs=1e-9)
            assert result.as_numpy("predict_proba") is None
            continue
        assert meta["outputs"] == [{"name": "predict", "datatype": "BYTES", "shape": [-1]},
                                   {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}]
        assert meta["parameters"]["classes"] == list(MULTICLASS)
        assert [c.decode() for c in result.as_numpy("predict")] == list(model.predict(x))
        proba = result.as_numpy("predict_proba")
        assert proba.shape == (3, 3) and proba == pytest.approx(model.predict_proba(x), abs=1e-12)
        assert result.get_response()["parameters"]["classes"] == list(MULTICLASS)


# ---------------------------------------------------------------------------- canary, shadow
def admin(app: Served, body: dict[str, Any]) -> httpx.Response:
    return app.post("/admin/deploy", body, headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.mark.parametrize("task", list(NAMES))
def test_shadow_and_canary_of_a_second_version_of_the_same_task(world: dict[str, Any], task: str) -> None:
    app, first = world["apps"][task], world["versions"][task]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(world["demo"].home))
        second = register(fit(task, seed=9), NAMES[task], task, alias=None)
    shadow = admin(app, {"version": second, "mode": "shadow"})
    assert shadow.status_code == 200, shadow.text
    entities = [{"driver_id": d, **REQUEST} for d in range(1001, 1041)]
    assert app.post("/predict", {"request_id": f"{task}-shadow", "entities": entities}).status_code == 200
    logged = app.logged(f"{task}-shadow", 40)
    assert set(logged["shadow_version"]) == {second} and set(logged["model_version"]) == {first}
    assert logged["shadow_prediction"].notna().all()
    canary = admin(app, {"version": second, "mode": "canary", "fraction": 0.5})
    assert canary.status_code == 200, canary.text
    rows = app.post("/predict", {"entities": entities}).json()["predictions"]
    assert {r["route"]: r["model_version"] for r in rows} == {"primary": first, "canary": second}
    if task == "multiclass":
        assert all(r["prediction"] in MULTICLASS and list(r["probabilities"]) == list(MULTICLASS) for r in rows)
    else:
        assert all(isinstance(r["prediction"], float) for r in rows)
    assert admin(app, {"version": first, "mode": "full"}).status_code == 200


def test_a_canary_of_another_task_is_refused_naming_both(world: dict[str, Any]) -> None:
    app = world["apps"]["multiclass"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(world["demo"].home))
        other = register(world["models"]["regression"], NAMES["multiclass"], "regression", alias=None)
    refused = admin(app, {"version": other, "mode": "canary", "fraction": 0.1})
    assert refused.status_code == 409, refused.text
    assert f"v{other} (regression) beside v{world['versions']['multiclass']} (multiclass" in refused.json()["detail"]
    assert app.post("/predict", {"driver_id": 1001, **REQUEST}).json()["predictions"][0]["route"] == "primary"


# ---------------------------------------------------------------------------- batch inference on the demo's Feast
def test_batch_inference_writes_the_class_and_probabilities_of_each_row(world: dict[str, Any]) -> None:
    """The batch operator, real Feast point-in-time join of the demo: the multiclass champion's columns per row."""
    from airflow_mlops.operators.batch import BatchPredictOperator

    spec, model = spec_of("multiclass"), world["models"]["multiclass"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(world["demo"].home))
        lineage = BatchPredictOperator(
            task_id="batch", model_name=spec.name, feature_service=spec.features.feature_service,
            entity_dataset="rides", entity_keys=list(spec.features.entity_keys),
            request_features=list(spec.features.entity_df.request_features), lookback_days=1,
            chunk_rows=1000).execute({"run_id": "manual__tasks"})  # type: ignore[arg-type]
    out = pd.read_parquet(lineage["path"])
    outputs = ["prediction", "proba_long", "proba_medium", "proba_short"]
    assert list(out.columns) == lineage["columns"] and lineage["columns"][-5:] == [*outputs, "model_version"]
    assert len(out) == lineage["rows"] > 0 and lineage["model_version"] == world["versions"]["multiclass"]
    assert set(out["prediction"]) <= set(MULTICLASS)
    proba = out[outputs[1:]].to_numpy()
    assert proba.sum(axis=1) == pytest.approx(np.ones(len(out)))
    assert out["prediction"].tolist() == [MULTICLASS[j] for j in proba.argmax(axis=1)]  # the class is the argmax
    manifest = json.loads(Path(lineage["manifest"]).read_text())
    assert manifest["columns"] == lineage["columns"] and manifest["rows"] == len(out)
    assert list(model.classes_) == list(MULTICLASS)
