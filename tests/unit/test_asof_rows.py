"""core/asof_rows.py: the pyarrow reader returns what the duckdb query returns, and files pyarrow
cannot read as Feast would go through duckdb (real parquet files, both real readers)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core import asof_rows
from airflow_mlops.core.asof_join import AsofView

pytestmark = pytest.mark.unit

HOUR_US = 3_600 * 10**6


def _view(path: Path, created: str | None = "created", ttl_hours: int = 3) -> AsofView:
    return AsofView(name="v", path=str(path / "**" / "*.parquet"), timestamp="event_timestamp", created=created,
                    keys=(("driver", "driver_id"),), features=(("x", "x"), ("n", "n"), ("label", "label")),
                    ttl_us=ttl_hours * HOUR_US)


def _write(folder: Path, name: str, frame: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / name, index=False)


def _frame(seed: int, tz: str | None, unit: str = "us") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = 400
    # Each file its own 48 h (seed = day), many rows per (driver, hour): the created order decides.
    times = pd.Timestamp("2026-01-01") + pd.to_timedelta(48 * seed + rng.integers(0, 48, rows), unit="h")
    times = (times.tz_localize(tz) if tz else times).astype(f"datetime64[{unit}{', ' + tz if tz else ''}]")
    created = pd.Series(times + pd.to_timedelta(rng.permutation(rows), unit="s"))  # unique: no arbitrary tie
    created[rng.random(rows) < 0.1] = pd.NaT
    driver = pd.array(rng.integers(0, 20, rows), dtype="Int64")
    driver[rng.random(rows) < 0.05] = pd.NA  # rows without a key are never picked
    n = pd.array(rng.integers(0, 9, rows), dtype="Int64")
    n[rng.random(rows) < 0.1] = pd.NA
    frame = pd.DataFrame({"driver": driver, "event_timestamp": times, "created": created,
                          "x": rng.normal(size=rows), "n": n, "label": rng.choice(["a", "b", None], rows)})
    # Two NULL created times of one (driver, time) would tie (either order is Feast's): keep one.
    return frame[~(frame["created"].isna() & frame.duplicated(["driver", "event_timestamp"]))]


def _key_time_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Both readers group rows by key and order them by (time, created); only the order of the keys differs."""
    return frame.sort_values(["__k0", "__ts"], kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("tz,unit", [("UTC", "us"), (None, "us"), ("Europe/Paris", "ns")])
def test_arrow_rows_equal_duckdb_rows(tmp_path: Path, tz: str | None, unit: str) -> None:
    for day in range(3):
        _write(tmp_path / f"day={day}", "part.parquet", _frame(day, tz, unit))
    view = _view(tmp_path)
    start, end = 1_767_225_600 * 10**6 + 10 * HOUR_US, 1_767_225_600 * 10**6 + 130 * HOUR_US
    arrow = asof_rows._arrow_rows(view, start, end)
    duck = asof_rows._frame_rows(view, asof_rows._duckdb_rows(view, start, end))
    got, want = _as_frame(arrow), _as_frame(duck)
    assert len(got) > 100 and list(got.columns) == list(want.columns)
    assert got["__ts"].between(start - 3 * HOUR_US, end).all() and got["__k0"].notna().all()
    # An integer column with NULLs: float64 + NaN from pyarrow (as Feast's to_df), Int64 from duckdb's fetch_df.
    assert got["n"].dtype == "float64" and want["n"].dtype == "Int64"
    pd.testing.assert_frame_equal(_key_time_order(got), _key_time_order(want.astype({"n": "float64"})))
    for rows in (arrow, duck):
        assert (np.diff(rows.codes) >= 0).all(), "rows of one key must be contiguous, codes ascending"
        assert rows.codes.dtype == np.int64 and rows.ts.dtype == np.int64


def _as_frame(rows: asof_rows.ViewRows) -> pd.DataFrame:
    """The rows as one frame: key values (by code), event time and the features."""
    return pd.DataFrame({"__k0": rows.uniques.take(rows.codes), "__ts": rows.ts,
                         **{name: values.reset_index(drop=True) for name, values in rows.features.items()}})


def test_string_event_times_are_read_by_duckdb(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frame = _frame(7, None).assign(event_timestamp=lambda f: f["event_timestamp"].astype(str))
    _write(tmp_path / "a", "part.parquet", frame)
    view = _view(tmp_path, created=None, ttl_hours=0)
    with caplog.at_level(logging.WARNING, logger=asof_rows.__name__):
        rows = asof_rows.view_rows(view, 0, 2**62)
    assert "feature view v: reading" in caplog.text and "not a timestamp" in caplog.text
    assert len(rows) == frame["driver"].notna().sum()


def test_no_matching_file_fails_as_duckdb_does(tmp_path: Path) -> None:
    import duckdb

    with pytest.raises(duckdb.IOException, match="No files found"):
        asof_rows.view_rows(_view(tmp_path), 0, 2**62)


@pytest.mark.parametrize("time_ordered", [True, False])
@pytest.mark.parametrize("with_created", [True, False])
@pytest.mark.parametrize("keys", [7, 70_000])  # 70,000 key codes do not fit the uint16 radix sort
def test_key_time_order_is_lexsorts_order(time_ordered: bool, with_created: bool, keys: int) -> None:
    rng = np.random.default_rng(keys)
    n = 200_000
    ts = rng.integers(0, 500, n).astype("int64")  # many equal times: created and the stable order decide
    created = rng.integers(0, 50, n).astype("int64")
    created[rng.random(n) < 0.1] = asof_rows._NULL_TIME  # NULL created sorts first
    if time_ordered:
        order = np.lexsort((created, ts))
        ts, created = ts[order], created[order]
    codes = rng.integers(0, keys, n).astype("int64")
    got = asof_rows._key_time_order(codes, ts, created if with_created else None)
    want = np.lexsort((created, ts, codes) if with_created else (ts, codes))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("values", [
    np.array([5, -3, 5, 9, -3, 0], dtype="int64"),        # dense ids, negatives: codes by counting
    np.array([7, 2**40, 7, 3], dtype="int64"),            # sparse ids: hashed
    np.array([3, 1, 3], dtype="uint32"),
    np.array(["b", "a", "b"], dtype=object),
])
def test_factorize_codes_map_back_to_the_key_values(values: np.ndarray) -> None:
    codes, uniques = asof_rows._factorize([pd.Series(values)])
    assert codes.dtype == np.int64 and len(uniques) == len(set(values.tolist()))
    np.testing.assert_array_equal(uniques.take(codes).to_numpy(), values)
    assert uniques.dtype == values.dtype, "key values keep their type (an int64 id is not rounded through float)"
    assert (uniques.get_indexer(values) == codes).all()
