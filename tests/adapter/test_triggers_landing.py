"""LandingFileTrigger on real files in a temp landing dir, driven with asyncio (no filesystem mocks)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import AssetWatcher
from airflow.triggers.base import BaseEventTrigger

from airflow_mlops.triggers.landing import (
    POLL_INTERVAL_ENV,
    LandingFileTrigger,
    LandingScan,
    poll_interval_from_env,
)
from support.triggers import collect_events

pytestmark = pytest.mark.adapter

FAST = 0.05  # seconds between polls in the asyncio tests


def _parquet(path: Path, rows: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"driver_id": list(range(rows)), "conv_rate": [0.5] * rows}), path)
    return path


def _csv(path: Path, text: str = "driver_id,conv_rate\n1,0.5\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _trigger(landing: Path, **kwargs: Any) -> LandingFileTrigger:
    return LandingFileTrigger(landing_dir=str(landing), poll_interval=FAST, **kwargs)


# --- serialization and Airflow's contract -------------------------------------------------------


def test_serializes_to_an_importable_classpath_and_its_kwargs(tmp_path: Path) -> None:
    from airflow.sdk.module_loading import import_string

    trigger = LandingFileTrigger(landing_dir=str(tmp_path), datasets=["rides"], poll_interval=3)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_mlops.triggers.landing.LandingFileTrigger"
    assert kwargs == {"landing_dir": str(tmp_path), "datasets": ["rides"], "poll_interval": 3.0}
    clone = import_string(classpath)(**kwargs)
    assert clone.serialize() == (classpath, kwargs)
    # The triggerer identifies watcher triggers by this hash: equal kwargs must give equal hashes.
    assert BaseEventTrigger.hash(classpath, kwargs) == BaseEventTrigger.hash(*clone.serialize())
    assert isinstance(trigger, BaseEventTrigger)
    AssetWatcher(name="w", trigger=trigger)  # raises unless it is a BaseEventTrigger


def test_landing_asset_watches_the_landing_dir(mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_mlops.dags.assets import landing_asset

    monkeypatch.setenv(POLL_INTERVAL_ENV, "2.5")
    asset = landing_asset()
    assert asset.name == "mlops.landing"
    [watcher] = asset.watchers
    assert watcher.name == "mlops_landing_watcher"
    assert watcher.trigger.serialize()[1] == {"landing_dir": str(mlops_home / "landing"), "datasets": None,
                                              "poll_interval": 2.5}
    assert landing_asset(poll_interval=1).watchers[0].trigger.poll_interval == 1.0


def test_poll_interval_from_env_rejects_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POLL_INTERVAL_ENV, raising=False)
    assert poll_interval_from_env() == 10.0
    for bad in ("soon", "0", "-1"):
        monkeypatch.setenv(POLL_INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=POLL_INTERVAL_ENV):
            poll_interval_from_env()
    with pytest.raises(ValueError, match="poll_interval"):
        LandingFileTrigger(landing_dir="/x", poll_interval=0)


# --- the trigger's run() with asyncio ------------------------------------------------------------


def test_a_complete_parquet_fires_exactly_once_and_names_the_file(tmp_path: Path) -> None:
    batch = _parquet(tmp_path / "rides" / "batch-1.parquet")
    events = asyncio.run(collect_events(_trigger(tmp_path), seconds=10 * FAST, expect=1))
    assert len(events) == 1, events
    assert events[0]["file"] == "rides/batch-1.parquet" and events[0]["dataset"] == "rides"
    assert events[0]["path"] == str(batch) and events[0]["size_bytes"] == batch.stat().st_size
    assert events[0]["modified_at"].endswith("+00:00")


def test_one_event_per_file_and_csv_counts(tmp_path: Path) -> None:
    _parquet(tmp_path / "rides" / "a.parquet")
    _csv(tmp_path / "rides" / "b.csv")
    _parquet(tmp_path / "driver_hourly_stats" / "c.parquet")
    events = asyncio.run(collect_events(_trigger(tmp_path), seconds=10 * FAST, expect=3))
    assert sorted(e["file"] for e in events) == ["driver_hourly_stats/c.parquet", "rides/a.parquet", "rides/b.csv"]


def test_only_files_the_landing_task_would_pick_up_fire(tmp_path: Path) -> None:
    _parquet(tmp_path / "rides" / "batch.parquet.tmp")  # write_demo_batches' temp name
    _parquet(tmp_path / "rides" / ".batch.parquet")  # atomic_write_bytes' temp name
    _parquet(tmp_path / "rides" / "_landed" / "old.parquet")  # already landed
    _parquet(tmp_path / "_landed" / "x" / "y.parquet")  # not a dataset dir
    _parquet(tmp_path / "loose.parquet")  # not in a dataset dir
    _csv(tmp_path / "rides" / "notes.txt")
    _csv(tmp_path / "rides" / "empty.csv", text="")  # nothing to land (yet)
    assert asyncio.run(collect_events(_trigger(tmp_path), seconds=10 * FAST)) == []


def test_the_datasets_argument_limits_the_watch(tmp_path: Path) -> None:
    _parquet(tmp_path / "rides" / "a.parquet")
    _parquet(tmp_path / "driver_hourly_stats" / "b.parquet")
    events = asyncio.run(collect_events(_trigger(tmp_path, datasets=["rides", "missing"]), seconds=10 * FAST,
                                        expect=1))
    assert [e["file"] for e in events] == ["rides/a.parquet"]


def test_a_file_still_being_written_fires_once_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "rides" / "growing.csv"
    trigger = LandingFileTrigger(landing_dir=str(tmp_path), poll_interval=0.3)

    async def write_slowly() -> None:  # appends every 10 ms for ~1 s: every poll sees a new size
        target.parent.mkdir(parents=True)
        with target.open("w") as handle:
            handle.write("driver_id,conv_rate\n")
            for i in range(100):
                handle.write(f"{i},0.5\n")
                handle.flush()
                await asyncio.sleep(0.01)

    events = asyncio.run(collect_events(trigger, seconds=1.0, during=write_slowly, expect=1))
    assert len(events) == 1, events
    assert events[0]["size_bytes"] == target.stat().st_size  # the whole file, not a prefix


def test_the_landing_dir_may_appear_later(tmp_path: Path) -> None:
    landing = tmp_path / "not-yet"

    async def create_later() -> None:
        await asyncio.sleep(3 * FAST)
        _parquet(landing / "rides" / "late.parquet")

    events = asyncio.run(collect_events(_trigger(landing), seconds=10 * FAST, during=create_later, expect=1))
    assert [e["file"] for e in events] == ["rides/late.parquet"]


# --- what the watcher remembers (LandingScan.poll, one call per interval) ------------------------


def test_parquet_without_footer_waits_for_it(tmp_path: Path) -> None:
    whole = _parquet(tmp_path / "src.parquet", rows=100).read_bytes()
    target = tmp_path / "rides" / "b.parquet"
    target.parent.mkdir()
    target.write_bytes(whole[: len(whole) // 2])  # a writer died or is slow: no PAR1 footer
    scan = LandingScan(tmp_path)
    assert [scan.poll() for _ in range(3)] == [[], [], []]
    target.write_bytes(whole)
    assert scan.poll() == []  # changed since the last poll
    assert [p["file"] for p in scan.poll()] == ["rides/b.parquet"]


def test_a_landed_file_is_forgotten_and_a_new_file_with_its_name_fires(tmp_path: Path) -> None:
    batch = _parquet(tmp_path / "rides" / "daily.parquet", rows=5)
    scan = LandingScan(tmp_path)
    assert scan.poll() == [] and len(scan.poll()) == 1
    assert scan.poll() == []  # seen: no second event
    landed = tmp_path / "rides" / "_landed"
    landed.mkdir()
    shutil.move(batch, landed / batch.name)  # what land_raw_batches does
    assert scan.poll() == [] and scan.poll() == []
    _parquet(tmp_path / "rides" / "daily.parquet", rows=7)  # tomorrow's file, same name
    assert scan.poll() == [] and [p["file"] for p in scan.poll()] == ["rides/daily.parquet"]


def test_a_rewritten_file_is_a_new_batch(tmp_path: Path) -> None:
    batch = _csv(tmp_path / "rides" / "b.csv")
    scan = LandingScan(tmp_path)
    assert scan.poll() == [] and len(scan.poll()) == 1
    batch.write_text("driver_id,conv_rate\n1,0.5\n2,0.7\n")
    assert scan.poll() == [] and len(scan.poll()) == 1


def test_after_a_restart_only_files_still_in_landing_fire_again(tmp_path: Path) -> None:
    a = _parquet(tmp_path / "rides" / "a.parquet")
    _parquet(tmp_path / "rides" / "b.parquet")
    first = LandingScan(tmp_path)
    assert first.poll() == [] and len(first.poll()) == 2
    (tmp_path / "rides" / "_landed").mkdir()
    shutil.move(a, tmp_path / "rides" / "_landed" / a.name)  # the triggered run landed a, not yet b
    restarted = LandingScan(tmp_path)  # a new trigger instance: no memory
    assert restarted.poll() == [] and [p["file"] for p in restarted.poll()] == ["rides/b.parquet"]
