"""Randomized point-in-time cases on a real Feast repo, for comparing `core.point_in_time` with Feast.

One repo (duckdb offline store, file registry) with two entities (driver_id INT64, city STRING) and
four views over local parquet files, rewritten for every case:

- `hourly`  driver_id, TTL 2 h, a `created` column (equal event times broken by it, some NULL), float,
            int and float-with-NULL features, some rows without a key;
- `city`    city (string key), TTL 90 min, float and string (with NULL) features;
- `pair`    (driver_id, city), TTL 1 day, float feature;
- `forever` driver_id, no TTL (timedelta(0)), int feature.

Each case draws a timestamp unit (us / ns, ns with sub-microsecond parts) and a time zone (UTC, naive,
America/New_York) per file, event times on a coarse grid (many equal times), and entity rows that
sit exactly on feature times, exactly one TTL after them, one microsecond beyond, before any data,
and on unknown keys.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

START = pd.Timestamp("2026-10-01 08:00", tz="UTC")
DRIVERS = 12  # ids 0..11 have rows; the entity rows also ask for 12 and 13
CITIES = ("paris", "lyon", "nice")
TTL = {"hourly": timedelta(hours=2), "city": timedelta(minutes=90), "pair": timedelta(days=1),
       "forever": timedelta(0)}
SERVICES = ("everything", "some")


def apply_repo(store: Any, data_dir: Path) -> None:
    """Register the entities, the four views (files written by `write_case`) and two services."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    data_dir.mkdir(parents=True, exist_ok=True)
    write_case(data_dir, np.random.default_rng(0))  # Feast reads the files' schemas at apply
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    city = Entity(name="city", join_keys=["city"], value_type=ValueType.STRING)

    def source(name: str, created: str = "") -> FileSource:
        return FileSource(path=str(data_dir / f"{name}.parquet"), timestamp_field="event_timestamp",
                          created_timestamp_column=created)

    hourly = FeatureView(name="hourly", entities=[driver], ttl=TTL["hourly"], source=source("hourly", "created"),
                         schema=[Field(name="driver_id", dtype=Int64), Field(name="conv", dtype=Float64),
                                 Field(name="trips", dtype=Int64), Field(name="gappy", dtype=Float64)])
    by_city = FeatureView(name="city", entities=[city], ttl=TTL["city"], source=source("city"),
                          schema=[Field(name="city", dtype=String), Field(name="surge", dtype=Float64),
                                  Field(name="zone", dtype=String)])
    pair = FeatureView(name="pair", entities=[driver, city], ttl=TTL["pair"], source=source("pair"),
                       schema=[Field(name="driver_id", dtype=Int64), Field(name="city", dtype=String),
                               Field(name="pair_score", dtype=Float64)])
    forever = FeatureView(name="forever", entities=[driver], ttl=TTL["forever"], source=source("forever"),
                          schema=[Field(name="driver_id", dtype=Int64), Field(name="tenure", dtype=Int64)])
    services = [FeatureService(name="everything", features=[hourly, by_city, pair, forever]),
                FeatureService(name="some", features=[hourly[["gappy", "conv"]], pair])]
    store.apply([driver, city, hourly, by_city, pair, forever, *services])


def _times(rng: np.random.Generator, n: int) -> pd.Series:
    """UTC event times on a 10-minute grid over 12 hours: many rows share a time."""
    return pd.Series(START + pd.to_timedelta(rng.integers(0, 72, n) * 10, unit="min"))


def _stored(rng: np.random.Generator, times: pd.Series) -> pd.Series:
    """The times as one file stores them: a random unit and zone; ns files get sub-microsecond parts."""
    unit = str(rng.choice(["us", "ns", "ns_sub"]))
    zone = str(rng.choice(["UTC", "naive", "America/New_York"]))
    if unit == "ns_sub":
        times = times + pd.to_timedelta(rng.integers(0, 1000, len(times)) * (rng.random(len(times)) < 0.3), unit="ns")
    times = times.astype("datetime64[ns, UTC]") if unit.startswith("ns") else times.astype("datetime64[us, UTC]")
    return times.dt.tz_localize(None) if zone == "naive" else times.dt.tz_convert(zone)


