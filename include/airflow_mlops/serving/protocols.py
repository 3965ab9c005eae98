"""Request parsing and validation of the serving app's own and MLflow protocols (V2: `kserve.py`).

- `POST /predict` (ours): entity rows = entity keys + request-time features; online features come
  from Feast. `{"entities": [{...}, ...], "request_id"?: str}` or one row `{...}`.
- `POST /invocations` (MLflow scoring protocol): the model's feature columns given directly, as
  JSON `dataframe_split` / `dataframe_records` / `instances` / `inputs`, or as CSV.

Pure Python (json, csv, math): no FastAPI, numpy or pandas, so every rule is unit-tested without a
server. A problem raises `RequestError(status, field, message)`; the message names the field, the
value, the rule and the fix. Statuses: 400 unreadable body or wrong protocol shape, 413 too many
rows or too large a body, 415 wrong content type, 422 a /predict row breaking the schema.
Unknown fields are refused (422 in /predict, 400 in V2) so a misspelt feature never goes unnoticed;
/invocations ignores extra columns, as MLflow does.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_ROWS = 1000
MAX_BODY_BYTES = 4 * 1024 * 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:@/+=\-]{1,128}$")
JSON = "application/json"
CSV = "text/csv"
MLFLOW_INPUTS = ("dataframe_split", "dataframe_records", "instances", "inputs")

Where = Callable[[int, str], str]


class RequestError(ValueError):
    """A request the app refuses: HTTP `status`, the offending `field` and a message naming both."""

    def __init__(self, status: int, field: str, message: str) -> None:
        self.status = status
        self.field = field
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class EntitySchema:
    """What an entity row must carry: entity keys (name -> kind "int"|"str"|"float") and request features."""

    keys: Mapping[str, str]
    request_features: tuple[str, ...]
    online_features: tuple[str, ...] = ()
    max_rows: int = MAX_ROWS


@dataclass(frozen=True)
class EntityBatch:
    """Validated entity rows: keys per row, request-feature values per feature, one id per row.

    `where(i, name)` names a value of row i in the request (`where(i, "")`: the row), for errors found later."""

    request_id: str
    entities: list[dict[str, Any]]
    request_values: dict[str, list[float]]
    row_ids: list[str]
    where: Where | None = None


@dataclass(frozen=True)
class FeatureTable:
    """Feature values given directly (NaN = missing): column -> value per row, plus entity keys if given.

    `where(i, column)` names a value of row i in the request (`where(i, "")`: the row), for errors found later."""

    rows: int
    values: dict[str, list[float]]
    entities: list[dict[str, Any]] | None = None
    where: Where | None = None


def name_of(where: Where | None, i: int, name: str = "") -> str:
    """How a request names row `i` (and its value `name`): `where`'s words, else rows[i].name."""
    text = where(i, name).rstrip(".") if where is not None else ""
    return text or (f"rows[{i}].{name}" if name else f"rows[{i}]")


# ---------------------------------------------------------------------------- values
class NonFinite(float):
    """A `NaN`, `Infinity` or `-Infinity` token in a JSON body. They are not JSON (RFC 8259), and whether one
    means "missing" or a computation gone wrong is ambiguous: every number rule checks `type(v) is float`,
    so this subclass is refused wherever a number goes (send null for a missing value)."""

    def __repr__(self) -> str:
        return "NaN" if self != self else ("Infinity" if self > 0 else "-Infinity")


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def number(value: Any, field: str, *, status: int, allow_missing: bool) -> float:
    """A finite float from a JSON number; with `allow_missing`, null becomes NaN (the model imputes). A `NaN` or
    `Infinity` token in the body (`NonFinite`) is refused like any non-number."""
    kind = type(value)
    if kind is float and (math.isfinite(value) or (allow_missing and math.isnan(value))):
        return float(value)
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            pass
    if value is None and allow_missing:
        return math.nan
    rule = ("a finite number, or null for a missing value" if allow_missing
            else "a finite number (a JSON number; not a string, boolean, null, NaN or Infinity)")
    hint = "; NaN and Infinity are not JSON numbers" if allow_missing and isinstance(value, NonFinite) else ""
    raise RequestError(status, field, f"{field}: got {show(value)}; must be {rule}{hint}")


