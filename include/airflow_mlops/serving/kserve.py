"""KServe V2 (Open Inference Protocol) requests and responses of the serving app.

`POST /v2/models/{name}[/versions/{version}]/infer` takes named tensors `{"name", "shape", "datatype", "data"}`, either
- one per feature column of the model (shape [N] or [N, 1]; entity-key tensors may ride along and
  then route and log the rows), or one [N, F] tensor with the feature columns in the model's order;
- or one per entity key and request-time feature: the online features come from Feast, as in /predict.

The response's outputs follow the model's task (`core.predictions`): binary `predict_proba` (FP64, [N]:
P(positive class)); multiclass `predict` (the class: INT64 when the classes are integers, else BYTES,
[N]) and `predict_proba` (FP64, [N, K], columns in `parameters.classes` order); regression `predict`
(FP64, [N]: the value). A request may name the outputs it wants (`outputs`). Pure Python, like `protocols.py`;
errors are `RequestError`s with status 400 (413 above the row limit). The envelope (content type,
binary tensor data, `model_name`/`model_version` against the route) is `kserve_wire.py`'s; the body
fields the protocol allows (`id`, `parameters`, `outputs`, tensor `parameters`) are accepted here, and
the extensions this server does not implement (shared memory, classification) refused by name.

Every tensor's `data` must hold what its `datatype` declares, whatever the tensor is used for:
BOOL JSON booleans; INT8..INT64 / UINT8..UINT64 integers (no fraction, no boolean) within the
type's bounds; FP16/FP32/FP64 finite numbers within the type's range, or null (a missing value);
BYTES strings. Nested `data` must follow `shape` level by level; flat data must hold prod(shape) values.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_mlops.core.predictions import TaskOutput, class_datatype
from airflow_mlops.serving.protocols import (
    EntityBatch,
    EntitySchema,
    FeatureTable,
    NonFinite,
    RequestError,
    check_rows,
    entity_rows,
    json_type,
    needs,
    number,
    request_id,
    show,
    unknown_message,
)

OUTPUT = "predict_proba"  # probabilities (binary: of the positive class; multiclass: one per class)
PREDICT = "predict"  # the class (multiclass) or the value (regression)
INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
DATATYPES = INT_TYPES | FLOAT_TYPES | {"BOOL", "BYTES"}
# Entity key kinds (from the Feast value type of the join key) and the V2 datatypes each accepts.
KIND_DATATYPES = {"int": INT_TYPES, "str": frozenset({"BYTES"}), "float": INT_TYPES | FLOAT_TYPES}
KIND_NAMES = {"int": "INT64", "str": "BYTES", "float": "FP64"}
INT_BOUNDS = {f"{sign}INT{bits}": ((0, 2**bits - 1) if sign else (-(2**(bits - 1)), 2**(bits - 1) - 1))
              for sign in ("", "U") for bits in (8, 16, 32, 64)}
REQUEST_KEYS = frozenset({"id", "inputs", "outputs", "parameters", "model_name", "model_version"})
# Extensions a client may ask for in parameters that this server does not implement: refused, not ignored.
UNSUPPORTED_PARAMETERS = {
    "shared_memory_region": "shared-memory tensors are not supported; send the values in the body (data or "
                            "binary data)",
    "classification": "the classification extension is not supported; request the output without class_count",
}
MAX_DIMS = 32  # numpy's limit; far above the 2 this server reads, and it bounds the nesting walked
FLOAT_MAX = {"FP16": 65504.0, "FP32": 3.4028234663852886e38, "FP64": 1.7976931348623157e308}


@dataclass(frozen=True)
class V2Request:
    """A parsed inference request: exactly one of `table` (feature tensors) and `batch` (entity tensors)."""

    id: str | None
    table: FeatureTable | None = None
    batch: EntityBatch | None = None
    outputs: tuple[str, ...] | None = None  # the outputs asked for by name (None: every output of the model)
    binary: frozenset[str] = frozenset()  # outputs wanted as binary tensor data ("*": every output)

    @property
    def binary_output(self) -> bool:
        """The client asked for (some) output as binary tensor data."""
        return bool(self.binary)

    def binary_names(self, names: Sequence[str]) -> set[str]:
        return {name for name in names if "*" in self.binary or name in self.binary}


@dataclass(frozen=True)
class _Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]
    field: str


def parse_infer(payload: Any, *, wanted: Sequence[str], positional: Sequence[str], schema: EntitySchema,
                outputs: Sequence[str] = (OUTPUT,)) -> V2Request:
    """An inference request -> feature tensors (FeatureTable) or entity tensors (EntityBatch).

    `outputs`: the output names of the model that will answer (`output_names`), which `outputs` may ask for.

    `model_name` / `model_version` are checked against the route before (`kserve_wire.check_route_fields`)."""
    if not isinstance(payload, dict) or set(payload) - REQUEST_KEYS:
        shown = sorted(payload) if isinstance(payload, dict) else f"a JSON {json_type(payload)}"
        raise RequestError(400, "body", f"body: got {shown}; a V2 inference request is an object with 'inputs' "
                                        "(and optional id, parameters, outputs, model_name, model_version)")
    rid = request_id(payload["id"], "id", status=400) if payload.get("id") is not None else None
    parameters = _parameters(payload.get("parameters"), "parameters")
    asked, binary = _check_outputs(payload.get("outputs"), parameters.get("binary_data_output") is True, outputs)
    tensors = _tensors(payload.get("inputs"))
    only = next(iter(tensors.values()))
    if len(tensors) == 1 and len(only.shape) == 2 and only.shape[1] > 1 and only.name not in wanted:
        return V2Request(rid, table=_matrix_table(only, positional, schema.max_rows), outputs=asked, binary=binary)
    if set(wanted) <= set(tensors):
        return V2Request(rid, table=_column_table(tensors, wanted, schema), outputs=asked, binary=binary)
    if set(schema.keys) <= set(tensors):
        batch = _entity_batch(tensors, schema, rid or str(uuid.uuid4()))
        return V2Request(rid, batch=batch, outputs=asked, binary=binary)
    raise RequestError(400, "inputs", f"inputs: got tensors {sorted(tensors)}; send one tensor per feature column "
                                      f"{list(wanted)}, or one per entity key and request feature: {needs(schema)}")


def _parameters(value: Any, field: str) -> dict[str, Any]:
    """A `parameters` object: the protocol allows any names with string, number or boolean values."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(400, field, f"{field}: got {show(value)}; parameters is a JSON object")
    for key, item in value.items():
        if not isinstance(item, str | int | float) or isinstance(item, NonFinite):
            raise RequestError(400, f"{field}.{key}", f"{field}.{key}: got {show(item)}; a parameter is a string, "
                                                      "number or boolean")
        if key in UNSUPPORTED_PARAMETERS:
            raise RequestError(400, f"{field}.{key}", f"{field}.{key}: {UNSUPPORTED_PARAMETERS[key]}")
    return value