def write_case(data_dir: Path, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Fresh random files for the four views; returns the frames as written (UTC times kept for edges)."""
    frames = {}
    n = int(rng.integers(40, 160))
    driver = pd.array(rng.integers(0, DRIVERS, n), dtype="Int64")
    driver[rng.random(n) < 0.04] = pd.NA  # rows without a key are never picked
    times = _times(rng, n)
    # created: unique per row (no arbitrary tie), 10 % NULL but at most one NULL per (driver, time)
    created = pd.Series(START + pd.to_timedelta(rng.permutation(n), unit="s"))
    created[rng.random(n) < 0.1] = pd.NaT
    hourly = pd.DataFrame({"driver_id": driver, "event_timestamp": times, "created": created,
                           "conv": rng.normal(size=n), "trips": rng.integers(0, 50, n),
                           "gappy": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n))})
    hourly = hourly[~(hourly["created"].isna() & hourly.duplicated(["driver_id", "event_timestamp"]))]
    frames["hourly"] = hourly
    m = int(rng.integers(10, 60))
    frames["city"] = pd.DataFrame({"city": rng.choice(CITIES, m), "event_timestamp": _times(rng, m),
                                   "surge": rng.uniform(1, 3, m),
                                   "zone": rng.choice(np.array(["z1", "z2", None], dtype=object), m)})
    k = int(rng.integers(10, 80))
    frames["pair"] = pd.DataFrame({"driver_id": rng.integers(0, DRIVERS, k), "city": rng.choice(CITIES, k),
                                   "event_timestamp": _times(rng, k), "pair_score": rng.normal(size=k)})
    j = int(rng.integers(3, 20))
    frames["forever"] = pd.DataFrame({"driver_id": rng.integers(0, DRIVERS, j), "event_timestamp": _times(rng, j),
                                      "tenure": rng.integers(0, 900, j)})
    keys = {"hourly": ["driver_id", "event_timestamp", "created"], "city": ["city", "event_timestamp"],
            "pair": ["driver_id", "city", "event_timestamp"], "forever": ["driver_id", "event_timestamp"]}
    for name in frames:
        frame = frames[name] = frames[name].drop_duplicates(keys[name]).reset_index(drop=True)  # no arbitrary tie
        stored = frame.assign(event_timestamp=_stored(rng, frame["event_timestamp"]))
        if "created" in stored:
            stored["created"] = _stored(rng, stored["created"])
        stored.to_parquet(data_dir / f"{name}.parquet", index=False)
    return frames


def entity_rows(rng: np.random.Generator, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Entity rows at random times, on feature times, one TTL after them and 1 µs beyond, before any data,
    and with unknown drivers and cities; times in a random unit and zone (callers normalize them)."""
    n = int(rng.integers(60, 260))
    rows = pd.DataFrame({"driver_id": rng.integers(0, DRIVERS + 2, n),
                         "city": rng.choice([*CITIES, "oslo"], n),
                         "event_timestamp": START + pd.to_timedelta(rng.integers(-60, 15 * 60, n), unit="min")})
    edges = []
    for name, frame in frames.items():
        picked = frame.dropna(subset=["driver_id"] if "driver_id" in frame else []).sample(
            n=min(len(frame), 12), random_state=int(rng.integers(1 << 30)))
        for shift in (timedelta(0), TTL[name], TTL[name] + timedelta(microseconds=1), -timedelta(microseconds=1)):
            edge = pd.DataFrame({"driver_id": picked["driver_id"].astype("int64") if "driver_id" in picked
                                 else rng.integers(0, DRIVERS, len(picked)),
                                 "city": picked["city"] if "city" in picked else rng.choice(CITIES, len(picked)),
                                 "event_timestamp": picked["event_timestamp"] + shift})
            edges.append(edge)
    rows = pd.concat([rows, *edges], ignore_index=True).sample(frac=1.0, random_state=int(rng.integers(1 << 30)))
    rows = rows.reset_index(drop=True)
    rows["event_timestamp"] = _stored(rng, rows["event_timestamp"].dt.floor("us"))
    return rows


def feast_join(store: Any, service: Any, entity: pd.DataFrame) -> pd.DataFrame:
    """Feast's own get_historical_features of `entity`, rows back in the entity order."""
    rows = entity.assign(__case_row=range(len(entity)))
    frame = store.get_historical_features(entity_df=rows, features=service).to_df()
    assert len(frame) == len(rows), "Feast returned another number of rows"
    return frame.sort_values("__case_row", kind="mergesort").drop(columns="__case_row").reset_index(drop=True)


def differences(ours: pd.DataFrame, feast: pd.DataFrame, features: list[str]) -> list[str]:
    """Every cell of every feature column that differs (values, NULL-ness) and every dtype that differs."""
    problems = []
    for column in features:
        a, b = ours[column], feast[column]
        if a.dtype != b.dtype:
            problems.append(f"{column}: dtype {a.dtype} vs Feast's {b.dtype}")
        null_a, null_b = a.isna().to_numpy(), b.isna().to_numpy()
        same = (null_a & null_b) | (~null_a & ~null_b & (a.astype(object).to_numpy() == b.astype(object).to_numpy()))
        for row in np.flatnonzero(~same)[:5]:
            problems.append(f"{column} row {row}: {a.iloc[row]!r} vs Feast's {b.iloc[row]!r}")
    return problems
