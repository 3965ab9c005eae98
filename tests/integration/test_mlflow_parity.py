"""`/invocations` answers what `mlflow models serve` answers, for the same registered version and body.

Both servers run on the session's trained demo model (support/demo_state: the real training DAG logged
it, with the training set's column types in its signature and pyfunc_predict_fn="predict_proba"):
MLflow's own scoring server as a subprocess (`mlflow models serve --env-manager local`), ours in this
process (TestClient over the same ASGI app `airflow-mlops serve` runs). Each body of the corpus goes to
both; the answers must agree: same status, same JSON (numbers to 1e-12: our compiled/numpy scoring and
sklearn's differ in the last bits), same error_code for refusals. The deliberate differences (refusals of
what MLflow takes silently) are a separate, named list, each asserted for both servers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.airflow_client import wait_for
from support.airflow_stack import free_port
from support.demo_state import checkout_trained_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MODEL = "ride_completion"
REQUEST = {"trip_distance_km": 3.2, "surge_multiplier": 1.25, "pickup_hour": 8}
ONLINE = {"conv_rate": 0.5, "acc_rate": 0.8, "avg_daily_trips": 10, "rating": 4.5}
FEATURES = {**REQUEST, **ONLINE}
COLUMNS = list(FEATURES)
ROWS = [list(FEATURES.values()), [1.5, 1.0, 23, 0.1, 0.2, 3, 4.9], [12.0, 2.5, 0, 0.9, 0.99, 40, 3.3]]
JSON_CT = "application/json"


def split(rows: list[list[Any]], columns: list[str] = COLUMNS, **extra: Any) -> dict[str, Any]:
    return {"dataframe_split": {"columns": columns, "data": rows, **extra}}


def records(rows: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


def csv(rows: list[list[Any]], columns: list[str] = COLUMNS) -> str:
    return "\n".join([",".join(columns), *(",".join("" if v is None else str(v) for v in r) for r in rows)]) + "\n"


def as_json(value: Any) -> tuple[str, str]:
    return json.dumps(value), JSON_CT


# (case, body, content type): what MLflow accepts or refuses, answered the same by both servers
SAME: list[tuple[str, str, str | None]] = [
    ("split one row", *as_json(split(ROWS[:1]))),
    ("split three rows", *as_json(split(ROWS))),
    ("split with index", *as_json(split(ROWS, index=[7, 8, 9]))),
    ("split columns reordered", *as_json(split([r[::-1] for r in ROWS], COLUMNS[::-1]))),
    ("split extra column ignored", *as_json(split([[*r, 1001] for r in ROWS], [*COLUMNS, "driver_id"]))),
    ("split float for an integer column", *as_json(split([[3.2, 1.25, 8.0, 0.5, 0.8, 10.0, 4.5]]))),
    ("split int for a float column", *as_json(split([[3, 1, 8, 0, 1, 10, 4]]))),
    ("split null in a float column", *as_json(split([[None, 1.25, 8, 0.5, 0.8, 10, 4.5]]))),
    ("split null in an integer column", *as_json(split([[3.2, 1.25, None, 0.5, 0.8, 10, 4.5]]))),
    ("split NaN token", json.dumps(split(ROWS[:1])).replace("3.2", "NaN"), JSON_CT),
    ("split Infinity token", json.dumps(split(ROWS[:1])).replace("3.2", "Infinity"), JSON_CT),
    ("split string number", *as_json(split([["3.2", 1.25, 8, 0.5, 0.8, 10, 4.5]]))),
    ("split text value", *as_json(split([["far", 1.25, 8, 0.5, 0.8, 10, 4.5]]))),
    ("split boolean value", *as_json(split([[True, 1.25, 8, 0.5, 0.8, 10, 4.5]]))),
    ("split missing column", *as_json(split([r[1:] for r in ROWS], COLUMNS[1:]))),
    ("split ragged row", *as_json(split([ROWS[0][:3]]))),
    ("split no data", *as_json(split([]))),
    ("records", *as_json({"dataframe_records": records(ROWS)})),
    ("records missing key in a row", *as_json({"dataframe_records": [records(ROWS)[0], {"rating": 4.0}]})),
    ("instances of objects", *as_json({"instances": records(ROWS)})),
    ("instances of arrays", *as_json({"instances": ROWS})),
    ("inputs of columns", *as_json({"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(COLUMNS)}})),
    ("inputs of objects", *as_json({"inputs": records(ROWS)})),
    ("inputs of arrays", *as_json({"inputs": ROWS})),
    ("params ignored", *as_json({**split(ROWS), "params": {"threshold": 0.3}})),
    ("unknown top-level key", *as_json({**split(ROWS), "meta": 1})),
    ("no format key", *as_json({"rows": ROWS})),
    ("two format keys", *as_json({**split(ROWS), "dataframe_records": records(ROWS)})),
    ("top-level array", *as_json([records(ROWS)])),
    ("not JSON", "{bad", JSON_CT),
    ("charset utf-8", json.dumps(split(ROWS)), "application/json; charset=utf-8"),
    ("charset latin-1", json.dumps(split(ROWS)), "application/json; charset=latin-1"),
    ("unknown content parameter", json.dumps(split(ROWS)), "application/json; format=pandas-split"),
    ("unknown content type", json.dumps(split(ROWS)), "text/plain"),
    ("csv", csv(ROWS), "text/csv"),
    ("csv columns reordered", csv([r[::-1] for r in ROWS], COLUMNS[::-1]), "text/csv"),
    ("csv empty float field", csv([[None, 1.25, 8, 0.5, 0.8, 10, 4.5]]), "text/csv"),
    ("csv text value", csv([["far", 1.25, 8, 0.5, 0.8, 10, 4.5]]), "text/csv"),
    ("csv missing column", csv([r[1:] for r in ROWS], COLUMNS[1:]), "text/csv"),
]

# (case, body, content type, our status, what our message names): refusals of what MLflow takes without a word
DIFFERENT: list[tuple[str, str, str | None, int, str]] = [
    ("key repeated in an object", '{"dataframe_split": {"columns": ["a"], "columns": ' + json.dumps(COLUMNS)
     + ', "data": ' + json.dumps(ROWS) + "}}", JSON_CT, 400, "dataframe_split.columns"),
    ("column named twice", *as_json(split([[*ROWS[0], 9.9]], [*COLUMNS, "rating"])), 400, "'rating'"),
    ("csv column named twice", csv([[*ROWS[0], 9.9]], [*COLUMNS, "rating"]), "text/csv", 400, "'rating'"),
    ("fraction in an integer column", *as_json(split([[3.2, 1.25, 8.5, 0.5, 0.8, 10, 4.5]])), 400,
     "dataframe_split[0].pickup_hour"),
    ("every feature null", *as_json(split([[None] * len(COLUMNS)])), 422, "dataframe_split[0]"),
    ("too many rows", *as_json(split(ROWS[:1] * 1001)), 413, "dataframe_split"),
    ("no Content-Type", json.dumps(split(ROWS)), None, 415, "Content-Type"),
]


@pytest.fixture(scope="module")
def demo() -> Any:
    return checkout_trained_demo()


@pytest.fixture(scope="module")
def mlflow_server(demo: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow models serve` of the champion, as a user runs it (its readiness probe: GET /ping)."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**demo.env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{demo.home / 'mlflow' / 'mlflow.db'}"}
    log = tmp_path_factory.mktemp("mlflow-serve") / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion",
                                 "--env-manager", "local", "--port", str(port), "--workers", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow models serve exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/ping", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 240, "mlflow models serve to answer /ping", interval=0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def ours(demo: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from airflow_mlops.serving.app import create_app, load_spec
    from airflow_mlops.serving.prediction_log import PredictionLog

    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_FEAST_ONLINE_STORE",
                     "AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW_CONN_FEAST_DEFAULT"):
            mp.delenv(name, raising=False)
        mp.setenv("MLOPS_HOME", str(demo.home))
        app = create_app(load_spec(MODEL), prediction_log=PredictionLog(demo.root / "parity-predictions",
                                                                        flush_seconds=0.2))
        with TestClient(app) as client:
            yield client


def post(client: Any, body: str, content_type: str | None) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return client.post("/invocations", content=body.encode(), headers=headers)


def answer(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def unordered_sets(text: str) -> str:
    return re.sub(r"\{('[^{}]*')\}", lambda m: "{" + ", ".join(sorted(m.group(1).split(", "))) + "}", text)


def same(ours: Any, theirs: Any, path: str = "") -> None:
    """Equal JSON, floats to 1e-12; an error's message may differ only where it echoes MLflow's own traceback."""
    if isinstance(theirs, float) and isinstance(ours, float):
        assert ours == pytest.approx(theirs, abs=1e-12, rel=1e-12), path
    elif isinstance(theirs, dict) and isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), path
        for key in theirs:
            if key == "stack_trace":  # tracebacks name each process' own paths and lines
                continue
            if key == "message":  # MLflow prints Python sets: their order follows each process' hash seed
                assert unordered_sets(ours[key]) == unordered_sets(theirs[key]), f"{path}.{key}"
                continue
            same(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(theirs, list) and isinstance(ours, list):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            same(a, b, f"{path}[{i}]")
    else:
        assert ours == theirs, path


@pytest.mark.parametrize(("case", "body", "content_type"), SAME, ids=[c[0] for c in SAME])
def test_invocations_answers_as_mlflow_models_serve(mlflow_server: str, ours: Any, case: str, body: str,
                                                    content_type: str | None) -> None:
    theirs = httpx.post(f"{mlflow_server}/invocations", content=body.encode(),
                        headers={"Content-Type": content_type} if content_type else {}, timeout=30)
    mine = post(ours, body, content_type)
    assert mine.status_code == theirs.status_code, (case, mine.text, theirs.text)
    assert mine.headers["content-type"].split(";")[0] == theirs.headers["content-type"].split(";")[0], case
    same(answer(mine), answer(theirs), case)


@pytest.mark.parametrize(("case", "body", "content_type", "status", "named"), DIFFERENT,
                         ids=[c[0] for c in DIFFERENT])
def test_deliberate_differences_are_refusals_naming_the_problem(mlflow_server: str, ours: Any, case: str, body: str,
                                                               content_type: str | None, status: int,
                                                               named: str) -> None:
    theirs = httpx.post(f"{mlflow_server}/invocations", content=body.encode(),
                        headers={"Content-Type": content_type} if content_type else {}, timeout=30)
    mine = post(ours, body, content_type)
    assert mine.status_code == status, (case, mine.text)
    assert named in mine.json()["message"], (case, mine.json())
    # MLflow takes it (200), or refuses it in other words (column named twice: a schema-enforcement error)
    assert (theirs.status_code, answer(theirs)) != (mine.status_code, mine.json()), case


def test_status_routes_answer_as_mlflow(mlflow_server: str, ours: Any) -> None:
    for path in ("/ping", "/version"):
        theirs, mine = httpx.get(f"{mlflow_server}{path}", timeout=10), ours.get(path)
        assert (mine.status_code, mine.text) == (theirs.status_code, theirs.text), path
    assert ours.get("/health").status_code == httpx.get(f"{mlflow_server}/health", timeout=10).status_code


def test_mlflow_paths_are_logged_like_fast_ones(ours: Any, demo: Any) -> None:
    """A CSV body (MLflow's own parser) lands in the prediction log like a dataframe_split one."""
    for rid, body, content_type in (("parity-csv", csv(ROWS), "text/csv"),
                                    ("parity-split", json.dumps(split(ROWS)), JSON_CT)):
        response = ours.post("/invocations", content=body.encode(),
                             headers={"Content-Type": content_type, "X-Request-ID": rid})
        assert response.status_code == 200, response.text

    def logged() -> dict[str, list[float]]:
        import pandas as pd

        files = list((demo.root / "parity-predictions").rglob("*.parquet"))
        rows = pd.concat([pd.read_parquet(f) for f in files]).to_dict("records") if files else []
        scores: dict[str, list[float]] = {}
        for row in rows:
            if row["request_id"].startswith("parity-"):
                scores.setdefault(row["request_id"].rsplit("-", 1)[0], []).append(row["prediction"])
        return scores if sum(map(len, scores.values())) >= 6 else {}

    scores = wait_for(logged, 30, "six /invocations rows in the prediction log", interval=0.2)
    assert sorted(scores) == ["parity-csv", "parity-split"]
    assert scores["parity-csv"] == pytest.approx(scores["parity-split"], abs=1e-12)


def test_pyfunc_takes_the_rows_a_user_has(demo: Any) -> None:
    """The logged signature has the training set's own types: an int64 frame goes through mlflow.pyfunc."""
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{demo.home / 'mlflow' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    frame = pd.DataFrame(records(ROWS)).astype({"pickup_hour": "int64", "avg_daily_trips": "int64"})
    proba = model.predict(frame)
    assert proba.shape == (3, 2) and ((proba >= 0) & (proba <= 1)).all()
    types = {s.name: s.type.name for s in model.metadata.get_input_schema().inputs}
    assert types["pickup_hour"] == "long" and types["rating"] == "double", types
