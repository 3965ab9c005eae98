"""The envelope of a KServe V2 infer request: content type, the binary tensor extension, route fields.

What real clients send, and what this module makes of it:
- `tritonclient.http` sends JSON with NO Content-Type; with `set_data_from_numpy(binary_data=True)`
  (its default) it appends raw tensors after the JSON and sends `Inference-Header-Content-Length`
  (the JSON's byte length) and `inputs[i].parameters.binary_data_size`; without requested outputs
  it asks for binary outputs (`parameters.binary_data_output: true`).
- `kserve.InferenceRESTClient` sends `application/json` (binary: `application/octet-stream` with the
  same header) and puts `model_name` (the route's model) and a uuid4 `id` in the body.

The binary tensor data extension (Triton's `binary_tensor_data`, also KServe's) is supported both
ways: raw little-endian row-major values, BOOL one byte, BYTES each a 4-byte little-endian length
and the bytes. Decoded tensors get a `data` list and then pass the same checks as JSON data.
Pure Python (struct), like `kserve.py`; errors are `RequestError`s naming the field and the fix.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from airflow_mlops.serving.protocols import JSON, RequestError, load_json, show

HEADER = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"
# struct codes of the fixed-size datatypes (little-endian, as the extension defines)
STRUCT_CODES = {"BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "UINT8": "B", "UINT16": "H",
                "UINT32": "I", "UINT64": "Q", "FP16": "e", "FP32": "f", "FP64": "d"}


@dataclass(frozen=True)
class V2Target:
    """What the route says: model name, version (None on unversioned routes), the binary header if sent."""

    name: str
    version: str | None
    header_length: str | None


def read_request(body: bytes, content_type: str | None, header_length: str | None) -> Any:
    """The JSON request object, with every binary input decoded into its `data` list.

    JSON: Content-Type application/json (or +json), or none at all (tritonclient sends none).
    Binary: `Inference-Header-Content-Length` with no Content-Type or application/octet-stream."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    json_like = media in ("", JSON) or (media.startswith("application/") and media.endswith("+json"))
    if header_length is None:
        if not json_like:
            raise RequestError(415, "Content-Type", f"Content-Type: got {content_type!r}; V2 infer takes a JSON "
                                                    f"body ({JSON}, or no Content-Type), or JSON followed by binary "
                                                    f"tensors with the {HEADER} header")
        payload = load_json(body)
        _no_binary_inputs(payload)
        return payload
    if media not in ("", OCTET_STREAM, JSON):
        raise RequestError(415, "Content-Type", f"Content-Type: got {content_type!r} with {HEADER}; a binary "
                                                f"tensor request has Content-Type {OCTET_STREAM} (or none)")
    size = header_length.strip()
    if not size.isdigit() or not 0 < int(size) <= len(body):
        raise RequestError(400, HEADER, f"{HEADER}: got {header_length!r}; must be the byte length of the JSON part "
                                        f"of the body (1..{len(body)})")
    payload = load_json(body[:int(size)])
    _attach_binary(payload, memoryview(body)[int(size):])
    return payload


def _binary_inputs(payload: Any) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(index, tensor, its parameters) of every input that says its data follows the JSON in binary."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    found = []
    for i, item in enumerate(inputs if isinstance(inputs, list) else ()):
        parameters = item.get("parameters") if isinstance(item, dict) else None
        if isinstance(parameters, dict) and "binary_data_size" in parameters:
            found.append((i, item, parameters))
    return found


def _no_binary_inputs(payload: Any) -> None:
    found = _binary_inputs(payload)
    if found:
        raise RequestError(400, HEADER, f"inputs[{found[0][0]}].parameters.binary_data_size: binary data needs the "
                                        f"{HEADER} header (the JSON part's byte length); send it, or send the values "
                                        "in data")


