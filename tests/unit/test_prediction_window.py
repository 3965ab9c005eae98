"""The prediction log read back for monitoring: window bounds, flattening, sampling (real log writer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflow_mlops.core.prediction_window import read_prediction_window
from airflow_mlops.serving.prediction_log import PredictionLog

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 20, 23, 0, tzinfo=UTC)


def _log(root: Path, rows: int, model: str = "m", start: datetime = T0) -> None:
    with PredictionLog(root, flush_rows=500) as log:
        for i in range(rows):
            log.append({"request_id": f"r{i}", "time": start + timedelta(minutes=i), "model": model,
                        "model_version": "1", "route": "champion", "entity_key": {"driver_id": 1000 + i % 7},
                        "features": {"trip_km": float(i), "surge": None if i % 5 == 0 else 1.5},
                        "prediction": 0.25, "protocol": "predict"})


def test_window_is_half_open_and_crosses_day_partitions(tmp_path: Path) -> None:
    _log(tmp_path, 180)  # 23:00 on day 1 .. 01:59 on day 2
    _log(tmp_path, 50, model="other")
    got = read_prediction_window("m", T0 + timedelta(minutes=30), T0 + timedelta(minutes=150), directory=tmp_path)
    frame = got.frame
    assert len(frame) == 120 and got.sampled_from == 120 and not got.sampled
    assert frame["request_id"].iloc[0] == "r30" and frame["request_id"].iloc[-1] == "r149"
    assert got.entity_columns == ("driver_id",)
    assert set(got.feature_columns) == {"trip_km", "surge"}
    assert frame["surge"].isna().sum() == 24 and frame["trip_km"].dtype.kind == "f"
    assert str(frame["time"].dt.tz) == "UTC"


def test_sampling_bounds_rows_and_reports_the_window_size(tmp_path: Path) -> None:
    _log(tmp_path, 3000)
    got = read_prediction_window("m", T0, T0 + timedelta(days=5), directory=tmp_path, sample_rows=500, seed=1)
    assert got.sampled_from == 3000 and got.sampled
    assert 350 < len(got.frame) < 650


def test_empty_window_and_unknown_model(tmp_path: Path) -> None:
    _log(tmp_path, 10)
    assert read_prediction_window("m", T0 - timedelta(days=3), T0, directory=tmp_path).frame.empty
    nothing = read_prediction_window("nobody", T0, T0 + timedelta(days=1), directory=tmp_path)
    assert nothing.frame.empty and nothing.sampled_from == 0


def test_a_small_window_in_a_busy_day_is_not_sampled(tmp_path: Path) -> None:
    _log(tmp_path, 1500)  # one file set spanning the window and far more outside it
    got = read_prediction_window("m", T0, T0 + timedelta(minutes=300), directory=tmp_path, sample_rows=1000)
    assert got.sampled_from == 300 and len(got.frame) == 300 and not got.sampled


def test_window_bounds_take_the_first_set_end_and_plain_datetimes() -> None:
    import pendulum

    from airflow_mlops.core.prediction_window import window_bounds

    start, end = window_bounds("6h", "", pendulum.datetime(2026, 11, 20, 12, tz="UTC"))
    assert type(end) is datetime and end == datetime(2026, 11, 20, 12, tzinfo=UTC)
    assert start == end - timedelta(hours=6)
    assert window_bounds("1h", "2026-11-20T10:00:00", None)[1] == datetime(2026, 11, 20, 10, tzinfo=UTC)
    before = datetime.now(UTC)
    assert window_bounds("1h", None, "")[1] >= before
