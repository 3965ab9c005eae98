"""Request parsing of the serving app: /predict rows, MLflow /invocations, KServe V2, /admin/deploy.

Pure parsing: no model, no Feast, no server (the app's behaviour on the same inputs is in
tests/integration/test_serving_app.py).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from airflow_mlops.serving.kserve import infer_response, model_metadata, parse_infer
from airflow_mlops.serving.protocols import (
    MAX_BODY_BYTES,
    EntitySchema,
    RequestError,
    load_json,
    media_type,
    parse_deploy,
    parse_invocations,
    parse_predict,
)

pytestmark = pytest.mark.unit

SCHEMA = EntitySchema(keys={"driver_id": "int"}, request_features=("trip_distance_km", "surge_multiplier"),
                      online_features=("conv_rate", "rating"), max_rows=5)
COLUMNS = ["trip_distance_km", "surge_multiplier", "conv_rate", "rating"]
ROW = {"driver_id": 1001, "trip_distance_km": 3.2, "surge_multiplier": 1}


def refused(call: Any, *args: Any, **kwargs: Any) -> RequestError:
    with pytest.raises(RequestError) as info:
        call(*args, **kwargs)
    return info.value


def invocations(payload: Any, content_type: str = "application/json", **kwargs: Any) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    options = {"wanted": COLUMNS, "positional": COLUMNS, "entity_keys": ["driver_id"], "max_rows": 5, **kwargs}
    return parse_invocations(body, content_type, **options)


# ---------------------------------------------------------------------------- /predict
def test_single_row_and_envelope_parse_to_the_same_rows() -> None:
    one = parse_predict(dict(ROW), SCHEMA)
    many = parse_predict({"entities": [ROW, {**ROW, "driver_id": 1002}], "request_id": "req-1"}, SCHEMA)
    assert one.entities == [{"driver_id": 1001}] and one.request_values == {"trip_distance_km": [3.2],
                                                                             "surge_multiplier": [1.0]}
    assert one.row_ids == [one.request_id] and len(one.request_id) == 36  # a uuid4
    assert many.request_id == "req-1" and many.row_ids == ["req-1-0", "req-1-1"]
    assert many.entities == [{"driver_id": 1001}, {"driver_id": 1002}]


def test_request_ids_come_from_the_body_then_the_header_then_a_uuid() -> None:
    assert parse_predict({**ROW, "request_id": "a.b"}, SCHEMA, header_id="hdr").request_id == "a.b"
    assert parse_predict(dict(ROW), SCHEMA, header_id="hdr").request_id == "hdr"
    rows = [{**ROW, "request_id": "mine"}, ROW]
    assert parse_predict({"entities": rows, "request_id": "r"}, SCHEMA).row_ids == ["mine", "r-1"]


def test_huge_and_negative_numbers_are_allowed_within_their_types() -> None:
    batch = parse_predict({"driver_id": -(2**63), "trip_distance_km": 1e300, "surge_multiplier": -5}, SCHEMA)
    assert batch.entities == [{"driver_id": -(2**63)}] and batch.request_values["trip_distance_km"] == [1e300]


PREDICT_REFUSED = [
    ([1, 2], 422, "body"),
    ("text", 422, "body"),
    ({"trip_distance_km": 3.2, "surge_multiplier": 1.0}, 422, "driver_id"),
    ({**ROW, "driver_id": "abc"}, 422, "driver_id"),
    ({**ROW, "driver_id": 1001.5}, 422, "driver_id"),
    ({**ROW, "driver_id": True}, 422, "driver_id"),
    ({**ROW, "driver_id": 2**63}, 422, "driver_id"),
    ({**ROW, "trip_distance_km": None}, 422, "trip_distance_km"),
    ({**ROW, "trip_distance_km": "3.2"}, 422, "trip_distance_km"),
    ({**ROW, "trip_distance_km": math.nan}, 422, "trip_distance_km"),
    ({**ROW, "trip_distance_km": math.inf}, 422, "trip_distance_km"),
    ({**ROW, "trip_distance_km": 10**400}, 422, "trip_distance_km"),
    ({"driver_id": 1001, "trip_distance_km": 3.2}, 422, "surge_multiplier"),
    ({**ROW, "colour": "red"}, 422, "colour"),
    ({**ROW, "conv_rate": 0.5}, 422, "conv_rate"),
    ({**ROW, "trip_distance_km": {"nested": [1]}}, 422, "trip_distance_km"),
    ({**ROW, "request_id": "has space"}, 422, "request_id"),
    ({"entities": []}, 422, "entities"),
    ({"entities": {"driver_id": 1}}, 422, "entities"),
    ({"entities": [ROW, [1001]]}, 422, "entities[1]"),
    ({"entities": [ROW, {**ROW, "driver_id": "x"}]}, 422, "entities[1].driver_id"),
    ({"entities": [ROW], "extra": 1}, 422, "extra"),
    ({"entities": [ROW] * 6}, 413, "entities"),
]


@pytest.mark.parametrize(("payload", "status", "field"), PREDICT_REFUSED)
def test_predict_refuses_bad_rows_naming_the_field(payload: Any, status: int, field: str) -> None:
    error = refused(parse_predict, payload, SCHEMA)
    assert (error.status, error.field) == (status, field)
    assert field in error.message


def test_an_online_feature_in_the_request_is_explained() -> None:
    error = refused(parse_predict, {**ROW, "conv_rate": 0.5}, SCHEMA)
    assert "online feature" in error.message and "/invocations" in error.message


@pytest.mark.parametrize(("body", "status", "text"), [
    (b"", 400, "empty"), (b"  \n", 400, "empty"), (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe\x00garbage", 400, "not valid JSON"), (b"[" * 100_000, 400, "nested too deeply"),
    (b"1" * 5000, 400, "not valid JSON"), (b" " * (MAX_BODY_BYTES + 1), 413, "limit"),
])
def test_unreadable_bodies(body: bytes, status: int, text: str) -> None:
    error = refused(load_json, body)
    assert error.status == status and error.field == "body" and text in error.message


def test_content_types() -> None:
    assert media_type("application/json; charset=utf-8", ["application/json"]) == "application/json"
    assert media_type("application/vnd.api+json", ["application/json"]) == "application/json"
    for bad in (None, "text/plain", "application/x-www-form-urlencoded"):
        error = refused(media_type, bad, ["application/json"])
        assert error.status == 415 and "Content-Type" in error.message


# ---------------------------------------------------------------------------- /invocations
def test_every_mlflow_input_format_gives_the_same_table() -> None:
    rows = [[3.2, 1.0, 0.5, 4.1], [7.0, 2.0, None, 4.9]]
    records = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    formats = [
        {"dataframe_split": {"columns": COLUMNS, "data": rows, "index": [0, 1]}},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": rows},
        {"inputs": {c: [r[i] for r in rows] for i, c in enumerate(COLUMNS)}},
    ]
    tables = [invocations(payload) for payload in formats]
    csv_body = (b"trip_distance_km,surge_multiplier,conv_rate,rating,ignored\n3.2,1,0.5,4.1,x\n7,2,,4.9,y\n")
    tables.append(invocations(csv_body, "text/csv"))
    for table in tables:
        assert table.rows == 2 and list(table.values) == COLUMNS
        assert table.values["conv_rate"][0] == 0.5 and math.isnan(table.values["conv_rate"][1])
        assert table.values["rating"] == [4.1, 4.9]


def test_extra_columns_are_ignored_and_entity_keys_kept_for_routing() -> None:
    table = invocations({"dataframe_records": [{**dict.fromkeys(COLUMNS, 1.0), "driver_id": 7, "note": "x"}]})
    assert list(table.values) == COLUMNS and table.entities == [{"driver_id": 7}]
    assert invocations({"inputs": [[1, 2, 3, 4]]}).entities is None


INVOCATIONS_REFUSED = [
    ([1, 2], 400, "body"),
    ({"dataframe_records": [], "instances": []}, 400, "body"),
    ({"data": [[1]]}, 400, "body"),
    ({"dataframe_records": [{c: 1 for c in COLUMNS}], "params": {"x": 1}}, 400, "params"),
    ({"dataframe_split": [[1, 2]]}, 400, "dataframe_split"),
    ({"dataframe_split": {"columns": "a,b", "data": []}}, 400, "dataframe_split.columns"),
    ({"dataframe_split": {"columns": COLUMNS, "data": [[1, 2]]}}, 400, "dataframe_split.data[0]"),
    ({"dataframe_records": [{c: 1 for c in COLUMNS}, {"rating": 1}]}, 400, "dataframe_records[1].trip_distance_km"),
    ({"dataframe_records": [{**{c: 1 for c in COLUMNS}, "rating": "high"}]}, 400, "dataframe_records[0].rating"),
    ({"dataframe_records": [{**{c: 1 for c in COLUMNS}, "rating": math.inf}]}, 400, "dataframe_records[0].rating"),
    ({"dataframe_records": "rows"}, 400, "dataframe_records"),
    ({"dataframe_records": [[1, 2, 3, 4]]}, 400, "dataframe_records[0]"),
    ({"instances": [[1, 2, 3]]}, 400, "instances[0]"),
    ({"inputs": {"a": [1], "b": [1, 2]}}, 400, "inputs"),
    ({"dataframe_records": []}, 400, "dataframe_records"),
    ({"instances": [[1, 2, 3, 4]] * 6}, 413, "instances"),
]


@pytest.mark.parametrize(("payload", "status", "field"), INVOCATIONS_REFUSED)
def test_invocations_refuses_bad_shapes_naming_the_field(payload: Any, status: int, field: str) -> None:
    error = refused(invocations, payload)
    assert (error.status, error.field) == (status, field)
    assert field in error.message


@pytest.mark.parametrize(("body", "field"), [
    (b"", "csv"), (b"a,b\n1,2,3\n", "csv line 2"), (b"trip_distance_km\nabc\n", "csv[0].trip_distance_km"),
])
def test_invocations_refuses_bad_csv(body: bytes, field: str) -> None:
    error = refused(invocations, body, "text/csv")
    assert error.status == 400 and error.field == field and field in error.message


def test_invocations_content_type() -> None:
    assert refused(invocations, {"inputs": [[1, 2, 3, 4]]}, "text/plain").status == 415


# ---------------------------------------------------------------------------- KServe V2
def tensor(name: str, data: list[Any], datatype: str = "FP64", shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


def v2(payload: Any) -> Any:
    return parse_infer(payload, wanted=COLUMNS, positional=COLUMNS, schema=SCHEMA)


def test_v2_feature_tensors_matrix_and_entity_tensors() -> None:
    columns = v2({"id": "r1", "inputs": [tensor(c, [1.0, 2.0]) for c in COLUMNS]
                  + [tensor("driver_id", [5, 6], "INT64")]})
    assert columns.id == "r1" and columns.table is not None and columns.table.rows == 2
    assert columns.table.entities == [{"driver_id": 5}, {"driver_id": 6}]
    matrix = v2({"inputs": [tensor("input-0", [[1, 2, 3, 4], [5, 6, 7, 8]], "FP32", [2, 4])]})
    assert matrix.table is not None and matrix.table.values["conv_rate"] == [3.0, 7.0]
    flat = v2({"inputs": [tensor("input-0", [1, 2, 3, 4, 5, 6, 7, 8], "FP32", [2, 4])]})
    assert flat.table is not None and flat.table.values == matrix.table.values
    entities = v2({"inputs": [tensor("driver_id", [1001], "INT64"), tensor("trip_distance_km", [3.2]),
                              tensor("surge_multiplier", [[1]], "INT32", [1, 1])]})
    assert entities.batch is not None and entities.batch.entities == [{"driver_id": 1001}]
    assert entities.batch.request_values == {"trip_distance_km": [3.2], "surge_multiplier": [1.0]}


V2_REFUSED = [
    ([], "body"),
    ({"inputs": [], "model": "x"}, "body"),
    ({"inputs": []}, "inputs"),
    ({"inputs": [[1, 2]]}, "inputs[0]"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1], "extra": 1}]}, "inputs[0]"),
    ({"inputs": [tensor("", [1])]}, "inputs[0].name"),
    ({"inputs": [tensor("a", [1], shape=[-1])]}, "inputs[0].shape"),
    ({"inputs": [tensor("a", [1], "FLOAT64")]}, "inputs[0].datatype"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": 1}]}, "inputs[0].data"),
    ({"inputs": [tensor("a", [1, 2], shape=[3])]}, "inputs[0].data"),
    ({"inputs": [tensor("a", [[1, [2]]], shape=[1, 2])]}, "inputs[0].data"),
    ({"inputs": [tensor("a", [1]), tensor("a", [1])]}, "inputs[1].name"),
    ({"inputs": [tensor("unknown", [1])]}, "inputs"),
    ({"inputs": [tensor("x", [1, 2, 3], shape=[1, 3])]}, "inputs[0].shape"),
    ({"inputs": [tensor(c, [1.0]) for c in COLUMNS] + [tensor("colour", [1])]}, "inputs[4]"),
    ({"inputs": [tensor(c, [1.0] * (2 if c == "rating" else 1)) for c in COLUMNS]}, "inputs"),
    ({"inputs": [tensor(c, ["a"], "BYTES") for c in COLUMNS]}, "inputs[0].datatype"),
    ({"inputs": [tensor(c, [True], "BOOL") for c in COLUMNS]}, "inputs[0].datatype"),
    ({"inputs": [tensor(c, [1.0]) for c in COLUMNS], "outputs": [{"name": "label"}]}, "outputs"),
    ({"inputs": [tensor("driver_id", [1.5]), tensor("trip_distance_km", [1]), tensor("surge_multiplier", [1])]},
     "inputs[0].datatype"),
    ({"inputs": [tensor("driver_id", ["7"], "INT64"), tensor("trip_distance_km", [1]),
                 tensor("surge_multiplier", [1])]}, "inputs[0].data[0]"),
    ({"inputs": [tensor("driver_id", [1], "INT64"), tensor("trip_distance_km", [1])]}, "surge_multiplier"),
    ({"inputs": [tensor("driver_id", [1], "INT64"), tensor("trip_distance_km", [1]), tensor("surge_multiplier", [1]),
                 tensor("conv_rate", [1])]}, "inputs[3]"),
    ({"inputs": [tensor(c, [1.0] * 6) for c in COLUMNS]}, "inputs"),
    ({"id": 7, "inputs": [tensor(c, [1.0]) for c in COLUMNS]}, "id"),
]


@pytest.mark.parametrize(("payload", "field"), V2_REFUSED)
def test_v2_refuses_bad_requests_naming_the_field(payload: Any, field: str) -> None:
    error = refused(v2, payload)
    assert error.status in (400, 413) and field in error.field and field in error.message, error.message


def test_v2_response_and_metadata_shapes() -> None:
    response = infer_response("m", "3", "r", [0.25, 0.5], ["3", "3"])
    assert response["outputs"] == [{"name": "predict_proba", "shape": [2], "datatype": "FP64", "data": [0.25, 0.5]}]
    assert (response["model_name"], response["model_version"], response["id"]) == ("m", "3", "r")
    meta = model_metadata("m", ["3"], COLUMNS, SCHEMA)
    assert set(meta) >= {"name", "versions", "platform", "inputs", "outputs"}
    assert [i["name"] for i in meta["inputs"]] == COLUMNS
    assert meta["parameters"]["entity_inputs"][0] == {"name": "driver_id", "datatype": "INT64", "shape": [-1]}


# ---------------------------------------------------------------------------- /admin/deploy
def test_deploy_bodies() -> None:
    assert parse_deploy({"mode": "full"}) == (None, "full", 0.0)
    assert parse_deploy({"version": 3, "mode": "canary", "fraction": 0.25}) == ("3", "canary", 0.25)
    assert parse_deploy({"version": "2", "mode": "shadow"}) == ("2", "shadow", 0.0)


@pytest.mark.parametrize(("payload", "field"), [
    ([], "body"), ({"mode": "full", "force": True}, "body"), ({}, "mode"), ({"mode": "blue-green"}, "mode"),
    ({"mode": "full", "version": "v3"}, "version"), ({"mode": "full", "version": 1.5}, "version"),
    ({"mode": "canary"}, "fraction"), ({"mode": "canary", "fraction": 0}, "fraction"),
    ({"mode": "canary", "fraction": 1.5}, "fraction"), ({"mode": "canary", "fraction": True}, "fraction"),
    ({"mode": "full", "fraction": 0.5}, "fraction"),
])
def test_deploy_refuses(payload: Any, field: str) -> None:
    error = refused(parse_deploy, payload)
    assert (error.status, error.field) == (422, field) and field in error.message