def _check_outputs(outputs: Any, binary_default: bool,
                   names: Sequence[str]) -> tuple[tuple[str, ...] | None, frozenset[str]]:
    """(the outputs asked for, None = all; those wanted as binary data, "*" = all) of the model's `names`."""
    every = frozenset({"*"}) if binary_default else frozenset()
    if outputs is None or outputs == []:
        return None, every
    if not isinstance(outputs, list):
        raise RequestError(400, "outputs", f"outputs: got {show(outputs)}; an array of requested outputs "
                                           f'[{{"name": "{names[0]}"}}] (or leave outputs out)')
    asked: list[str] = []
    binary: set[str] = set()
    for i, output in enumerate(outputs):
        field = f"outputs[{i}]"
        if not isinstance(output, dict) or set(output) - {"name", "parameters"}:
            raise RequestError(400, field, f"{field}: got {show(output)}; a requested output is an object with "
                                           "name (and optional parameters)")
        name = output.get("name")
        if not isinstance(name, str) or name not in names:
            has = f"one output, {names[0]!r}" if len(names) == 1 else f"the outputs {list(names)}"
            raise RequestError(400, f"{field}.name", f"{field}.name: got {show(name)}; this model has "
                                                     f"{has} (GET /v2/models/<name> lists them)")
        if name in asked:
            raise RequestError(400, field, f"{field}: output {name!r} is requested twice")
        asked.append(name)
        parameters = _parameters(output.get("parameters"), f"{field}.parameters")
        if parameters.get("binary_data", binary_default) is True:
            binary.add(name)
    return tuple(asked), frozenset(binary)


