"""The KServe V2 request envelope: content types, the binary tensor extension, model_name/model_version, outputs.

Binary bodies are built with numpy and tritonclient's own BYTES serializer (independent of the struct
code under test); the clients themselves are exercised over HTTP in
tests/integration/test_serving_v2_clients.py.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from airflow_mlops.serving.kserve import parse_infer
from airflow_mlops.serving.kserve_wire import V2Target, binary_response, check_route_fields, read_request
from airflow_mlops.serving.protocols import EntitySchema, RequestError

pytestmark = pytest.mark.unit

SCHEMA = EntitySchema(keys={"driver_id": "int"}, request_features=("trip_distance_km",), max_rows=5)
COLUMNS = ["trip_distance_km", "rating"]
HEADER = "Inference-Header-Content-Length"


def refused(call: Any, *args: Any) -> RequestError:
    with pytest.raises(RequestError) as info:
        call(*args)
    return info.value


def binary_body(header: dict[str, Any], *raws: bytes) -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    return head + b"".join(raws), str(len(head))


def binary_input(name: str, array: Any, datatype: str) -> tuple[dict[str, Any], bytes]:
    from tritonclient.utils import serialize_byte_tensor

    raw = serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes()
    return {"name": name, "shape": list(array.shape), "datatype": datatype,
            "parameters": {"binary_data_size": len(raw)}}, raw


def parse(payload: Any) -> Any:
    return parse_infer(payload, wanted=COLUMNS, positional=COLUMNS, schema=SCHEMA)


# ---------------------------------------------------------------------------- content types
@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; charset=utf-8",
                                          "application/vnd.kserve+json"])
def test_json_is_accepted_with_or_without_a_content_type(content_type: str | None) -> None:
    assert read_request(b'{"inputs": []}', content_type, None) == {"inputs": []}


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", "text/csv"])
def test_a_body_that_is_not_json_without_the_binary_header_is_415_naming_both(content_type: str) -> None:
    error = refused(read_request, b'{"inputs": []}', content_type, None)
    assert error.status == 415 and error.field == "Content-Type" and HEADER in error.message


# ---------------------------------------------------------------------------- binary tensor data
@pytest.mark.parametrize(("datatype", "values"), [
    ("FP64", [0.5, -1.25, 3e300]), ("FP32", [0.5, -1.25, 8.0]), ("FP16", [0.5, -1.25, 8.0]),
    ("INT64", [-(2**63), 0, 2**63 - 1]), ("INT32", [-7, 0, 7]), ("INT8", [-128, 0, 127]),
    ("UINT64", [0, 1, 2**64 - 1]), ("UINT16", [0, 1, 65535]), ("BOOL", [True, False, True]),
    ("BYTES", ["a", "", "driver-é"]),
])
def test_binary_inputs_decode_to_the_values_numpy_encoded(datatype: str, values: list[Any]) -> None:
    from tritonclient.utils import triton_to_np_dtype

    array = np.array(values, dtype=object if datatype == "BYTES" else triton_to_np_dtype(datatype))
    tensor, raw = binary_input("x", array, datatype)
    for content_type in (None, "application/octet-stream"):
        body, length = binary_body({"inputs": [tensor]}, raw)
        payload = read_request(body, content_type, length)
        assert payload["inputs"][0]["data"] == values


def test_binary_inputs_without_the_header_are_400_naming_it() -> None:
    tensor, _raw = binary_input("x", np.array([1.0]), "FP64")
    error = refused(read_request, json.dumps({"inputs": [tensor]}).encode(), "application/json", None)
    assert error.status == 400 and HEADER in error.message and "inputs[0]" in error.message


def test_binary_and_json_inputs_mix_in_one_request() -> None:
    tensor, raw = binary_input("trip_distance_km", np.array([1.5, 2.5]), "FP64")
    rating = {"name": "rating", "shape": [2], "datatype": "FP32", "data": [4.0, 5.0]}
    body, length = binary_body({"inputs": [rating, tensor]}, raw)
    request = parse_infer(read_request(body, None, length), wanted=COLUMNS, positional=COLUMNS, schema=SCHEMA)
    assert request.table is not None and request.table.values == {"trip_distance_km": [1.5, 2.5],
                                                                   "rating": [4.0, 5.0]}


def test_binary_values_pass_the_same_datatype_checks_as_json() -> None:
    tensor, raw = binary_input("trip_distance_km", np.array([1.0, np.inf]), "FP64")
    body, length = binary_body({"inputs": [tensor, {"name": "rating", "shape": [2], "datatype": "FP64",
                                                    "data": [1, 2]}]}, raw)
    error = refused(parse, read_request(body, None, length))
    assert error.field == "inputs[0].data[1]"


BINARY_REFUSED = [
    ("header not a number", lambda b, n: (b, "abc", None), HEADER),
    ("header past the body", lambda b, n: (b, str(len(b) + 1), None), HEADER),
    ("bytes left over", lambda b, n: (b + b"\0" * 8, n, None), HEADER),
    ("text/csv with the header", lambda b, n: (b, n, "text/csv"), "Content-Type"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), BINARY_REFUSED, ids=[c[0] for c in BINARY_REFUSED])
def test_a_malformed_binary_request_names_the_header(case: str, mutate: Any, field: str) -> None:
    tensor, raw = binary_input("x", np.array([1.0]), "FP64")
    body, length = binary_body({"inputs": [tensor]}, raw)
    body, length, content_type = mutate(body, length)
    assert refused(read_request, body, content_type, length).field == field


@pytest.mark.parametrize(("tensor", "raw", "field"), [
    ({"name": "x", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}, b"\0" * 8,
     "inputs[0].parameters.binary_data_size"),
    ({"name": "x", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 7}}, b"\0" * 7,
     "inputs[0].parameters.binary_data_size"),
    ({"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0], "parameters": {"binary_data_size": 8}},
     b"\0" * 8, "inputs[0].data"),
    ({"name": "x", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}, b"\x09\0\0\0a",
     "inputs[0].parameters.binary_data_size"),
    ({"name": "x", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}, b"\x01\0\0\0\xff",
     "inputs[0].data[0]"),
    ({"name": "x", "shape": [1], "datatype": "FP8", "parameters": {"binary_data_size": 1}}, b"\0",
     "inputs[0].datatype"),
])
def test_a_binary_tensor_that_does_not_fit_its_size_or_datatype_is_400(tensor: dict[str, Any], raw: bytes,
                                                                       field: str) -> None:
    body, length = binary_body({"inputs": [tensor]}, raw)
    error = refused(read_request, body, None, length)
    assert error.status == 400 and error.field == field


def test_binary_response_puts_the_output_after_the_json_header() -> None:
    payload = {"model_name": "m", "outputs": [{"name": "predict_proba", "shape": [2], "datatype": "FP64",
                                               "data": [0.25, 0.75]}]}
    body, length = binary_response(payload, {"predict_proba"})
    head = json.loads(body[:int(length)])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 16} and "data" not in head["outputs"][0]
    assert np.frombuffer(body[int(length):], dtype="<f8").tolist() == [0.25, 0.75]


# ---------------------------------------------------------------------------- route fields
def test_model_name_and_version_in_the_body_must_agree_with_the_route() -> None:
    plain, versioned = V2Target("m", None, None), V2Target("m", "2", None)
    assert check_route_fields({"model_name": "m"}, plain) is None
    assert check_route_fields({"model_name": "m", "model_version": "2"}, versioned) == "2"
    assert check_route_fields({"model_version": "3"}, plain) == "3", "the body's version pins the plain route"
    error = refused(check_route_fields, {"model_name": "other"}, versioned)
    assert error.status == 400 and "'other'" in error.message and "'m'" in error.message
    error = refused(check_route_fields, {"model_version": "1"}, versioned)
    assert error.field == "model_version" and "'1'" in error.message and "'2'" in error.message
    assert refused(check_route_fields, {"model_version": 2}, plain).field == "model_version"


# ---------------------------------------------------------------------------- body fields the protocol allows
def columns(**extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [1.0]} for c in COLUMNS], **extra}


def test_protocol_fields_are_accepted() -> None:
    request = parse(columns(id="r-1", model_name="m", model_version="1", parameters={"priority": 1, "a": "b"},
                            outputs=[{"name": "predict_proba", "parameters": {"binary_data": False}}]))
    assert request.id == "r-1" and request.table is not None and request.binary_output is False
    tagged = columns()
    tagged["inputs"][0]["parameters"] = {"content_type": "np"}
    assert parse(tagged).table is not None


@pytest.mark.parametrize(("extra", "binary"), [
    ({}, False), ({"outputs": []}, False), ({"parameters": {"binary_data_output": True}}, True),
    ({"outputs": [{"name": "predict_proba", "parameters": {"binary_data": True}}]}, True),
    ({"parameters": {"binary_data_output": True}, "outputs": [{"name": "predict_proba",
                                                               "parameters": {"binary_data": False}}]}, False),
])
def test_binary_output_is_what_the_client_asked_for(extra: dict[str, Any], binary: bool) -> None:
    assert parse(columns(**extra)).binary_output is binary


@pytest.mark.parametrize(("extra", "field"), [
    ({"parameters": [1]}, "parameters"),
    ({"parameters": {"nested": {"a": 1}}}, "parameters.nested"),
    ({"outputs": {"name": "predict_proba"}}, "outputs"),
    ({"outputs": [{"name": "label"}]}, "outputs[0].name"),
    ({"outputs": [{"name": "predict_proba", "extra": 1}]}, "outputs[0]"),
    ({"outputs": [{"name": "predict_proba", "parameters": {"classification": 2}}]},
     "outputs[0].parameters.classification"),
    ({"outputs": [{"name": "predict_proba", "parameters": {"shared_memory_region": "r"}}]},
     "outputs[0].parameters.shared_memory_region"),
    ({"outputs": [{"name": "predict_proba"}, {"name": "predict_proba"}]}, "outputs[1]"),
    ({"model": "m"}, "body"),
])
def test_what_the_protocol_forbids_or_this_server_does_not_implement_is_400(extra: dict[str, Any],
                                                                            field: str) -> None:
    error = refused(parse, columns(**extra))
    assert error.status == 400 and error.field == field and field.split(".")[-1] in error.message


def test_an_input_tensor_in_shared_memory_is_refused_naming_it() -> None:
    payload = columns()
    payload["inputs"][1]["parameters"] = {"shared_memory_region": "r", "shared_memory_byte_size": 8}
    assert refused(parse, payload).field == "inputs[1].parameters.shared_memory_region"


def test_struct_and_numpy_agree_on_fp16_rounding() -> None:
    raw = np.array([0.1], dtype="<f2").tobytes()
    assert struct.unpack("<e", raw)[0] == float(np.frombuffer(raw, dtype="<f2")[0])
