"""Which /invocations bodies take the fast path, and the refusals made before MLflow reads a body.

The fast path must only take bodies MLflow would read into exactly the same numbers (the HTTP parity
with a real `mlflow models serve` is tests/integration/test_mlflow_parity.py); everything else goes to
MLflow's own code, so a wrong "None" here costs speed, a wrong table costs correctness.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_mlops.core.predictions import TaskOutput
from airflow_mlops.serving.loaded import LoadedModel
from airflow_mlops.serving.mlflow_compat import Rules, fast_table, mlflow_answer, precheck
from airflow_mlops.serving.protocols import RequestError

pytestmark = pytest.mark.unit

TYPES = {"hour": "long", "distance": "double"}
MODEL = LoadedModel("rides", "3", None, None, ("hour", "distance"), "now", input_types=TYPES)
RULES = Rules(max_rows=3, features=("hour", "distance"), integer_columns=frozenset({"hour"}))
JSON = "application/json"


def table(payload: Any, content_type: str = JSON, model: LoadedModel = MODEL) -> Any:
    return fast_table(payload, content_type, model, ["driver_id"])


def split(*rows: list[Any], columns: tuple[str, ...] = ("hour", "distance")) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(columns), "data": [list(r) for r in rows]}}


@pytest.mark.parametrize("payload", [
    split([8, 3.2]),
    split([8.0, 3]),  # an integral float in a long column, an int in a double column
    split([8, None]),  # null is missing in a double column
    split([3.2, 8], columns=("distance", "hour")),
    split([8, 3.2, 1001], columns=("hour", "distance", "driver_id")),  # extra columns: ignored, as MLflow does
    {"dataframe_records": [{"hour": 8, "distance": 3.2}, {"hour": 9, "distance": 1}]},
])
def test_bodies_mlflow_reads_into_the_same_numbers_take_the_fast_path(payload: dict[str, Any]) -> None:
    got = table(payload)
    assert got is not None
    assert got.values["hour"][0] == 8.0


@pytest.mark.parametrize(("payload", "content_type"), [
    (split([None, 3.2]), JSON),  # null in a long column: MLflow's 400
    (split([True, 3.2]), JSON),  # booleans
    (split(["8", 3.2]), JSON),  # strings MLflow may convert
    (split([2**63, 3.2]), JSON),  # beyond int64
    (split([8, 1e400]), JSON),  # 1e400 parses to inf
    (split([8]), JSON),  # a missing column
    (split([8, 3.2, {"a": 1}], columns=("hour", "distance", "meta")), JSON),  # a non-scalar extra
    ({**split([8, 3.2]), "params": {"x": 1}}, JSON),  # params: MLflow decides
    ({"instances": [{"hour": 8, "distance": 3.2}]}, JSON),
    ({"inputs": {"hour": [8], "distance": [3.2]}}, JSON),
    (split([8, 3.2]), "application/json; charset=latin-1"),
    (split([8, 3.2]), "application/json; format=pandas-split"),
])
def test_every_other_body_goes_to_mlflow(payload: dict[str, Any], content_type: str) -> None:
    assert table(payload, content_type) is None


def test_a_model_logged_with_another_predict_fn_goes_to_mlflow() -> None:
    log_proba = LoadedModel("rides", "3", None, None, ("hour", "distance"), "now", predict_fn="predict_log_proba",
                            input_types=TYPES)
    assert table(split([8, 3.2]), model=log_proba) is None


def test_entity_keys_carried_by_every_row_route_the_rows() -> None:
    got = table(split([8, 3.2, 1001], [9, 1.0, 1002], columns=("hour", "distance", "driver_id")))
    assert got.entities == [{"driver_id": 1001}, {"driver_id": 1002}]
    assert got.where(1, "distance") == "dataframe_split[1].distance"


def test_answers_in_the_shape_of_the_versions_predict_fn() -> None:
    assert mlflow_answer([0.25], MODEL) == [[0.75, 0.25]]
    labels = LoadedModel("rides", "3", None, None, ("hour",), "now", predict_fn="predict",
                         output=TaskOutput("binary", ("no", "yes")))
    assert mlflow_answer([0.25, 0.5, 0.75], labels) == ["no", "no", "yes"]  # argmax; a tie is class 0


@pytest.mark.parametrize(("body", "content_type", "status", "named"), [
    (b'{"dataframe_split": {"columns": ["hour"], "columns": ["hour"], "data": []}}', JSON, 400,
     "dataframe_split.columns"),
    (json.dumps(split([8, 3.2, 1.0], columns=("hour", "distance", "hour"))).encode(), JSON, 400, "'hour'"),
    (json.dumps(split([8.5, 3.2])).encode(), JSON, 400, "dataframe_split[0].hour"),
    (json.dumps({"dataframe_records": [{"hour": 1, "distance": 2}, {"hour": None, "distance": None}]}).encode(),
     JSON, 422, "dataframe_records[1]"),
    (json.dumps({"inputs": {"hour": [1, 2.5], "distance": [1, 1]}}).encode(), JSON, 400, "inputs[1].hour"),
    (json.dumps(split(*[[1, 1]] * 4)).encode(), JSON, 413, "dataframe_split"),
    (b"hour,distance,hour\n1,2,3\n", "text/csv", 400, "'hour'"),
    (b"hour,distance\n1,2\n,\n", "text/csv", 422, "csv[1]"),
    (b"hour,distance\n" + b"1,2\n" * 4, "text/csv", 413, "csv"),
    (b"{}", None, 415, "Content-Type"),
])
def test_deliberate_refusals_come_before_mlflow_reads_the_body(body: bytes, content_type: str | None, status: int,
                                                                named: str) -> None:
    with pytest.raises(RequestError) as refused:
        precheck(body, content_type, RULES)
    assert refused.value.status == status and named in refused.value.message, refused.value.message


@pytest.mark.parametrize(("body", "content_type"), [
    (b"{bad", JSON),  # not JSON: MLflow's own message
    (json.dumps(split()).encode(), JSON),  # no rows: MLflow's answer
    (json.dumps({"dataframe_records": [{"hour": None, "other": 1}]}).encode(), JSON),  # a schema mismatch
    (b"<xml/>", "text/xml"),
    (b"hour,distance\n1,\n", "text/csv"),
])
def test_what_mlflow_answers_itself_passes_the_precheck(body: bytes, content_type: str) -> None:
    precheck(body, content_type, RULES)


def test_empty_rows_pass_when_the_spec_allows_them() -> None:
    allowed = Rules(3, ("hour", "distance"), frozenset({"hour"}), allow_empty_rows=True)
    precheck(json.dumps({"dataframe_records": [{"hour": None, "distance": None}]}).encode(), JSON, allowed)
