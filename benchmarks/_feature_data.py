"""Shared by the feature benchmarks: a seeded synthetic driver domain with 20 features in 3 views.

- `driver_hourly`  8 features, hourly snapshots (2 % randomly missing), TTL 2 days, created column
- `driver_daily`   6 features, one snapshot per day at 02:00 UTC, TTL 2 days
- `driver_events`  6 features, irregular event-driven updates (~4/day, whole minutes), TTL 12 hours,
  so many entity rows have no in-TTL value: the TTL rule is exercised, not just the as-of rule.

`setup_state` writes a temporary Feast repo, lands the tables through the project's own offline
store (`core.offline.land_landing_dir`) and applies the repo through `FeastHook.apply()`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ENTITY_KEY = "driver_id"
TS = "event_timestamp"
SERVICE = "bench_v1"
FIRST_ID = 100_001


@dataclass(frozen=True)
class View:
    name: str
    ttl: timedelta
    floats: tuple[str, ...]
    ints: tuple[str, ...]
    created: bool = False

    @property
    def features(self) -> list[str]:
        return [*self.floats, *self.ints]


VIEWS = (
    View("driver_hourly", timedelta(days=2),
         ("conv_rate", "acc_rate", "rating", "cancel_rate", "earnings_per_hour", "idle_share"),
         ("avg_daily_trips", "online_minutes"), created=True),
    View("driver_daily", timedelta(days=2), ("rating_30d", "avg_distance_7d"),
         ("trips_7d", "trips_30d", "complaints_30d", "tenure_days")),
    View("driver_events", timedelta(hours=12),
         ("last_trip_distance", "last_trip_fare", "last_trip_rating", "last_wait_min", "last_surge", "last_tip"), ()),
)
FEATURE_COUNT = sum(len(v.features) for v in VIEWS)
assert FEATURE_COUNT == 20


@dataclass(frozen=True)
class DataConfig:
    entities: int = 2000
    days: int = 30
    seed: int = 42
    start: datetime = datetime(2026, 10, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    @property
    def ids(self) -> np.ndarray:
        return np.arange(FIRST_ID, FIRST_ID + self.entities, dtype="int64")


def _values(rng: np.random.Generator, view: View, n: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {f: rng.normal(0.0, 1.0, n) for f in view.floats}
    out.update({f: rng.integers(0, 10_000, n, dtype="int64") for f in view.ints})
    return out


def _frame(ids: np.ndarray, stamps: pd.DatetimeIndex | np.ndarray, values: dict[str, np.ndarray]) -> pd.DataFrame:
    frame = pd.DataFrame({ENTITY_KEY: ids, TS: pd.DatetimeIndex(stamps).astype("datetime64[us, UTC]"), **values})
    return frame


def _hourly(cfg: DataConfig, view: View, rng: np.random.Generator) -> pd.DataFrame:
    hours = pd.date_range(cfg.start, cfg.end, freq="h", inclusive="left", tz="UTC", unit="us")
    ids, stamps = np.tile(cfg.ids, len(hours)), np.repeat(hours, cfg.entities)
    keep = rng.uniform(size=len(ids)) >= 0.02
    frame = _frame(ids[keep], stamps[keep], _values(rng, view, int(keep.sum())))
    frame["created"] = (frame[TS] + pd.Timedelta(minutes=5)).astype("datetime64[us, UTC]")
    return frame


def _daily(cfg: DataConfig, view: View, rng: np.random.Generator) -> pd.DataFrame:
    days = pd.date_range(cfg.start + timedelta(hours=2), periods=cfg.days, freq="D", tz="UTC", unit="us")
    ids, stamps = np.tile(cfg.ids, len(days)), np.repeat(days, cfg.entities)
    return _frame(ids, stamps, _values(rng, view, len(ids)))


def _events(cfg: DataConfig, view: View, rng: np.random.Generator) -> pd.DataFrame:
    n = cfg.entities * cfg.days * 4
    ids = rng.choice(cfg.ids, n)
    minutes = rng.integers(0, cfg.days * 24 * 60, n)
    frame = pd.DataFrame({ENTITY_KEY: ids, "minute": minutes}).drop_duplicates()  # one event per key and time
    stamps = pd.Timestamp(cfg.start) + pd.to_timedelta(frame["minute"].to_numpy(), unit="min")
    return _frame(frame[ENTITY_KEY].to_numpy(), stamps, _values(rng, view, len(frame)))


def feature_tables(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    makers = {"driver_hourly": _hourly, "driver_daily": _daily, "driver_events": _events}
    tables = {}
    for i, view in enumerate(VIEWS):
        rng = np.random.default_rng([cfg.seed, i])
        tables[view.name] = makers[view.name](cfg, view, rng).sort_values([TS, ENTITY_KEY]).reset_index(drop=True)
    return tables


def entity_df(cfg: DataConfig, rows: int, events: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Label rows over [start - 1 day, end + 1 day] at microsecond times, plus boundary cases:
    5 % on the whole hour (ties with hourly snapshots: `<=` is inclusive) and 5 % exactly one TTL
    after an event of `driver_events` (the TTL bound is inclusive). Duplicate (key, time) rows occur.
    """
    rng = np.random.default_rng([seed, rows])
    lo = pd.Timestamp(cfg.start - timedelta(days=1)).value // 1000
    hi = pd.Timestamp(cfg.end + timedelta(days=1)).value // 1000
    micros = rng.integers(lo, hi, rows)
    ids = rng.choice(cfg.ids, rows)
    on_hour = rng.uniform(size=rows) < 0.05
    micros[on_hour] -= micros[on_hour] % 3_600_000_000
    at_ttl = ~on_hour & (rng.uniform(size=rows) < 0.05)
    picks = rng.integers(0, len(events), int(at_ttl.sum()))
    ttl_us = int(VIEWS[2].ttl.total_seconds() * 1_000_000)
    ids[at_ttl] = events[ENTITY_KEY].to_numpy()[picks]
    micros[at_ttl] = events[TS].dt.tz_localize(None).to_numpy().astype("datetime64[us]").astype("int64")[picks] + ttl_us
    return pd.DataFrame({
        ENTITY_KEY: ids,
        TS: pd.to_datetime(micros, unit="us", utc=True).astype("datetime64[us, UTC]"),
        "label": rng.integers(0, 2, rows, dtype="int64"),
        "row_id": np.arange(rows, dtype="int64"),
    })


