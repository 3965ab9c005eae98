"""Training sets built from the `small_demo` tables without Feast, for tests that need one quickly.

The join is the point-in-time join Feast does: each ride gets the driver's newest stats at or
before the ride's event time (`merge_asof`, backward, by driver).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd


def demo_as_of_join(small_demo: Any) -> pd.DataFrame:
    """The demo rides (without ride_id) joined as-of with the driver stats (without `created`)."""
    _, tables = small_demo
    rides = tables["rides"].drop(columns="ride_id").sort_values("event_timestamp")
    stats = tables["driver_hourly_stats"].drop(columns="created").sort_values("event_timestamp")
    return pd.merge_asof(rides, stats, on="event_timestamp", by="driver_id", direction="backward")


def write_training_set(frame: pd.DataFrame, path: Path, **lineage: Any) -> dict[str, Any]:
    """Write `frame` to parquet at `path`; its lineage dict: path, sha256, rows, then `lineage`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "rows": len(frame),
            **lineage}


def demo_training_set(small_demo: Any, directory: Path) -> dict[str, Any]:
    """A point-in-time training set like the Feast task writes (`ride_completion.parquet`), plus its lineage."""
    frame = demo_as_of_join(small_demo)
    frame = frame.rename(columns={c: f"driver_hourly_stats__{c}" for c in ("conv_rate", "acc_rate")})
    return write_training_set(
        frame, directory / "ride_completion.parquet",
        start=frame["event_timestamp"].min().isoformat(),
        end=frame["event_timestamp"].max().isoformat(),
        feature_service="ride_completion_v1",
        feature_views={"driver_hourly_stats": ["conv_rate", "acc_rate", "avg_daily_trips", "rating"]},
        columns=list(frame.columns),
        missing={c: int(n) for c, n in frame.isna().sum().items() if n},
    )
