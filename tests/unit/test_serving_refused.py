"""Refused input (issue 16 item 2): nothing ambiguous is accepted silently, per class and protocol.

Classes: a key repeated in one JSON object (any depth, every JSON endpoint), a column named twice
(`dataframe_split`, CSV header), NaN/Infinity tokens, V2 data that its declared datatype cannot hold
(integer bounds, booleans vs numbers, null, NaN) or that does not fit its shape, rows whose features
are all missing, and (serving.validate_ranges) values outside the training-set ranges. Parsing is
tested on raw bodies, as the app reads them; the model-dependent checks through `Scorer` with real
sklearn models, compiled to numpy and not. The same classes over HTTP on a trained model:
tests/integration/test_serving_refused_http.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.spec import Serving
from airflow_mlops.core.training import feature_profile
from airflow_mlops.serving.input_checks import RANGE_MARGIN, FeatureRanges
from airflow_mlops.serving.kserve import INT_BOUNDS, parse_infer
from airflow_mlops.serving.loaded import LoadedModel, prepare
from airflow_mlops.serving.protocols import (
    EntitySchema,
    RequestError,
    load_json,
    parse_deploy,
    parse_invocations,
    parse_predict,
)
from airflow_mlops.serving.routing import Slots
from airflow_mlops.serving.scoring import Background, Scorer

pytestmark = pytest.mark.unit

SCHEMA = EntitySchema(keys={"driver_id": "int"}, request_features=("trip_distance_km", "pickup_hour"),
                      online_features=("conv_rate",), max_rows=5)
COLUMNS = ["trip_distance_km", "pickup_hour", "conv_rate"]
ROW = '{"driver_id": 1001, "trip_distance_km": 3.2, "pickup_hour": 8}'
REC = '{"trip_distance_km": 3.2, "pickup_hour": 8, "conv_rate": 0.5}'


def parse(protocol: str, body: str | bytes, content_type: str = "application/json") -> Any:
    """Parse a raw body exactly as the app's handler for `protocol` does."""
    raw = body.encode() if isinstance(body, str) else body
    if protocol == "predict":
        return parse_predict(load_json(raw, status=400), SCHEMA)
    if protocol == "mlflow":
        return parse_invocations(raw, content_type, wanted=COLUMNS, positional=COLUMNS, entity_keys=["driver_id"],
                                 max_rows=5)
    if protocol == "v2":
        return parse_infer(load_json(raw), wanted=COLUMNS, positional=COLUMNS, schema=SCHEMA)
    return parse_deploy(load_json(raw, status=422))


