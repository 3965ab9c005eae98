"""Offline store landing: UTC-day partitions, us timestamps, idempotent and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_mlops.core import offline
from airflow_mlops.core.offline import land_batch, land_landing_dir, landed_batches
from airflow_mlops.exceptions import DataValidationFailed

pytestmark = pytest.mark.unit


def _raw(path: Path, *, hours: int = 30, tz: str = "UTC", driver: int = 1) -> Path:
    """A raw batch with ns timestamps (pandas' default) spanning two UTC days."""
    ts = pd.date_range("2026-10-01 06:00", periods=hours, freq="h", tz=tz)
    frame = pd.DataFrame({"driver_id": driver, "event_timestamp": ts, "created": ts + pd.Timedelta(minutes=5),
                          "conv_rate": [i / 100 for i in range(hours)]})
    assert str(frame["event_timestamp"].dtype).startswith("datetime64[ns")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def _parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_partitions_by_utc_date_with_us_utc_timestamps(tmp_path: Path) -> None:
    # 06:00 Berlin (UTC+2) is 04:00 UTC: the partition must follow the UTC date, not the local one.
    src = _raw(tmp_path / "raw" / "b.parquet", hours=30, tz="Europe/Berlin")
    result = land_batch(src, "stats", offline_dir=tmp_path / "offline")

    assert result["rows"] == 30 and not result["already_landed"]
    assert result["start"] == "2026-10-01T04:00:00+00:00" and result["end"] == "2026-10-02T09:00:00+00:00"
    bid = result["batch_id"]
    assert result["files"] == [f"stats/date=2026-10-01/{bid}.parquet", f"stats/date=2026-10-02/{bid}.parquet"]
    day1 = pq.read_table(tmp_path / "offline" / result["files"][0])
    assert day1.num_rows == 20  # 04:00..23:00 UTC
    for column in ("event_timestamp", "created"):
        assert day1.schema.field(column).type == pa.timestamp("us", tz="UTC")


def test_naive_timestamps_are_read_as_utc(tmp_path: Path) -> None:
    src = tmp_path / "naive.parquet"
    pd.DataFrame({"event_timestamp": pd.to_datetime(["2026-10-01 23:30"]), "x": [1]}).to_parquet(src)
    result = land_batch(src, "d", offline_dir=tmp_path / "off")
    assert result["start"] == "2026-10-01T23:30:00+00:00"
    assert "date=2026-10-01" in result["files"][0]


def test_landing_the_same_batch_twice_writes_nothing(tmp_path: Path) -> None:
    src = _raw(tmp_path / "b.parquet")
    first = land_batch(src, "stats", offline_dir=tmp_path / "off")
    before = {p: p.stat().st_mtime_ns for p in _parquet_files(tmp_path / "off")}
    second = land_batch(src, "stats", offline_dir=tmp_path / "off")

    assert second["already_landed"] and second["batch_id"] == first["batch_id"]
    assert second["files"] == first["files"] and second["rows"] == first["rows"]
    assert {p: p.stat().st_mtime_ns for p in _parquet_files(tmp_path / "off")} == before
    other = land_batch(_raw(tmp_path / "c.parquet", driver=2), "stats", offline_dir=tmp_path / "off")
    assert other["batch_id"] != first["batch_id"] and not other["already_landed"]
    assert len(_parquet_files(tmp_path / "off")) == 4
    assert [b["batch_id"] for b in landed_batches(tmp_path / "off", "stats")] == sorted(
        [first["batch_id"], other["batch_id"]])


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _raw(tmp_path / "b.parquet")
    real_write = pq.write_table

    def half_write(table: pa.Table, where: object, **kwargs: object) -> None:
        Path(str(where)).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        land_batch(src, "stats", offline_dir=tmp_path / "off")
    leftovers = [p for p in (tmp_path / "off").rglob("*") if p.is_file()]
    assert leftovers == [], "neither a partition file, a temp file nor a commit record may remain"

    monkeypatch.setattr(pq, "write_table", real_write)
    assert land_batch(src, "stats", offline_dir=tmp_path / "off")["rows"] == 30


def test_a_crash_between_partitions_is_repaired_by_landing_again(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = _raw(tmp_path / "b.parquet")
    real = offline._write_partition
    calls = []

    def crash_on_second(part: pd.DataFrame, target: Path) -> None:
        calls.append(target)
        if len(calls) == 2:
            raise RuntimeError("worker killed")
        real(part, target)

    monkeypatch.setattr(offline, "_write_partition", crash_on_second)
    with pytest.raises(RuntimeError, match="worker killed"):
        land_batch(src, "stats", offline_dir=tmp_path / "off")
    first_file = calls[0]
    mtime = first_file.stat().st_mtime_ns
    assert len(_parquet_files(tmp_path / "off")) == 1 and not (tmp_path / "off" / "stats" / "_batches").exists()

    monkeypatch.setattr(offline, "_write_partition", real)
    result = land_batch(src, "stats", offline_dir=tmp_path / "off")
    assert not result["already_landed"] and len(result["files"]) == 2
    assert first_file.stat().st_mtime_ns == mtime, "the partition already written is kept, not rewritten"
    assert sum(pq.read_table(p).num_rows for p in _parquet_files(tmp_path / "off")) == 30


def test_land_landing_dir_moves_raw_files_and_is_rerunnable(tmp_path: Path) -> None:
    landing, off = tmp_path / "landing", tmp_path / "offline"
    _raw(landing / "stats" / "b1.parquet")
    _raw(landing / "rides" / "r1.parquet", driver=3)
    summary = land_landing_dir(landing, off)

    assert summary["datasets"] == ["rides", "stats"] and summary["landed"] == 2 and summary["rows"] == 60
    assert not list(landing.glob("*/*.parquet"))
    assert (landing / "stats" / "_landed" / "b1.parquet").is_file()
    again = land_landing_dir(landing, off)
    assert again["landed"] == 0 and again["batches"] == []
    # The same file dropped again is recognised; a different file reusing the name keeps both audit copies.
    _raw(landing / "stats" / "b1.parquet")
    assert land_landing_dir(landing, off, datasets=["stats"])["already_landed"] == 1
    _raw(landing / "stats" / "b1.parquet", driver=9)
    new = land_landing_dir(landing, off, datasets=["stats"])
    assert new["landed"] == 1
    assert (landing / "stats" / "_landed" / f"b1.{new['batches'][0]['batch_id']}.parquet").is_file()


def test_batch_without_event_time_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "bad.parquet"
    pd.DataFrame({"driver_id": [1], "ts": pd.to_datetime(["2026-10-01"], utc=True)}).to_parquet(src)
    with pytest.raises(DataValidationFailed, match="no 'event_timestamp' column"):
        land_batch(src, "stats", offline_dir=tmp_path / "off")
    assert not (tmp_path / "off").exists()


def test_duckdb_reads_the_feast_glob_with_hive_partitions(tmp_path: Path) -> None:
    """The path shape include/feature_repo/definitions.py gives Feast: <dataset>/**/*.parquet."""
    result = land_batch(_raw(tmp_path / "b.parquet"), "stats", offline_dir=tmp_path / "off")
    glob = str(tmp_path / "off" / "stats" / "**" / "*.parquet")
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    rows, first, kind = con.execute(
        "SELECT count(*), min(event_timestamp), any_value(typeof(event_timestamp)) FROM read_parquet(?)", [glob]
    ).fetchone()
    assert rows == 30 and kind == "TIMESTAMP WITH TIME ZONE"
    assert first.isoformat() == result["start"]
    manifest = json.loads((tmp_path / "off" / "stats" / "_batches" / f"{result['batch_id']}.json").read_text())
    assert manifest["rows"] == 30
