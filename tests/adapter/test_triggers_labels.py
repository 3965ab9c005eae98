"""LabelFileTrigger on real files in a temp label dir, driven with asyncio (no filesystem mocks)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import AssetWatcher
from airflow.triggers.base import BaseEventTrigger

from airflow_mlops.triggers.labels import LabelFileTrigger, labels_asset
from airflow_mlops.triggers.landing import POLL_INTERVAL_ENV
from support.triggers import collect_events

pytestmark = pytest.mark.adapter

FAST = 0.05


def _labels(path: Path, rows: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"request_id": [f"r{i}" for i in range(rows)], "completed": [i % 2 for i in range(rows)]}),
                   path)
    return path


def test_serializes_and_hashes_stably(tmp_path: Path) -> None:
    from airflow.sdk.module_loading import import_string

    trigger = LabelFileTrigger(labels_dir=str(tmp_path / "m"), model="m", poll_interval=3)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_mlops.triggers.labels.LabelFileTrigger"
    assert kwargs == {"labels_dir": str(tmp_path / "m"), "model": "m", "poll_interval": 3.0}
    clone = import_string(classpath)(**kwargs)
    assert BaseEventTrigger.hash(classpath, kwargs) == BaseEventTrigger.hash(*clone.serialize())
    AssetWatcher(name="w", trigger=trigger)  # raises unless it is a BaseEventTrigger


def test_labels_asset_watches_the_models_label_dir(mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POLL_INTERVAL_ENV, "4")
    asset = labels_asset("ride_completion")
    assert asset.name == "mlops.labels.ride_completion" and asset.uri == "mlops://labels/ride_completion"
    [watcher] = asset.watchers
    assert watcher.trigger.serialize()[1] == {"labels_dir": str(mlops_home / "labels" / "ride_completion"),
                                              "model": "ride_completion", "poll_interval": 4.0}
    custom = labels_asset("ride_completion", path="/data/labels/rc", poll_interval=1)
    assert custom.watchers[0].trigger.serialize()[1]["labels_dir"] == "/data/labels/rc"


def test_one_event_per_file_with_the_payload_and_only_for_this_model(tmp_path: Path) -> None:
    first = _labels(tmp_path / "m" / "day1.parquet")
    (tmp_path / "m" / "day2.csv").write_text("request_id,completed\nr1,1\n")
    _labels(tmp_path / "other" / "x.parquet")  # another model's labels
    _labels(tmp_path / "m" / ".day3.parquet.tmp")  # an atomic writer's temp file
    trigger = LabelFileTrigger(labels_dir=str(tmp_path / "m"), model="m", poll_interval=FAST)
    events = asyncio.run(collect_events(trigger, seconds=10 * FAST, expect=2))
    assert sorted(e["file"] for e in events) == ["day1.parquet", "day2.csv"], events
    one = next(e for e in events if e["file"] == "day1.parquet")
    assert one == {"model": "m", "file": "day1.parquet", "path": str(first), "size_bytes": first.stat().st_size,
                   "modified_at": one["modified_at"]}
    assert one["modified_at"].endswith("+00:00")


def test_a_partial_parquet_fires_only_once_complete(tmp_path: Path) -> None:
    whole = _labels(tmp_path / "src.parquet", rows=200).read_bytes()
    target = tmp_path / "m" / "late.parquet"
    trigger = LabelFileTrigger(labels_dir=str(tmp_path / "m"), model="m", poll_interval=FAST)
    seen_before: list[int] = []

    async def write_in_two_steps() -> None:
        target.parent.mkdir(parents=True)
        target.write_bytes(whole[: len(whole) // 2])  # no PAR1 footer yet
        await asyncio.sleep(10 * FAST)
        seen_before.append(len(events_so_far))
        target.write_bytes(whole)

    events_so_far: list[dict[str, Any]] = []
    events = asyncio.run(collect_events(trigger, seconds=10 * FAST, during=write_in_two_steps, expect=1,
                                        events=events_so_far))
    assert seen_before == [0], "half a parquet file must not fire"
    assert len(events) == 1 and events[0]["size_bytes"] == len(whole), events
