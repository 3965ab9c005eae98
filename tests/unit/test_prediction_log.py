"""PredictionLog, parquet sink: batching, partitioning, atomic files, never blocking, counting drops."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds
import pytest

from airflow_mlops.serving import prediction_log
from airflow_mlops.serving.prediction_log import PredictionLog

pytestmark = pytest.mark.unit

DAY = datetime(2026, 11, 24, 23, 59, 59, tzinfo=UTC)


def record(i: int, model: str = "rides", when: datetime = DAY, **extra: Any) -> dict[str, Any]:
    return {"request_id": f"r{i}", "time": when.isoformat(), "model": model, "model_version": "3",
            "route": "canary" if i % 10 == 0 else "primary", "entity_key": {"driver_id": 1000 + i},
            "features": {"trip_distance_km": i / 10, "hour": i % 24, "missing": float("nan")},
            "prediction": 0.5, "shadow_version": None, "shadow_prediction": None, "protocol": "predict", **extra}


def read(directory: Path) -> pd.DataFrame:
    return ds.dataset(directory, format="parquet", partitioning="hive").to_table().to_pandas()


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_default_directory_is_under_mlops_home(mlops_home: Path) -> None:
    with PredictionLog() as log:
        assert log.directory == mlops_home / "predictions"


def test_close_writes_every_record_partitioned_by_model_and_date(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=1000, flush_seconds=30)
    for i in range(2500):
        log.append(record(i, when=DAY + timedelta(seconds=i % 2)))  # two dates
    log.append(record(9999, model="eta/v2", extra_field=1))
    log.close()
    assert (log.written, log.dropped, log.last_error) == (2501, 0, None)
    names = [p.relative_to(tmp_path).parts[:2] for p in files(tmp_path)]
    assert set(names) == {("rides", "date=2026-11-24"), ("rides", "date=2026-11-25"), ("eta_v2", "date=2026-11-24")}
    assert all(p.name.startswith("part-") and p.suffix == ".parquet" for p in files(tmp_path))
    frame = read(tmp_path / "rides").sort_values("request_id", key=lambda s: s.str[1:].astype(int))
    assert len(frame) == 2500 and frame["request_id"].tolist()[:2] == ["r0", "r1"]
    assert str(frame["time"].dtype) == "datetime64[us, UTC]" and frame["time"].iloc[0] == pd.Timestamp(DAY)
    assert json.loads(frame["entity_key"].iloc[1]) == {"driver_id": 1001}
    assert json.loads(frame["features"].iloc[1]) == {"hour": 1, "missing": None, "trip_distance_km": 0.1}
    assert frame["shadow_prediction"].isna().all() and frame["extra"].isna().all()
    eta = read(tmp_path / "eta_v2")
    assert json.loads(eta["extra"].iloc[0]) == {"extra_field": 1} and eta["model"].iloc[0] == "eta/v2"


def test_flush_rows_and_flush_seconds_trigger_writes(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=100, flush_seconds=0.3)
    for i in range(250):
        log.append(record(i))
    deadline = time.monotonic() + 60
    while log.written < 250 and time.monotonic() < deadline:
        time.sleep(0.02)
    # full batches of 100, then the rest after 0.3 s without a flush() (a stalled producer may add a file)
    assert log.written == 250 and len(files(tmp_path)) >= 3, "the rest is written after flush_seconds"
    log.append(record(250))
    log.flush()
    assert log.written == 251 and len(read(tmp_path / "rides")) == 251
    log.close()


def test_append_never_blocks_even_when_the_writer_is_stuck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real_write = prediction_log._ParquetSink.write

    def stuck(self: Any, rows: list[dict[str, Any]]) -> None:
        release.wait(30)
        real_write(self, rows)

    monkeypatch.setattr(prediction_log._ParquetSink, "write", stuck)
    log = PredictionLog(tmp_path, flush_rows=5, max_queue=10)
    rec = record(1)
    slowest, started = 0.0, time.perf_counter()
    for _ in range(100_000):
        t0 = time.perf_counter()
        log.append(rec)
        slowest = max(slowest, time.perf_counter() - t0)
    took = time.perf_counter() - started
    print(f"\n100k appends against a stuck writer: {took:.2f} s ({took * 10:.1f} us each), "
          f"slowest {slowest * 1e3:.2f} ms, dropped {log.dropped}")
    assert log.dropped >= 100_000 - 20 and slowest < 0.5
    release.set()
    log.close()
    assert log.written + log.dropped == 100_000 and log.written > 0


def test_100k_appends_with_a_tiny_queue_count_every_drop(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=50, max_queue=100)
    for i in range(100_000):
        log.append(record(i))
    log.close()
    assert log.dropped > 0 and log.written + log.dropped == 100_000
    assert len(read(tmp_path / "rides")) == log.written


def test_readers_never_see_half_written_files(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=200, flush_seconds=0.05)
    stop, errors, seen = threading.Event(), [], []

    def reader() -> None:
        while not stop.is_set():
            try:
                if (tmp_path / "rides").exists():
                    seen.append(len(read(tmp_path / "rides")))
            except Exception as exc:  # noqa: BLE001 - the test counts them
                errors.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(20_000):
        log.append(record(i))
        if i % 2000 == 0:  # let the reader take a snapshot between bursts of writes (a condition, not a pause)
            reads, deadline = len(seen) + len(errors), time.monotonic() + 30
            while len(seen) + len(errors) == reads and time.monotonic() < deadline and thread.is_alive():
                time.sleep(0.005)
    log.close()
    stop.set()
    thread.join()
    assert errors == [] and len(seen) > 3 and seen == sorted(seen)
    assert len(read(tmp_path / "rides")) == 20_000
    assert not [p for p in files(tmp_path) if p.name.startswith(".")], "no temp file left behind"


def test_bad_records_and_late_appends_are_counted_not_raised(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(record(1))
    log.append(record(2) | {"time": "yesterday-ish"})
    log.append(record(3) | {"prediction": "high"})
    log.flush()
    assert (log.written, log.dropped) == (1, 2) and "could not convert string to float" in log.last_error
    log.close()
    log.append(record(4))
    log.close()  # idempotent
    assert (log.written, log.dropped) == (1, 3)


def test_a_failing_sink_drops_the_batch_and_the_writer_survives(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    log = PredictionLog(tmp_path)
    calls = []
    real_write = prediction_log._ParquetSink.write

    def flaky(self: Any, rows: list[dict[str, Any]]) -> None:
        calls.append(len(rows))
        if len(calls) == 1:
            raise OSError("No space left on device")
        real_write(self, rows)

    monkeypatch.setattr(prediction_log._ParquetSink, "write", flaky)
    log.append(record(1))
    log.flush()
    assert log.dropped == 1 and "No space left on device" in log.last_error
    log.append(record(2))
    log.close()
    assert log.written == 1 and read(tmp_path / "rides")["request_id"].tolist() == ["r2"]


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush_rows=0, max_queue=1 must be >= 1"):
        PredictionLog(tmp_path, flush_rows=0, max_queue=1)