def definitions_py() -> str:
    """The Feast repo: one entity, three views (20 features), one service over all of them."""
    lines = [
        "from datetime import timedelta",
        "from feast import Entity, FeatureService, FeatureView, Field, FileSource",
        "from feast.types import Float64, Int64",
        "from feast.value_type import ValueType",
        "from airflow_mlops.config import paths",
        f"driver = Entity(name='driver', join_keys=['{ENTITY_KEY}'], value_type=ValueType.INT64)",
    ]
    for v in VIEWS:
        fields = [f"Field(name='{f}', dtype=Float64)" for f in v.floats]
        fields += [f"Field(name='{f}', dtype=Int64)" for f in v.ints]
        created = ", created_timestamp_column='created'" if v.created else ""
        lines += [
            f"{v.name} = FeatureView(name='{v.name}', entities=[driver], "
            f"ttl=timedelta(seconds={int(v.ttl.total_seconds())}), online=True, schema=[{', '.join(fields)}],",
            f"    source=FileSource(name='{v.name}_source', timestamp_field='{TS}'{created},",
            f"                      path=str(paths().dataset_dir('{v.name}') / '**' / '*.parquet')))",
        ]
    lines.append(f"{SERVICE} = FeatureService(name='{SERVICE}', features=[{', '.join(v.name for v in VIEWS)}])")
    return "\n".join(lines) + "\n"


def bench_env(work: Path, online_store: str | None = None) -> dict[str, str]:
    """MLOPS_HOME/AIRFLOW_HOME under `work` and a `feast_default` connection to the temp repo."""
    extra = {"repo_path": str(work / "repo"), **({"online_store": online_store} if online_store else {})}
    return {
        "MLOPS_HOME": str(work / "home"),
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_FEAST_DEFAULT": json.dumps({"conn_type": "feast", "extra": extra}),
        "MLOPS_FEAST_ONLINE_STORE": "",
        "PYTHONHASHSEED": "0",
    }


def setup_state(work: Path, cfg: DataConfig, online_store: str | None = None) -> dict[str, pd.DataFrame]:
    """Temp repo + land the seeded tables into the offline store + `feast apply`, in this process."""
    os.environ.update(bench_env(work, online_store))
    from airflow_mlops import config
    from airflow_mlops.core.offline import land_landing_dir
    from airflow_mlops.hooks.feast import FeastHook

    (work / "repo").mkdir(parents=True, exist_ok=True)
    (work / "repo" / "definitions.py").write_text(definitions_py())
    tables = feature_tables(cfg)
    landing = config.paths().landing_dir
    for name, frame in tables.items():
        (landing / name).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(landing / name / "bench.parquet", index=False)
    land_landing_dir(landing, config.paths().offline_dir)
    FeastHook().apply()
    return tables


def machine_note() -> str:
    import platform
    import sys

    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    return (f"{os.cpu_count()} cores, {int(mem) / 1024 ** 2:.0f} GB RAM, Python {sys.version.split()[0]}, "
            f"{platform.system()} {platform.release()}")


def load_note() -> str:
    """Other work on the machine skews absolute times (ratios less so): 1-min load and CPU pressure."""
    load = Path("/proc/loadavg").read_text().split()[0]
    pressure = Path("/proc/pressure/cpu")
    some = ""
    if pressure.exists():
        fields = dict(kv.split("=") for kv in pressure.read_text().splitlines()[0].split()[1:])
        some = f", CPU pressure {fields.get('avg60', '?')} % (avg60)"
    return f"load {load}{some}"
