"""Summaries and XComs are strict JSON whatever a batch held: NaN, ±inf, huge ints, numpy and pandas values."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.xcom import json_safe

pytestmark = pytest.mark.unit


def test_every_value_a_batch_can_hold_becomes_strict_json() -> None:
    value = {"nan": float("nan"), "inf": float("inf"), "-inf": -np.inf, "big": 2**70, "small": -(2**60),
             "ok": 2**53, "np_int": np.int64(7), "np_float": np.float32(np.nan), "array": np.array([1.5, np.inf]),
             "ts": pd.Timestamp("2026-10-01", tz="UTC"), "nat": pd.NaT, "dt": datetime(2026, 1, 1, tzinfo=UTC),
             "bytes": b"\xff", "set": {1}, "tuple": (1, "a"), 3: None, "na": pd.NA, "flag": np.bool_(True)}
    safe = json_safe(value)
    text = json.dumps(safe, allow_nan=False)  # raises on anything that is not strict JSON
    assert json.loads(text) == {
        "nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "big": str(2**70), "small": str(-(2**60)),
        "ok": 2**53, "np_int": 7, "np_float": "NaN", "array": [1.5, "Infinity"], "ts": "2026-10-01T00:00:00+00:00",
        "nat": "NaT", "dt": "2026-01-01T00:00:00+00:00", "bytes": "\\xff", "set": [1], "tuple": [1, "a"], "3": None,
        "na": "<NA>", "flag": True}