def tensor(name: str, data: Any, datatype: str = "FP64", shape: list[int] | None = None) -> str:
    return json.dumps({"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data})


def v2_features(datatype: str, value: Any, column: str = "pickup_hour") -> str:
    """One feature-tensor request; `column` carries `value` declared as `datatype`, the others FP64."""
    inputs = [tensor(c, [value], datatype) if c == column else tensor(c, [1.0]) for c in COLUMNS]
    return '{"inputs": [' + ", ".join(inputs) + "]}"


# ---------------------------------------------------------------------------- parse-time refusals
# (protocol, body, status, field): the error names `field` (as its field and in its message)
DUPLICATE_KEYS = [
    ("predict", '{"driver_id": 1, "driver_id": 2, "trip_distance_km": 1, "pickup_hour": 1}', "driver_id"),
    ("predict", '{"driver_id": 1, "driver\\u005fid": 2, "trip_distance_km": 1, "pickup_hour": 1}', "driver_id"),
    ("predict", f'{{"entities": [{ROW}], "entities": [{ROW}]}}', "entities"),
    ("predict", f'{{"entities": [{ROW}, {ROW[:-1]}, "pickup_hour": 9}}]}}', "entities[1].pickup_hour"),
    ("predict", f'{{"request_id": "a", "entities": [{ROW}], "request_id": "b"}}', "request_id"),
    ("mlflow", f'{{"dataframe_records": [{REC}, {REC[:-1]}, "conv_rate": null}}]}}', "dataframe_records[1].conv_rate"),
    ("mlflow", '{"dataframe_split": {"columns": ["a"], "data": [[1]], "columns": ["b"]}}', "dataframe_split.columns"),
    ("mlflow", '{"inputs": [[1, 2, 3]], "inputs": [[4, 5, 6]]}', "inputs"),
    ("mlflow", '{"inputs": {"trip_distance_km": [1], "pickup_hour": [2], "conv_rate": [3], "conv_rate": [4]}}',
     "inputs.conv_rate"),
    ("mlflow", '{"instances": [{"a": {"b": 1, "b": 2}}]}', "instances[0].a.b"),
    ("mlflow", '{"inputs": [[1, 2, 3]], "params": {"p": 1, "p": 2}}', "params.p"),
    ("v2", '{"inputs": [{"name": "pickup_hour", "shape": [1], "datatype": "FP64", "data": [1], "data": [2]}]}',
     "inputs[0].data"),
    ("v2", '{"id": "a", "inputs": [], "id": "b"}', "id"),
    ("v2", f'{{"inputs": [{tensor("pickup_hour", [1])}], "parameters": {{"x": 1, "x": 2}}}}', "parameters.x"),
    ("v2", '{"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1], '
           '"parameters": {"content_type": "np", "content_type": "pd"}}]}', "inputs[0].parameters.content_type"),
    ("admin", '{"mode": "full", "mode": "canary", "fraction": 0.1}', "mode"),
    ("admin", '{"version": "3", "mode": "full", "version": "4"}', "version"),
]


@pytest.mark.parametrize(("protocol", "body", "field"), DUPLICATE_KEYS)
def test_a_key_repeated_in_one_json_object_is_refused_naming_its_path(protocol: str, body: str, field: str) -> None:
    with pytest.raises(RequestError) as info:
        parse(protocol, body)
    assert (info.value.status, info.value.field) == (400, field)
    assert field in info.value.message and "more than once" in info.value.message


def test_the_same_key_in_different_objects_is_fine() -> None:
    batch = parse("predict", f'{{"entities": [{ROW}, {ROW}]}}')
    assert len(batch.entities) == 2


def test_a_repeated_key_before_a_syntax_error_is_refused_as_invalid_json() -> None:
    with pytest.raises(RequestError) as info:
        load_json(b'{"a": {"b": 1, "b": 2}, oops}')
    assert (info.value.status, info.value.field) == (400, "body") and "not valid JSON" in info.value.message


DUPLICATE_COLUMNS = [
    ('{"dataframe_split": {"columns": ["trip_distance_km", "pickup_hour", "conv_rate", "pickup_hour"], '
     '"data": [[1, 2, 3, 4]]}}', "application/json", "dataframe_split.columns", "pickup_hour"),
    ('{"dataframe_split": {"columns": ["x", "x"], "data": [[1, 2]]}}', "application/json",
     "dataframe_split.columns", "'x'"),
    (b"trip_distance_km,pickup_hour,conv_rate,conv_rate\n1,2,3,4\n", "text/csv", "csv header", "conv_rate"),
    (b"\xef\xbb\xbfa,b,a\n1,2,3\n", "text/csv", "csv header", "'a'"),
    (b",x,\n1,2,3\n", "text/csv", "csv header", "''"),
]


@pytest.mark.parametrize(("body", "content_type", "field", "named"), DUPLICATE_COLUMNS)
def test_a_column_named_twice_is_refused(body: str | bytes, content_type: str, field: str, named: str) -> None:
    with pytest.raises(RequestError) as info:
        parse("mlflow", body, content_type)
    assert (info.value.status, info.value.field) == (400, field)
    assert named in info.value.message and "twice" in info.value.message


NON_JSON_NUMBERS = [
    ("predict", ROW.replace("3.2", "NaN"), 422, "trip_distance_km"),
    ("predict", ROW.replace("1001", "Infinity"), 422, "driver_id"),
    ("mlflow", f'{{"dataframe_records": [{REC.replace("0.5", "NaN")}]}}', 400, "dataframe_records[0].conv_rate"),
    ("mlflow", '{"dataframe_split": {"columns": ["trip_distance_km", "pickup_hour", "conv_rate"], '
               '"data": [[-Infinity, 1, 2]]}}', 400, "dataframe_split[0].trip_distance_km"),
    ("mlflow", '{"inputs": [[1, NaN, 3]]}', 400, "inputs[0].pickup_hour"),
    ("v2", v2_features("FP64", "NaN").replace('"NaN"', "NaN"), 400, "inputs[1].data[0]"),
    ("v2", v2_features("FP32", "Infinity").replace('"Infinity"', "Infinity"), 400, "inputs[1].data[0]"),
    ("admin", '{"mode": "canary", "version": "2", "fraction": NaN}', 422, "fraction"),
]


@pytest.mark.parametrize(("protocol", "body", "status", "field"), NON_JSON_NUMBERS)
def test_nan_and_infinity_tokens_are_refused_wherever_a_number_goes(protocol: str, body: str, status: int,
                                                                    field: str) -> None:
    with pytest.raises(RequestError) as info:
        parse(protocol, body)
    assert (info.value.status, info.value.field) == (status, field), info.value.message
    assert "NaN" in info.value.message or "Infinity" in info.value.message or "inf" in info.value.message


def test_null_stays_a_missing_value_and_csv_empty_too() -> None:
    table = parse("mlflow", f'{{"dataframe_records": [{REC.replace("0.5", "null")}]}}')
    assert math.isnan(table.values["conv_rate"][0])
    table = parse("mlflow", b"trip_distance_km,pickup_hour,conv_rate\n1,2,\n", "text/csv")
    assert math.isnan(table.values["conv_rate"][0])


# V2: what each datatype holds. (datatype, value that it cannot hold)
V2_BAD_VALUES = [
    ("INT64", 3.7), ("INT64", 3.0), ("INT64", True), ("INT64", "3"), ("INT64", None), ("INT64", 2**63),
    ("INT64", -(2**63) - 1), ("INT32", 2**31), ("INT32", -(2**31) - 1), ("INT16", 32768), ("INT16", -32769),
    ("INT8", 128), ("INT8", -129), ("UINT8", 256), ("UINT8", -1), ("UINT16", 65536), ("UINT32", 2**32),
    ("UINT32", -1), ("UINT64", 2**64), ("UINT64", -1), ("UINT8", False),
    ("FP16", 65520.0), ("FP16", -70000), ("FP32", 3.5e38), ("FP32", -(10**39)), ("FP64", 10**400),
    ("FP64", True), ("FP64", "1.5"), ("FP32", False),
    ("BOOL", 1), ("BOOL", 0), ("BOOL", "true"), ("BOOL", None), ("BOOL", 1.0),
    ("BYTES", 5), ("BYTES", None), ("BYTES", True),
]


@pytest.mark.parametrize(("datatype", "value"), V2_BAD_VALUES, ids=[f"{d}-{v!r}" for d, v in V2_BAD_VALUES])
def test_v2_data_must_be_what_its_datatype_holds(datatype: str, value: Any) -> None:
    with pytest.raises(RequestError) as info:
        parse("v2", v2_features(datatype, value))
    assert (info.value.status, info.value.field) == (400, "inputs[1].data[0]"), info.value.message
    assert datatype in info.value.message.split("datatype", 1)[1]


@pytest.mark.parametrize(("datatype", "value"), [
    ("INT8", 127), ("INT8", -128), ("UINT8", 255), ("INT64", 2**63 - 1), ("UINT64", 2**64 - 1),
    ("FP16", 65504.0), ("FP16", 7), ("FP32", 3.4e38), ("FP64", 1e300), ("FP64", None),
])
def test_v2_values_at_the_bounds_of_their_datatype_are_accepted(datatype: str, value: Any) -> None:
    table = parse("v2", v2_features(datatype, value)).table
    got = table.values["pickup_hour"][0]
    assert (math.isnan(got) if value is None else got == float(value))


def test_int_bounds_cover_every_v2_integer_type() -> None:
    assert INT_BOUNDS["INT8"] == (-128, 127) and INT_BOUNDS["UINT64"] == (0, 2**64 - 1)
    assert set(INT_BOUNDS) == {f"{s}INT{b}" for s in ("", "U") for b in (8, 16, 32, 64)}


def test_v2_datatypes_of_entity_and_matrix_tensors_are_checked_too() -> None:
    entity = ('{"inputs": [' + tensor("driver_id", [1001], "INT8") + ", " + tensor("trip_distance_km", [1.0])
              + ", " + tensor("pickup_hour", [8], "INT64") + "]}")
    with pytest.raises(RequestError, match=r"inputs\[0\]\.data\[0\]: got 1001; datatype INT8 holds integers in"):
        parse("v2", entity)
    matrix = '{"inputs": [' + tensor("input-0", [[1, 2, 3], [4, 5.5, 6]], "INT32", [2, 3]) + "]}"
    with pytest.raises(RequestError, match=r"inputs\[0\]\.data\[4\]: got 5\.5"):
        parse("v2", matrix)


V2_BAD_SHAPES = [
    (tensor("pickup_hour", [1, 2, 3], shape=[2]), "holds 3 values but shape [2] needs 2"),
    (tensor("input-0", [[1, 2, 3], [4, 5]], shape=[2, 3]), "needs an array of 3"),
    (tensor("input-0", [[1, 2, 3, 4], [5, 6]], shape=[2, 3]), "needs an array of 3"),
    (tensor("input-0", [[1, 2, 3], [4, 5, 6], [7, 8, 9]], shape=[2, 3]), "needs an array of 2"),
    (tensor("input-0", [[1, 2, 3], 4, 5, 6], shape=[2, 3]), "got 4 entries where shape [2, 3] needs an array of 2"),
    (tensor("input-0", [[1, 2, 3], 4], shape=[2, 3]), "got 4 where shape [3] needs an array of 3"),
    (tensor("input-0", [[[1], [2], [3]], [[4], [5], [6]]], shape=[2, 3]), "where a value belongs"),
    (tensor("input-0", [1, 2, 3, 4, 5], shape=[2, 3]), "holds 5 values"),
]


@pytest.mark.parametrize(("inputs", "text"), V2_BAD_SHAPES)
def test_v2_data_must_fit_its_shape(inputs: str, text: str) -> None:
    with pytest.raises(RequestError) as info:
        parse("v2", '{"inputs": [' + inputs + "]}")
    assert info.value.status == 400 and info.value.field == "inputs[0].data" and text in info.value.message


def test_v2_shape_has_at_most_32_dimensions() -> None:
    data: Any = [1]
    for _ in range(32):
        data = [data]
    with pytest.raises(RequestError) as info:
        parse("v2", '{"inputs": [' + tensor("pickup_hour", data, shape=[1] * 33) + "]}")
    assert (info.value.status, info.value.field) == (400, "inputs[0].shape")


def test_v2_data_flat_or_nested_exactly_as_the_shape_is_the_same_table() -> None:
    flat = parse("v2", '{"inputs": [' + tensor("input-0", [1, 2, 3, 4, 5, 6], shape=[2, 3]) + "]}").table
    nested = parse("v2", '{"inputs": [' + tensor("input-0", [[1, 2, 3], [4, 5, 6]], shape=[2, 3]) + "]}").table
    assert flat.values == nested.values == {"trip_distance_km": [1, 4], "pickup_hour": [2, 5], "conv_rate": [3, 6]}


def test_v2_output_named_twice_is_refused() -> None:
    body = ('{"inputs": [' + ", ".join(tensor(c, [1.0]) for c in COLUMNS)
            + '], "outputs": [{"name": "predict_proba"}, {"name": "predict_proba"}]}')
    with pytest.raises(RequestError, match="outputs"):
        parse("v2", body)


# ---------------------------------------------------------------------------- checks against the model
def training_frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"trip_distance_km": rng.uniform(0.5, 40.0, 400), "pickup_hour": rng.integers(0, 24, 400),
                          "conv_rate": rng.uniform(0.0, 1.0, 400)}).astype("float64")
    frame.loc[::7, "conv_rate"] = np.nan
    return frame


