"""`/invocations` as `mlflow models serve` answers it, for the same registered version and body.

Two paths, one answer:

- **fast path** (ours): a JSON `dataframe_split` / `dataframe_records` body whose every feature value
  is a plain JSON number of the type the version's MLflow signature declares (`long`/`integer`
  columns: integers; `double`/`float`: numbers or null) and nothing else (no `params`, no other
  key). Those are bodies MLflow reads into exactly these numbers; they are scored by the serving
  scorer (canary routing, compiled numpy, prediction log) and answered in MLflow's shape for the
  version's pyfunc `predict_fn`: `predict_proba` -> one row of class probabilities per row (`[[p0, p1],
  ...]` for a binary classifier, one column per class in `classes_` order otherwise), `predict` -> the
  class labels (classifiers) or the values (regressors). A regressor logged with `predict_proba` has
  nothing to answer with: MLflow's own path answers (its error).
- **MLflow path**: every other body (CSV, `instances`/`inputs`, `params`, nulls in integer
  columns, strings, NaN/Infinity tokens, extra top-level keys, other content types) goes to MLflow's
  own `mlflow.pyfunc.scoring_server.invocations` with the primary version's pyfunc model, so what
  MLflow accepts, converts or refuses (status and JSON error) is decided by MLflow's code itself.
  The rows it scored are written to the prediction log too.

Deliberate differences (refusals of what MLflow silently takes), applied on both paths before either
reads the body: a key repeated in one JSON object or a column named twice (MLflow keeps the last /
renames it) -> 400; more than `max_rows` rows or a body above the size limit -> 413/400; no
Content-Type header (MLflow answers 500) -> 415; rows whose features are all missing -> 422 and,
with `serving.validate_ranges`, values outside the training profile -> 422 (fast path).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.serving.protocols import (
    CSV,
    JSON,
    FeatureTable,
    RequestError,
    check_rows,
    load_json,
    split_records,
    unique_columns,
)
from airflow_mlops.serving.replies import Reply

if TYPE_CHECKING:
    from airflow_mlops.serving.loaded import LoadedModel

FAST_FORMATS = ("dataframe_split", "dataframe_records")
INTEGER_TYPES = frozenset({"long", "integer"})
FLOAT_TYPES = frozenset({"double", "float"})
FAST_PREDICT_FNS = ("predict_proba", "predict")


@dataclass(frozen=True)
class Rules:
    """What the pre-read refusals need: the row limit, the served versions' feature and integer columns."""

    max_rows: int
    features: tuple[str, ...]
    integer_columns: frozenset[str]
    allow_empty_rows: bool = False


def precheck(body: bytes, content_type: str | None, rules: Rules) -> Any:
    """Our deliberate refusals, before anything reads the body; the parsed JSON (None for other types)."""
    if content_type is None:
        raise RequestError(415, "Content-Type", "Content-Type: missing; send 'application/json' (dataframe_split, "
                                                "dataframe_records, instances, inputs) or 'text/csv'")
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == JSON:
        try:
            payload = load_json(body)  # 400 on a repeated key, 413 on size
        except RequestError as exc:
            if exc.field == "body" and exc.status == 400:  # not JSON at all: MLflow's own words for it
                return None
            raise
        if isinstance(payload, dict):
            _check_split_columns(payload.get("dataframe_split"))
            for key in ("dataframe_split", "dataframe_records", "instances", "inputs"):
                rows = payload.get(key)
                if isinstance(rows, dict):
                    rows = rows.get("data") if key == "dataframe_split" else next(iter(rows.values()), None)
                if isinstance(rows, list) and len(rows) > rules.max_rows:  # no rows at all: MLflow answers it
                    check_rows(len(rows), key, rules.max_rows, status=413)
            _check_rows(payload, rules)
        return payload
    if mime == CSV:
        _check_csv(body, rules)
    return None