def _attach_binary(payload: Any, raw: memoryview) -> None:
    offset = 0
    for i, item, parameters in _binary_inputs(payload):
        field = f"inputs[{i}]"
        size = parameters["binary_data_size"]
        if type(size) is not int or size < 0 or offset + size > len(raw):
            raise RequestError(400, f"{field}.parameters.binary_data_size",
                               f"{field}.parameters.binary_data_size: got {show(size)}; the body has "
                               f"{len(raw) - offset} binary bytes left for this tensor")
        if "data" in item:
            raise RequestError(400, f"{field}.data", f"{field}: has both data and parameters.binary_data_size; "
                                                     "send the values one way")
        item["data"] = _decode(item.get("datatype"), raw[offset:offset + size], field)
        offset += size
    if offset != len(raw):
        raise RequestError(400, HEADER, f"{HEADER}: {len(raw) - offset} bytes after the JSON part belong to no input "
                                        "(each binary input names its byte count in parameters.binary_data_size)")


def _decode(datatype: Any, raw: memoryview, field: str) -> list[Any]:
    if datatype == "BYTES":
        values, at = [], 0
        while at < len(raw):
            if at + 4 > len(raw) or at + 4 + (n := int.from_bytes(raw[at:at + 4], "little")) > len(raw):
                raise RequestError(400, f"{field}.parameters.binary_data_size",
                                   f"{field}: BYTES element at byte {at} overruns the tensor; each element is a "
                                   "4-byte little-endian length followed by that many bytes")
            try:
                values.append(bytes(raw[at + 4:at + 4 + n]).decode("utf-8"))
            except UnicodeDecodeError:
                raise RequestError(400, f"{field}.data[{len(values)}]", f"{field}.data[{len(values)}]: not UTF-8 "
                                                                        "text; BYTES tensors here hold entity keys "
                                                                        "(strings)") from None
            at += 4 + n
        return values
    code = STRUCT_CODES.get(datatype) if isinstance(datatype, str) else None
    if code is None:
        raise RequestError(400, f"{field}.datatype", f"{field}.datatype: got {show(datatype)}; binary data needs one "
                                                     f"of {sorted([*STRUCT_CODES, 'BYTES'])}")
    width = struct.calcsize(code)
    if len(raw) % width:
        raise RequestError(400, f"{field}.parameters.binary_data_size",
                           f"{field}.parameters.binary_data_size: {len(raw)} bytes is not a multiple of {width} "
                           f"({datatype})")
    # non-finite floats are kept: the datatype check refuses them with their position, as in JSON
    return list(struct.unpack(f"<{len(raw) // width}{code}", raw))


def check_route_fields(payload: Any, target: V2Target) -> str | None:
    """`model_name` / `model_version` in the body (the kserve client sends model_name) must agree with the
    route; the version to score: the route's, else the body's, else None (the deployment's routing)."""
    if not isinstance(payload, dict):
        return target.version
    name, version = payload.get("model_name"), payload.get("model_version")
    if name is not None and name != target.name:
        raise RequestError(400, "model_name", f"model_name: the body says {show(name)} but the route is model "
                                              f"{target.name!r}; send the same name or leave model_name out")
    if version is None:
        return target.version
    if type(version) is not str or not version:
        raise RequestError(400, "model_version", f"model_version: got {show(version)}; a version is a string "
                                                 "such as \"3\"")
    if target.version is not None and version != target.version:
        raise RequestError(400, "model_version", f"model_version: the body says {version!r} but the route is "
                                                 f"version {target.version!r}; send the same or leave it out")
    return version


def binary_response(payload: dict[str, Any], binary_outputs: set[str]) -> tuple[bytes, str]:
    """The response body with the named outputs (FP64, INT64 or BYTES) as raw bytes after the JSON, and the header
    value."""
    chunks = []
    for output in payload["outputs"]:
        if output["name"] in binary_outputs:
            data = output.pop("data")
            chunks.append(_encode(output["datatype"], data))
            output["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(chunks[-1])}
    head = json.dumps(payload).encode()
    return head + b"".join(chunks), str(len(head))


def _encode(datatype: str, data: list[Any]) -> bytes:
    if datatype == "BYTES":
        texts = [str(value).encode("utf-8") for value in data]
        return b"".join(len(text).to_bytes(4, "little") + text for text in texts)
    return struct.pack(f"<{len(data)}{STRUCT_CODES[datatype]}", *data)