def _tensors(inputs: Any) -> dict[str, _Tensor]:
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(400, "inputs", f"inputs: got {show(inputs)}; must be a non-empty array of tensors "
                                          '{"name", "shape", "datatype", "data"}')
    tensors: dict[str, _Tensor] = {}
    for i, item in enumerate(inputs):
        tensor = _tensor(item, f"inputs[{i}]")
        if tensor.name in tensors:
            raise RequestError(400, f"{tensor.field}.name", f"{tensor.field}.name: tensor {tensor.name!r} is given "
                                                            "twice")
        tensors[tensor.name] = tensor
    return tensors


def _tensor(item: Any, field: str) -> _Tensor:
    if not isinstance(item, dict) or set(item) - {"name", "shape", "datatype", "data", "parameters"}:
        raise RequestError(400, field, f"{field}: got {show(item)}; a tensor is an object with name, shape, "
                                       "datatype, data (and optional parameters)")
    _parameters(item.get("parameters"), f"{field}.parameters")
    name, shape, datatype, data = (item.get(k) for k in ("name", "shape", "datatype", "data"))
    if type(name) is not str or not name:
        raise RequestError(400, f"{field}.name", f"{field}.name: got {show(name)}; must be a non-empty string")
    if (not isinstance(shape, list) or not 0 < len(shape) <= MAX_DIMS
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise RequestError(400, f"{field}.shape", f"{field}.shape: got {show(shape)}; must be an array of 1 to "
                                                  f"{MAX_DIMS} non-negative integers, e.g. [2] or [2, 1]")
    if datatype not in DATATYPES:
        raise RequestError(400, f"{field}.datatype", f"{field}.datatype: got {show(datatype)}; must be one of "
                                                     f"{sorted(DATATYPES)}")
    if not isinstance(data, list):
        raise RequestError(400, f"{field}.data", f"{field}.data: got {show(data)}; must be an array")
    flat = _flatten(data, shape, f"{field}.data")
    expected = math.prod(shape)
    if len(flat) != expected:
        raise RequestError(400, f"{field}.data", f"{field}.data: holds {len(flat)} values but shape {shape} needs "
                                                 f"{expected}")
    _check_datatype(datatype, flat, f"{field}.data")
    return _Tensor(name, datatype, shape, flat, field)


def _flatten(data: list[Any], shape: list[int], field: str) -> list[Any]:
    """Row-major flat values of `data`, given flat (no arrays inside) or nested exactly as `shape`."""
    if not any(isinstance(x, list) for x in data):
        bad = next((x for x in data if isinstance(x, dict)), None)
        if bad is not None:
            raise RequestError(400, field, f"{field}: got {show(bad)} where a value belongs")
        return data
    out: list[Any] = []
    _nested(data, shape, field, out)
    return out


def _nested(node: Any, dims: list[int], field: str, out: list[Any]) -> None:
    if not isinstance(node, list) or len(node) != dims[0]:
        got = f"{len(node)} entries" if isinstance(node, list) else show(node)
        raise RequestError(400, field, f"{field}: got {got} where shape {dims} needs an array of {dims[0]}; nest "
                                       "data exactly as the shape, or send it flat in row-major order")
    if len(dims) == 1:
        bad = next((x for x in node if isinstance(x, list | dict)), None)
        if bad is not None:
            raise RequestError(400, field, f"{field}: got {show(bad)} where a value belongs; nest data exactly as "
                                           "the shape, or send it flat in row-major order")
        out.extend(node)
        return
    for item in node:
        _nested(item, dims[1:], field, out)


def _check_datatype(datatype: str, values: list[Any], field: str) -> None:
    """Every value must be one the declared datatype holds (400 naming the first that is not)."""
    for j, value in enumerate(values):
        kind = type(value)
        if datatype in INT_BOUNDS:
            low, high = INT_BOUNDS[datatype]
            if kind is int and low <= value <= high:
                continue
            rule = (f"{datatype} holds integers in [{low}, {high}]" if kind is int else
                    f"{datatype} holds integers: a JSON number without a fraction (not a boolean, string, null, NaN)")
        elif datatype in FLOAT_MAX:
            top = FLOAT_MAX[datatype]
            if value is None or ((kind is int or (kind is float and math.isfinite(value))) and -top <= value <= top):
                continue
            rule = (f"{datatype} holds finite numbers within +-{top:.8g}" if kind in (int, float) else
                    f"{datatype} holds finite JSON numbers, or null for a missing value (not a boolean, string, "
                    "NaN or Infinity)")
        elif datatype == "BOOL":
            if kind is bool:
                continue
            rule = "BOOL holds JSON true/false (not 0/1, strings or null)"
        else:
            if kind is str:
                continue
            rule = "BYTES holds strings"
        raise RequestError(400, f"{field}[{j}]", f"{field}[{j}]: got {show(value)}; datatype {rule}")


def _rows(tensors: dict[str, _Tensor], names: Sequence[str], max_rows: int) -> int:
    """The common row count N of column tensors (shape [N] or [N, 1])."""
    counts = {}
    for name in names:
        tensor = tensors[name]
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise RequestError(400, f"{tensor.field}.shape", f"{tensor.field}.shape: got {tensor.shape}; a column "
                                                             "tensor has shape [N] or [N, 1]")
        counts[name] = tensor.shape[0]
    if len(set(counts.values())) != 1:
        raise RequestError(400, "inputs", f"inputs: tensors have different row counts {counts}; give each N rows")
    rows = next(iter(counts.values()))
    check_rows(rows, "inputs", max_rows, status=400)
    return rows


def _numbers(tensor: _Tensor) -> list[float]:
    if tensor.datatype not in INT_TYPES | FLOAT_TYPES:
        raise RequestError(400, f"{tensor.field}.datatype", f"{tensor.field}.datatype: got {tensor.datatype} for "
                                                            f"{tensor.name!r}; use FP64, FP32 or an INT type")
    return [number(v, f"{tensor.field}.data[{j}]", status=400, allow_missing=True) for j, v in enumerate(tensor.data)]


def _matrix_table(tensor: _Tensor, positional: Sequence[str], max_rows: int) -> FeatureTable:
    rows, width = tensor.shape
    if width != len(positional):
        raise RequestError(400, f"{tensor.field}.shape", f"{tensor.field}.shape: got {tensor.shape}; a single "
                                                         f"[N, F] tensor needs F = {len(positional)} columns in "
                                                         f"this order: {list(positional)}")
    check_rows(rows, f"{tensor.field}.shape", max_rows, status=400)
    flat = _numbers(tensor)
    index = {name: c for c, name in enumerate(positional)}

    def where(i: int, name: str) -> str:
        return f"{tensor.field}.data[{i}][{index[name]}] ({name})" if name else f"{tensor.field}.data[{i}]"

    return FeatureTable(rows=rows, values={name: flat[c::width] for c, name in enumerate(positional)}, where=where)


def _column_table(tensors: dict[str, _Tensor], wanted: Sequence[str], schema: EntitySchema) -> FeatureTable:
    unknown = sorted(set(tensors) - set(wanted) - set(schema.keys))
    if unknown:
        field = tensors[unknown[0]].field
        raise RequestError(400, field, f"{field}: unknown tensor {unknown[0]!r}; feature tensors are {list(wanted)} "
                                       f"(entity keys {list(schema.keys)} may ride along)")
    keys = [k for k in schema.keys if k in tensors]
    rows = _rows(tensors, [*wanted, *keys], schema.max_rows)
    values = {name: _numbers(tensors[name]) for name in wanted}
    entities = None
    if keys and len(keys) == len(schema.keys):
        entities = [{k: tensors[k].data[j] for k in keys} for j in range(rows)]

    def where(i: int, name: str) -> str:
        return f"{tensors[name].field}.data[{i}] ({name})" if name else f"row {i} of inputs"

    return FeatureTable(rows=rows, values=values, entities=entities, where=where)


def _entity_batch(tensors: dict[str, _Tensor], schema: EntitySchema, rid: str) -> EntityBatch:
    for name, tensor in tensors.items():
        if name not in schema.keys and name not in schema.request_features:
            raise RequestError(400, tensor.field, f"{tensor.field}: {unknown_message(repr(name), name, schema)}")
    for name, kind in schema.keys.items():
        tensor = tensors[name]
        if tensor.datatype not in KIND_DATATYPES[kind]:
            raise RequestError(400, f"{tensor.field}.datatype", f"{tensor.field}.datatype: got {tensor.datatype}; "
                                                                f"entity key {name!r} takes {KIND_NAMES[kind]}")
    for name in schema.request_features:
        if name in tensors and tensors[name].datatype not in INT_TYPES | FLOAT_TYPES:
            _numbers(tensors[name])  # raises naming the datatype
    rows = _rows(tensors, list(tensors), schema.max_rows)
    table = [{name: tensor.data[j] for name, tensor in tensors.items()} for j in range(rows)]
    fields = {name: tensor.field for name, tensor in tensors.items()}

    def where(i: int, name: str) -> str:
        return f"{fields[name]}.data[{i}]" if name in fields else f"inputs (tensor {name!r})"

    return entity_rows(table, schema, status=400, rid=rid, where=where)


def output_specs(output: TaskOutput) -> list[dict[str, Any]]:
    """The model's V2 outputs (name, datatype, shape) for its task (module doc)."""
    if output.task == "binary":
        return [{"name": OUTPUT, "datatype": "FP64", "shape": [-1]}]
    if output.task == "regression":
        return [{"name": PREDICT, "datatype": "FP64", "shape": [-1]}]
    return [{"name": PREDICT, "datatype": class_datatype(output.classes), "shape": [-1]},
            {"name": OUTPUT, "datatype": "FP64", "shape": [-1, len(output.classes)]}]


def output_names(output: TaskOutput) -> tuple[str, ...]:
    return tuple(spec["name"] for spec in output_specs(output))


def infer_response(model: str, version: str, rid: str, predictions: Sequence[Any], versions: Sequence[str],
                   degraded: bool = False, stale_features: Sequence[str] | None = None,
                   output: TaskOutput | None = None, asked: Sequence[str] | None = None) -> dict[str, Any]:
    """The inference response; `parameters`: the version that scored each row, whether online features were
    missing or stale (store down with serving.feature_fallback "request"; rows older than their view's TTL
    under serving.stale_features request/serve_stale), which views were stale and (classifiers beyond binary)
    the classes in `predict_proba`'s column order. `predictions`: the task's scores per row (`TaskOutput.score`);
    `asked`: the outputs the request named (None: all)."""
    output = output or TaskOutput()
    stale = {"stale_features": list(stale_features)} if stale_features else {}
    classes = {"classes": list(output.classes)} if output.multiclass else {}
    tensors = [{"name": spec["name"], "shape": [len(predictions), *spec["shape"][1:]], "datatype": spec["datatype"],
                "data": _data(spec["name"], predictions, output)}
               for spec in output_specs(output) if asked is None or spec["name"] in asked]
    return {"model_name": model, "model_version": version, "id": rid,
            "parameters": {"model_versions": list(versions), "degraded": degraded, **stale, **classes},
            "outputs": tensors}


def _data(name: str, predictions: Sequence[Any], output: TaskOutput) -> list[Any]:
    if not output.multiclass:
        return list(predictions)
    if name == OUTPUT:
        return [float(p) for row in predictions for p in row]  # row-major [N, K]
    labels = [output.class_of(row) for row in predictions]
    return labels if class_datatype(output.classes) == "INT64" else [str(c) for c in labels]


def model_metadata(model: str, versions: Sequence[str], columns: Sequence[str], schema: EntitySchema,
                   output: TaskOutput | None = None) -> dict[str, Any]:
    """Model metadata: the feature-column inputs and the task's outputs; the entity-key alternative, the task
    and (classifiers) the classes under `parameters`."""
    output = output or TaskOutput()
    entity_inputs = [{"name": k, "datatype": KIND_NAMES[kind], "shape": [-1]} for k, kind in schema.keys.items()]
    entity_inputs += [{"name": f, "datatype": "FP64", "shape": [-1]} for f in schema.request_features]
    return {"name": model, "versions": list(versions), "platform": "sklearn",
            "inputs": [{"name": c, "datatype": "FP64", "shape": [-1]} for c in columns],
            "outputs": output_specs(output),
            "parameters": {"entity_inputs": entity_inputs, **output.describe()}}