def entity_value(value: Any, field: str, kind: str, *, status: int) -> Any:
    """An entity key value of the Feast join key's kind ("int" = INT64, "str", "float")."""
    if kind == "int":
        if type(value) is int and INT64_MIN <= value <= INT64_MAX:
            return value
        rule = "an integer in the int64 range (a JSON number without a fraction, not a string)"
    elif kind == "str":
        if type(value) is str and 0 < len(value) <= 256:
            return value
        rule = "a non-empty string of at most 256 characters"
    else:
        if type(value) in (int, float) and math.isfinite(value):
            return value
        rule = "a finite number"
    raise RequestError(status, field, f"{field}: got {show(value)}; entity key must be {rule}")


def request_id(value: Any, field: str, *, status: int, fallback: str | None = None) -> str:
    """The caller's request id (1-128 chars of [A-Za-z0-9._:@/+=-]), else `fallback`, else a new uuid4."""
    if value is None:
        return fallback or str(uuid.uuid4())
    if type(value) is str and REQUEST_ID_RE.match(value):
        return value
    raise RequestError(status, field, f"{field}: got {show(value)}; must be 1-128 characters of letters, digits "
                                      "and ._:@/+=- (or leave it out and the server assigns a uuid4)")


# ---------------------------------------------------------------------------- bodies
def media_type(content_type: str | None, allowed: Sequence[str]) -> str:
    """The request's media type if it is one of `allowed` (application/*+json counts as JSON), else 415."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in allowed:
        return media
    if JSON in allowed and media.startswith("application/") and media.endswith("+json"):
        return JSON
    raise RequestError(415, "Content-Type", f"Content-Type: got {content_type!r}; this endpoint accepts "
                                            f"{' or '.join(allowed)} (curl: -H 'Content-Type: {allowed[0]}')")


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: the object as a dict, unless a key repeats (json.loads keeps the last)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


class _Pairs(list[tuple[str, Any]]):  # an object's (key, value) pairs, duplicates kept
    pass


# One decoder for every request: json.loads(..., object_pairs_hook=...) would build a new decoder and scanner
# per call (~5 us, more than parsing a one-row body). Sharing it is what json.loads does with its default one.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=NonFinite)


def load_json(body: bytes, *, status: int = 400, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """The parsed JSON body; 413 above `max_bytes`, `status` when empty or not JSON, 400 naming a key that
    appears twice in one object (at any depth). NaN/Infinity tokens parse to `NonFinite` (refused as numbers)."""
    if len(body) > max_bytes:
        raise RequestError(413, "body", f"body: {len(body)} bytes is above the limit of {max_bytes}; "
                                        "split the request")
    if not body.strip():
        raise RequestError(status, "body", "body: empty; send a JSON object")
    try:
        return _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))  # as json.loads(bytes)
    except _DuplicateKey:
        path, key = _duplicate_key(body, status)
        raise RequestError(400, path, f"{path}: key {key!r} appears more than once in the same JSON object; which "
                                      "value counts is ambiguous. Send each key once") from None
    except RecursionError:
        raise RequestError(status, "body", "body: JSON nested too deeply to parse") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, int above 4300 digits
        raise RequestError(status, "body", f"body: not valid JSON ({exc})") from None


def _duplicate_key(body: bytes, status: int) -> tuple[str, str]:
    """(path, key) of the first repeated key (error path only: parses again keeping every pair). A body that
    is not valid JSON after its repeated key is refused as such."""
    try:
        tree = json.loads(body, object_pairs_hook=_Pairs, parse_constant=NonFinite)
        found = _first_duplicate(tree, "")
    except RecursionError:
        found = None
    except ValueError as exc:
        raise RequestError(status, "body", f"body: not valid JSON ({exc})") from None
    return found or ("body", "?")


def _first_duplicate(node: Any, path: str) -> tuple[str, str] | None:
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for key, value in node:
            where = f"{path}.{key}" if path else key
            if key in seen:
                return where, key
            seen.add(key)
            if found := _first_duplicate(value, where):
                return found
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if found := _first_duplicate(item, f"{path}[{i}]"):
                return found
    return None


def check_rows(count: int, field: str, max_rows: int, *, status: int) -> None:
    if count > max_rows:
        raise RequestError(413, field, f"{field}: {count} rows is above the limit of {max_rows} per request; "
                                       "split the request")
    if count == 0:
        raise RequestError(status, field, f"{field}: no rows; send at least one")


# ---------------------------------------------------------------------------- /predict
def parse_predict(payload: Any, schema: EntitySchema, *, header_id: str | None = None) -> EntityBatch:
    """`{"entities": [row, ...], "request_id"?}` or one row `{...}` -> validated EntityBatch (422 on errors)."""
    if not isinstance(payload, dict):
        raise RequestError(422, "body", f"body: got a JSON {json_type(payload)}; send an object: "
                                        '{"entities": [{...}, ...]} or one entity row {...}')
    rid = request_id(payload.get("request_id"), "request_id", status=422,
                     fallback=request_id(header_id, "X-Request-ID", status=422) if header_id else None)
    if "entities" not in payload:
        return entity_rows([payload], schema, status=422, rid=rid, where=lambda _, name: name)
    extra = sorted(set(payload) - {"entities", "request_id"})
    if extra:
        raise RequestError(422, extra[0], f"{extra[0]}: unknown field next to 'entities' (allowed: entities, "
                                          "request_id); entity keys and request features go inside each entity")
    rows = payload["entities"]
    if not isinstance(rows, list):
        raise RequestError(422, "entities", f"entities: got a JSON {json_type(rows)}; must be an array of "
                                            "entity objects")
    check_rows(len(rows), "entities", schema.max_rows, status=422)
    return entity_rows(rows, schema, status=422, rid=rid, where=lambda i, name: f"entities[{i}].{name}")


def entity_rows(rows: Sequence[Any], schema: EntitySchema, *, status: int, rid: str, where: Where) -> EntityBatch:
    """Validate entity rows (dicts); `where(i, name)` names a field of row i in errors."""
    entities: list[dict[str, Any]] = []
    values: dict[str, list[float]] = {name: [] for name in schema.request_features}
    row_ids: list[str] = []
    for i, row in enumerate(rows):
        keys, row_id = _entity_row(row, i, schema, status, where, values)
        entities.append(keys)
        row_ids.append(row_id or (rid if len(rows) == 1 else f"{rid}-{i}"))
    return EntityBatch(request_id=rid, entities=entities, request_values=values, row_ids=row_ids, where=where)


def _entity_row(row: Any, i: int, schema: EntitySchema, status: int, where: Where,
                values: dict[str, list[float]]) -> tuple[dict[str, Any], str | None]:
    if not isinstance(row, dict):
        field = where(i, "").rstrip(".") or "body"
        raise RequestError(status, field, f"{field}: got a JSON {json_type(row)}; each entity must be an object "
                                          f"with {needs(schema)}")
    for name in row:
        if name not in schema.keys and name not in values and name != "request_id":
            raise RequestError(status, where(i, name), unknown_message(where(i, name), name, schema))
    keys = {}
    for key, kind in schema.keys.items():
        if key not in row:
            raise RequestError(status, where(i, key), f"{where(i, key)}: required entity key is missing; "
                                                      f"every entity needs {needs(schema)}")
        keys[key] = entity_value(row[key], where(i, key), kind, status=status)
    for name, column in values.items():
        if name not in row:
            raise RequestError(status, where(i, name), f"{where(i, name)}: required request-time feature is "
                                                       f"missing; every entity needs {needs(schema)}")
        column.append(number(row[name], where(i, name), status=status, allow_missing=False))
    own = row.get("request_id")
    return keys, request_id(own, where(i, "request_id"), status=status) if own is not None else None


def needs(schema: EntitySchema) -> str:
    return f"entity keys {list(schema.keys)} and request features {list(schema.request_features)}"


def unknown_message(field: str, name: str, schema: EntitySchema) -> str:
    if name in schema.online_features:
        return (f"{field}: '{name}' is an online feature, looked up in Feast by {list(schema.keys)}; remove it "
                "(to score given feature values, use POST /invocations)")
    return f"{field}: unknown field; allowed: {needs(schema)}, request_id. Remove it or check its spelling"


# ---------------------------------------------------------------------------- MLflow /invocations
def parse_invocations(body: bytes, content_type: str | None, *, wanted: Sequence[str], positional: Sequence[str],
                      entity_keys: Sequence[str], max_rows: int = MAX_ROWS) -> FeatureTable:
    """An MLflow scoring request (JSON or CSV) -> FeatureTable of the `wanted` columns it carries (400 on errors).

    `positional` names the columns of list-of-lists `instances`/`inputs` (the serving model's order).
    """
    if media_type(content_type, (JSON, CSV)) == CSV:
        header, rows = _csv_rows(body, max_rows)
        records: list[Any] = [dict(zip(header, row, strict=True)) for row in rows]
        field = "csv"
    else:
        field, records = _mlflow_records(load_json(body), positional, max_rows)
    return _table(records, field, wanted, entity_keys)


def _mlflow_records(payload: Any, positional: Sequence[str], max_rows: int) -> tuple[str, list[Any]]:
    given = [key for key in MLFLOW_INPUTS if isinstance(payload, dict) and key in payload]
    if not isinstance(payload, dict) or len(given) != 1 or set(payload) - {*MLFLOW_INPUTS, "params"}:
        keys = sorted(payload) if isinstance(payload, dict) else f"a JSON {json_type(payload)}"
        raise RequestError(400, "body", f"body: got {keys}; MLflow scoring expects an object with exactly one of "
                                        f"{', '.join(MLFLOW_INPUTS)} (plus optional params)")
    if payload.get("params"):
        raise RequestError(400, "params", "params: this model takes no inference params; remove them")
    key = given[0]
    data = payload[key]
    if key == "dataframe_split":
        return key, split_records(data, max_rows)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        return key, _columnar_records(data, key, max_rows)
    if not isinstance(data, list):
        raise RequestError(400, key, f"{key}: got a JSON {json_type(data)}; must be an array of row objects"
                                     + (" (or of value arrays in feature order)" if key != "dataframe_records" else ""))
    check_rows(len(data), key, max_rows, status=400)
    if key != "dataframe_records" and all(isinstance(row, list) for row in data):
        return key, _positional_records(data, key, positional)
    return key, data


def split_records(data: Any, max_rows: int) -> list[dict[str, Any]]:
    field = "dataframe_split"
    if not isinstance(data, dict) or set(data) - {"columns", "data", "index"}:
        raise RequestError(400, field, f"{field}: must be an object with 'columns' (names) and 'data' (rows), "
                                       f"as pandas df.to_dict(orient='split') writes it; got {show(data)}")
    columns, rows = data.get("columns"), data.get("data")
    if not isinstance(columns, list) or not all(type(c) is str for c in columns):
        raise RequestError(400, f"{field}.columns", f"{field}.columns: got {show(columns)}; must be an array of "
                                                    "column names")
    unique_columns(columns, f"{field}.columns")
    if not isinstance(rows, list):
        raise RequestError(400, f"{field}.data", f"{field}.data: got {show(rows)}; must be an array of rows")
    check_rows(len(rows), f"{field}.data", max_rows, status=400)
    index = data.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(rows)):
        raise RequestError(400, f"{field}.index", f"{field}.index: got {show(index)}; must be an array with one "
                                                  f"label per row ({len(rows)}), or left out")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise RequestError(400, f"{field}.data[{i}]", f"{field}.data[{i}]: got {show(row)}; must be an array "
                                                          f"of {len(columns)} values, one per column")
    return [dict(zip(columns, row, strict=True)) for row in rows]


def unique_columns(columns: Sequence[str], field: str) -> None:
    """400 naming the first column given twice: which of the two a model should read is ambiguous."""
    if len(set(columns)) != len(columns):
        seen: dict[str, int] = {}
        for i, column in enumerate(columns):
            if column in seen:
                raise RequestError(400, field, f"{field}: column {column!r} is given twice (positions "
                                               f"{seen[column]} and {i}); which one counts is ambiguous. Name each "
                                               "column once")
            seen[column] = i


def _columnar_records(data: dict[str, list[Any]], key: str, max_rows: int) -> list[dict[str, Any]]:
    lengths = {len(values) for values in data.values()}
    if len(lengths) != 1:
        raise RequestError(400, key, f"{key}: columns have different lengths {sorted(lengths)}; give every column "
                                     "one value per row")
    check_rows(lengths.pop(), key, max_rows, status=400)
    names = list(data)
    return [dict(zip(names, row, strict=True)) for row in zip(*data.values(), strict=True)]


def _positional_records(rows: list[list[Any]], key: str, positional: Sequence[str]) -> list[dict[str, Any]]:
    for i, row in enumerate(rows):
        if len(row) != len(positional):
            raise RequestError(400, f"{key}[{i}]", f"{key}[{i}]: has {len(row)} values; a row given as an array "
                                                   f"needs {len(positional)}, in this order: {list(positional)}")
    return [dict(zip(positional, row, strict=True)) for row in rows]


def _csv_rows(body: bytes, max_rows: int) -> tuple[list[str], list[list[str]]]:
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, "body", f"body: {len(body)} bytes is above the limit of {MAX_BODY_BYTES}")
    try:
        rows = [row for row in csv.reader(io.StringIO(body.decode("utf-8-sig"))) if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RequestError(400, "csv", f"csv: not readable as UTF-8 CSV ({exc})") from None
    if not rows:
        raise RequestError(400, "csv", "csv: empty; send a header line of column names, then one line per row")
    header, data = rows[0], rows[1:]
    unique_columns(header, "csv header")
    check_rows(len(data), "csv", max_rows, status=400)
    for i, row in enumerate(data, start=2):
        if len(row) != len(header):
            raise RequestError(400, f"csv line {i}", f"csv line {i}: has {len(row)} fields; the header has "
                                                     f"{len(header)}")
    return header, data


def _table(records: list[Any], field: str, wanted: Sequence[str], entity_keys: Sequence[str]) -> FeatureTable:
    """Feature values of the `wanted` columns the first row carries; every row must carry the same ones."""
    first = records[0]
    if not isinstance(first, dict):
        raise RequestError(400, f"{field}[0]", f"{field}[0]: got a JSON {json_type(first)}; each row must be an "
                                               "object of column -> value")
    columns = [c for c in wanted if c in first]
    values: dict[str, list[float]] = {c: [] for c in columns}
    for i, row in enumerate(records):
        if not isinstance(row, dict):
            raise RequestError(400, f"{field}[{i}]", f"{field}[{i}]: got a JSON {json_type(row)}; each row must "
                                                     "be an object of column -> value")
        for column in columns:
            where = f"{field}[{i}].{column}"
            if column not in row:
                raise RequestError(400, where, f"{where}: missing, but row 0 has it; send null for a missing value")
            value = row[column]
            values[column].append(_csv_number(value, where) if type(value) is str and field == "csv"
                                  else number(value, where, status=400, allow_missing=True))
    keyed = entity_keys and all(isinstance(r, dict) and all(k in r for k in entity_keys) for r in records)
    entities = [{k: r[k] for k in entity_keys} for r in records] if keyed else None

    def row_name(i: int, name: str) -> str:
        return f"{field}[{i}].{name}" if name else f"{field}[{i}]"

    return FeatureTable(rows=len(records), values=values, entities=entities, where=row_name)


def _csv_number(text: str, field: str) -> float:
    if text.strip() == "" or text.strip().lower() == "nan":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = math.inf
    if not math.isfinite(value):
        raise RequestError(400, field, f"{field}: got {show(text)}; must be a finite number (empty = missing)")
    return value


def missing_columns(table: FeatureTable, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c not in table.values]


# ---------------------------------------------------------------------------- /admin/deploy
def parse_deploy(payload: Any) -> tuple[str | None, str, float]:
    """`{"version"?: str|int, "mode": "full"|"canary"|"shadow", "fraction"?: float}` -> arguments of deploy()."""
    if not isinstance(payload, dict) or set(payload) - {"version", "mode", "fraction"}:
        raise RequestError(422, "body", f"body: got {payload!r:.80}; send {{\"version\"?: \"3\", \"mode\": "
                                        "\"full\"|\"canary\"|\"shadow\", \"fraction\"?: 0.1}")
    version, mode, fraction = payload.get("version"), payload.get("mode"), payload.get("fraction")
    if version is not None and (type(version) not in (str, int) or not str(version).isdigit()):
        raise RequestError(422, "version", f"version: got {version!r}; must be a registered version number like "
                                           "\"3\" (or leave it out for the alias' version)")
    if mode not in ("full", "canary", "shadow"):
        raise RequestError(422, "mode", f"mode: got {mode!r}; must be one of full, canary, shadow")
    if mode == "canary" and (isinstance(fraction, bool) or not isinstance(fraction, int | float)
                             or not 0 < fraction <= 1):
        raise RequestError(422, "fraction", f"fraction: got {fraction!r}; a canary needs 0 < fraction <= 1 "
                                            "(0.1 = 10% of entity keys)")
    if mode != "canary" and fraction not in (None, 0):
        raise RequestError(422, "fraction", f"fraction: got {fraction!r}; only mode canary takes a fraction")
    return (str(version) if version is not None else None), mode, float(fraction or 0.0)