def _json_rows(payload: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(format key, row objects) of the JSON formats made of named values (lists of values: no rows)."""
    split = payload.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("columns"), list) and isinstance(split.get("data"), list):
        names = [str(c) for c in split["columns"]]
        return "dataframe_split", [dict(zip(names, row, strict=False)) for row in split["data"]
                                   if isinstance(row, list)]
    for key in ("dataframe_records", "instances", "inputs"):
        rows = payload.get(key)
        if isinstance(rows, list):
            return key, [row for row in rows if isinstance(row, dict)]
        if isinstance(rows, dict) and all(isinstance(col, list) for col in rows.values()):
            length = max((len(col) for col in rows.values()), default=0)
            return key, [{c: col[i] for c, col in rows.items() if i < len(col)} for i in range(length)]
    return "body", []


def _check_rows(payload: dict[str, Any], rules: Rules) -> None:
    """Per row: a fractional number for an integer column (MLflow truncates it: 1.5 -> 1, without a word) -> 400;
    every feature missing (null or absent) -> 422 unless the spec allows empty rows."""
    key, rows = _json_rows(payload)
    for i, row in enumerate(rows):
        for column in rules.integer_columns & row.keys():
            value = row[column]
            if type(value) is float and math.isfinite(value) and not value.is_integer():
                raise RequestError(400, f"{key}[{i}].{column}", f"{key}[{i}].{column}: got {value!r}; the model's "
                                   f"signature types {column!r} as an integer, which MLflow would truncate to "
                                   f"{int(value)} without a word. Send an integer")
        # (a row naming none of the features is a schema mismatch: MLflow's "missing inputs" answers it)
        if not rules.allow_empty_rows and rules.features and all(c in row and row[c] is None
                                                                 for c in rules.features):
            raise RequestError(422, f"{key}[{i}]", f"{key}[{i}]: every feature of the model ({list(rules.features)}) "
                                                   "is missing; a prediction from no input is a guess. Send the "
                                                   "features (or set serving.allow_empty_rows: true in the spec)")


def format_key(payload: Any) -> str:
    """How errors name rows of this body: its MLflow format key, or csv."""
    if isinstance(payload, dict):
        return next((k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in payload),
                    "body")
    return "csv"


def _check_split_columns(split: Any) -> None:
    if isinstance(split, dict) and isinstance(split.get("columns"), list):
        columns = split["columns"]
        if all(isinstance(c, str) for c in columns):
            unique_columns(columns, "dataframe_split.columns")


def _check_csv(body: bytes, rules: Rules) -> None:
    """CSV: a column named twice in the header (pandas would rename it 'x.1') -> 400; too many lines -> 413;
    a line with every feature empty -> 422 (unless allowed)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return  # MLflow answers it (its own UTF-8 error)
    lines = [row for row in csv.reader(io.StringIO(text)) if row]
    if not lines:
        return
    header, rows = lines[0], lines[1:]
    unique_columns(header, "csv header")
    if len(rows) > rules.max_rows:
        check_rows(len(rows), "csv", rules.max_rows, status=413)
    at = [header.index(c) for c in rules.features if c in header]
    for i, row in enumerate(rows):
        if not rules.allow_empty_rows and len(at) == len(rules.features) and at and \
                all(j >= len(row) or not row[j].strip() for j in at):
            raise RequestError(422, f"csv[{i}]", f"csv[{i}] (line {i + 2}): every feature of the model is empty; a "
                                                     "prediction from no input is a guess. Send the features (or "
                                                     "set serving.allow_empty_rows: true in the spec)")


def fast_table(payload: Any, content_type: str, model: LoadedModel, entity_keys: Sequence[str]) -> FeatureTable | None:
    """The body as a FeatureTable when it is on the fast path (see the module doc), else None."""
    params = [p.strip().lower() for p in content_type.split(";")]
    fast_request = (params[0] == JSON and all(p == "charset=utf-8" for p in params[1:]) and answerable(model)
                    and isinstance(payload, dict) and len(payload) == 1)
    key, data = next(iter(payload.items())) if fast_request else ("", None)
    records = _records(key, data) if fast_request else None
    return _typed_columns(records, key, model, entity_keys) if records else None


def _records(key: str, data: Any) -> list[dict[str, Any]] | None:
    """Row objects of a `dataframe_split` / `dataframe_records` value in pandas' shape, else None."""
    if key == "dataframe_records":
        return data if isinstance(data, list) and all(isinstance(r, dict) for r in data) else None
    if key != "dataframe_split" or not isinstance(data, dict) or set(data) - {"columns", "data", "index"}:
        return None
    try:
        return split_records(data, max_rows=len(data.get("data") or []) + 1) if "columns" in data else None
    except RequestError:
        return None


def _typed_columns(records: list[dict[str, Any]], key: str, model: LoadedModel,
                   entity_keys: Sequence[str]) -> FeatureTable | None:
    """Every feature column in every row, of its signature type (other columns: scalars); else None."""
    columns = set(model.feature_columns)
    values: dict[str, list[float]] = {c: [] for c in model.feature_columns}
    for record in records:
        if not columns <= record.keys():
            return None  # a missing column: MLflow's schema enforcement decides
        for column, value in record.items():
            if column not in columns:  # MLflow ignores columns outside the signature (with a warning)
                if value is not None and type(value) not in (int, float, str, bool):
                    return None
                continue
            number = _typed(value, model.input_types.get(column, "double"))
            if number is None:
                return None
            values[column].append(number)
    entities = None
    if entity_keys and all(k in r for r in records for k in entity_keys):
        entities = [{k: r.get(k) for k in entity_keys} for r in records]

    def where(i: int, name: str) -> str:
        return f"{key}[{i}].{name}" if name else f"{key}[{i}]"

    return FeatureTable(rows=len(records), values=values, entities=entities, where=where)


def _typed(value: Any, kind: str) -> float | None:
    """The float of a JSON value MLflow would read as exactly that number for a `kind` column, else None."""
    if type(value) is int:
        if kind in FLOAT_TYPES or (kind in INTEGER_TYPES and -(2**63) <= value < 2**63):
            return float(value)
        return None
    if value is None and kind in FLOAT_TYPES:
        return float("nan")
    if type(value) is float and math.isfinite(value):  # 1e400 parses to inf
        if kind in FLOAT_TYPES:
            return value
        if kind in INTEGER_TYPES and value.is_integer() and -(2.0**63) <= value < 2.0**63:
            return value  # MLflow reads 10.0 into a long column as 10 (a fraction is refused by precheck)
    return None


def answerable(model: LoadedModel) -> bool:
    """Can the fast path answer for `model` what its pyfunc predict_fn returns (`mlflow_answer`)?"""
    if model.predict_fn not in FAST_PREDICT_FNS:
        return False
    return not (model.output.task == "regression" and model.predict_fn == "predict_proba")


def mlflow_answer(predictions: Sequence[Any], model: LoadedModel) -> list[Any]:
    """The task's scores (`LoadedModel.predict_matrix`) -> what the version's pyfunc predict_fn returns, as MLflow
    writes it: probabilities per class, or sklearn's `predict` (the class: argmax, a tie is the first class; or the
    value)."""
    output = model.output
    if model.predict_fn == "predict_proba":
        if output.task == "binary":
            return [[1.0 - p, p] for p in predictions]
        return [[float(p) for p in row] for row in predictions]
    if output.task == "regression":
        return [float(v) for v in predictions]
    return [output.class_of(p) for p in predictions]


class _Recorder:
    """The pyfunc model as MLflow's scoring function sees it: checks the frame MLflow parsed (`check`, which
    raises RequestError), keeps it and the answer. A RequestError is kept aside: MLflow would turn any
    exception of predict into its own 400."""

    def __init__(self, pyfunc: Any, check: Callable[[Any], None]) -> None:
        self.metadata = pyfunc.metadata
        self._pyfunc = pyfunc
        self._check = check
        self.frame: Any = None
        self.refused: RequestError | None = None

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        try:
            self._check(data)
        except RequestError as exc:
            self.refused = exc
            raise
        raw = self._pyfunc.predict(data, params=params)
        self.frame = data
        return raw


def by_mlflow(body: bytes, content_type: str, model: LoadedModel, check: Callable[[Any], None]) -> tuple[Reply, Any]:
    """MLflow's own /invocations on `model`'s pyfunc: (the reply as MLflow sends it, the frame it scored or None).

    `check(frame)` sees the frame MLflow parsed before the model does (our row limit, all-missing rows)."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import invocations

    recorder = _Recorder(model.pyfunc, check)
    try:
        answer = invocations(body, content_type, recorder, model.pyfunc.metadata.get_input_schema())
    except MlflowException as exc:  # what MLflow's route wrapper turns into a response
        if recorder.refused is not None:
            raise recorder.refused from None
        return Reply(exc.get_http_status_code(), {}, body=exc.serialize_as_json().encode()), None
    mime = answer.mimetype if "/" in answer.mimetype else JSON
    reply = Reply(answer.status, {}, body=answer.response.encode(), media_type=mime)
    return reply, recorder.frame if answer.status == 200 else None


def table_from_frame(frame: Any, model: LoadedModel, key: str) -> FeatureTable | None:
    """A frame's feature columns as floats (NaN = missing); None when it lacks some or they are not numeric
    (MLflow's schema enforcement then refuses it, or the model does)."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame) or any(c not in frame.columns for c in model.feature_columns):
        return None
    try:
        values = {c: pd.to_numeric(frame[c], errors="raise").astype("float64").tolist() for c in model.feature_columns}
    except (TypeError, ValueError):
        return None

    def where(i: int, name: str) -> str:  # `key`: the body's format (dataframe_split, csv, ...)
        return f"{key}[{i}].{name}" if name else f"{key}[{i}]"

    return FeatureTable(rows=len(frame), values=values, where=where)