def loaded(kind: str, profile: bool = True) -> LoadedModel:
    """A served version: "linear" is compiled to numpy (fastpath), "trees" goes through sklearn."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # here, not at the top: collection stays fast
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    frame = training_frame()
    y = (frame["trip_distance_km"] > 20).astype(int)
    estimator = LogisticRegression() if kind == "linear" else HistGradientBoostingClassifier(max_iter=5)
    model = Pipeline([("impute", SimpleImputer(strategy="median")), ("model", estimator)]).fit(frame, y)
    version = prepare("rides", "4", None, model, "now", feature_profile(frame, COLUMNS) if profile else None)
    assert (version.fast is not None) == (kind == "linear")
    return version


@pytest.fixture(params=["linear", "trees"])
def model(request: pytest.FixtureRequest) -> LoadedModel:
    return loaded(request.param)


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background(None, "rides")
    yield bg
    bg.close()


def scorer(model: LoadedModel, background: Background, **serving: Any) -> Scorer:
    manager = SimpleNamespace(route=Slots(model).route)
    return Scorer(manager, background, "rides", Serving(**serving))  # type: ignore[arg-type]


def test_the_profile_is_the_training_sets_min_max_and_missing_count() -> None:
    frame = training_frame()
    profile = feature_profile(frame, COLUMNS)
    assert profile["rows"] == 400 and set(profile["columns"]) == set(COLUMNS)
    hour = profile["columns"]["pickup_hour"]
    assert (hour["min"], hour["max"], hour["missing"]) == (0.0, 23.0, 0)
    assert profile["columns"]["conv_rate"]["missing"] == 58
    assert json.loads(json.dumps(profile)) == profile


def test_ranges_widen_the_training_range_by_the_margin() -> None:
    ranges = FeatureRanges.from_profile({"columns": {"a": {"min": 0, "max": 23}, "b": {"min": 5, "max": 5},
                                                     "c": {"min": None, "max": None}}}, ["a", "b", "c", "d"])
    assert ranges is not None
    assert ranges.low.tolist()[:2] == [-23 * RANGE_MARGIN, 5 - 5 * RANGE_MARGIN]
    assert ranges.high.tolist()[:2] == [23 + 23 * RANGE_MARGIN, 5 + 5 * RANGE_MARGIN]
    assert ranges.low.tolist()[2:] == [-math.inf] * 2 and ranges.high.tolist()[2:] == [math.inf] * 2
    assert FeatureRanges.from_profile({"columns": {}}, ["a"]) is None
    assert FeatureRanges.from_profile(["not", "a", "profile"], ["a"]) is None


def mlflow_table(rows: list[list[Any]]) -> Any:
    return parse("mlflow", json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows}}))


def test_a_row_whose_features_are_all_missing_is_refused_naming_it(model: LoadedModel,
                                                                   background: Background) -> None:
    table = mlflow_table([[1.0, 2.0, 0.5], [None, None, None]])
    with pytest.raises(RequestError) as info:
        scorer(model, background).score_table(table, "r", "mlflow")
    assert (info.value.status, info.value.field) == (422, "dataframe_split[1]")
    assert "serving.allow_empty_rows" in info.value.message
    allowed = scorer(model, background, allow_empty_rows=True).score_table(table, "r", "mlflow")
    assert len(allowed.predictions) == 2 and all(0 <= p <= 1 for p in allowed.predictions)
    partly = scorer(model, background).score_table(mlflow_table([[None, 3.0, None]]), "r", "mlflow")
    assert len(partly.predictions) == 1


def test_values_outside_the_training_range_are_refused_only_with_validate_ranges(model: LoadedModel,
                                                                                 background: Background) -> None:
    strict, lax = scorer(model, background, validate_ranges=True), scorer(model, background)
    assert model.ranges is not None and model.describe()["feature_ranges"] is True
    inside = mlflow_table([[40.0 + 3.0, 23 + 2.0, None], [0.5, 0.0, 1.0]])  # within the 10 % margin
    assert len(strict.score_table(inside, "r", "mlflow").predictions) == 2
    for row, column in (([1e300, 8, 0.5], "trip_distance_km"), ([3.0, 99, 0.5], "pickup_hour"),
                        ([3.0, 8, -0.5], "conv_rate")):
        table = mlflow_table([[3.0, 8, 0.5], row])
        with pytest.raises(RequestError) as info:
            strict.score_table(table, "r", "mlflow")
        assert (info.value.status, info.value.field) == (422, f"dataframe_split[1].{column}")
        assert column in info.value.message and "serving.validate_ranges" in info.value.message
        assert len(lax.score_table(table, "r", "mlflow").predictions) == 2


def test_only_the_callers_values_are_range_checked_in_entity_rows(model: LoadedModel,
                                                                  background: Background) -> None:
    strict = scorer(model, background, validate_ranges=True)
    batch = parse("predict", f'{{"entities": [{ROW}, {ROW.replace("8}", "99}")}]}}')
    with pytest.raises(RequestError) as info:
        strict.score_entities(batch, {"conv_rate": [0.5, 0.5]}, "predict")
    assert (info.value.status, info.value.field) == (422, "entities[1].pickup_hour")
    ok = parse("predict", f'{{"entities": [{ROW}, {ROW}]}}')
    scored = strict.score_entities(ok, {"conv_rate": [7.0, None]}, "predict")  # online values: not ours to refuse
    assert len(scored.predictions) == 2


def test_a_version_without_a_profile_is_served_unchecked_with_a_warning(background: Background,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    old = loaded("linear", profile=False)
    assert old.ranges is None and old.describe()["feature_ranges"] is False
    strict = scorer(old, background, validate_ranges=True)
    for _ in range(2):
        assert len(strict.score_table(mlflow_table([[1e300, 99, 0.5]]), "r", "mlflow").predictions) == 1
    assert sum("has no training-set feature profile" in r.message for r in caplog.records) == 1
