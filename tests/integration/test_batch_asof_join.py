"""The as-of join (core.asof_join, the engine of core.point_in_time) against Feast's own point-in-time join.

A real Feast repo (duckdb offline store, sqlite online) built by the benchmarks' seeded feature data:
three views (hourly with a created-timestamp column and 2 % gaps, daily, irregular events), TTLs of
12 h and 2 days, and entity rows that hit the TTL edge and the exact as-of instants. Every feature of
every row must be what Feast's get_historical_features returns (NaN where Feast has none).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, pd.DataFrame]:
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    from _feature_data import SERVICE, TS, DataConfig, bench_env, entity_df, setup_state
    from airflow_mlops.core import batch_inference as bi
    from airflow_mlops.core.offline import normalize_timestamps
    from airflow_mlops.hooks.feast import FeastHook

    work = tmp_path_factory.mktemp("asof")
    with pytest.MonkeyPatch.context() as env:
        for key, value in bench_env(work).items():
            env.setenv(key, value)  # setup_state sets the same variables; the monkeypatch restores them
        cfg = DataConfig(entities=40, days=4, seed=11)
        tables = setup_state(work, cfg)
        _add_rewritten_rows(work / "home" / "offline" / "driver_hourly")
        store = FeastHook().get_store()
        service = store.get_feature_service(SERVICE)
        entity = entity_df(cfg, 4000, tables["driver_events"], 11).drop(columns="label")
        entity = normalize_timestamps(entity).rename(columns={TS: "event_timestamp"})
        entity[bi._ROW] = range(len(entity))
        yield store, service, entity
    sys.path.remove(str(PROJECT / "benchmarks"))


def _add_rewritten_rows(view_dir: Path) -> None:
    """Rows with the same driver and event time as existing ones: one created later (it must win, as in
    Feast), one created earlier (it must lose), both with other values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = sorted(view_dir.glob("*/*.parquet"))[0]
    table = pq.read_table(first).slice(0, 300).to_pandas()
    later = table.assign(created=table["created"] + pd.Timedelta(hours=1), conv_rate=table["conv_rate"] + 100)
    earlier = table.assign(created=table["created"] - pd.Timedelta(hours=1), conv_rate=table["conv_rate"] - 100)
    frame = pd.concat([later, earlier], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=pq.read_schema(first), preserve_index=False),
                   first.parent / "rewritten.parquet")


def _feast(store: object, entity: pd.DataFrame, service: object) -> pd.DataFrame:
    """Feast's get_historical_features, rows in the entity order (Feast's own order is not stable)."""
    from airflow_mlops.core.batch_inference import _ROW

    frame = store.get_historical_features(entity_df=entity, features=service).to_df()  # type: ignore[attr-defined]
    return frame.sort_values(_ROW, kind="mergesort").reset_index(drop=True)


def test_asof_join_returns_exactly_what_feast_returns(repo: tuple[object, object, pd.DataFrame]) -> None:
    from airflow_mlops.core import asof_join as aj
    from airflow_mlops.core import batch_inference as bi

    store, service, entity = repo
    views, _ = aj.asof_plan(store, service)
    assert views is not None and [v.name for v in views] == ["driver_hourly", "driver_daily", "driver_events"]
    assert views[0].created == "created" and views[0].ttl_us == 2 * 86_400 * 10**6
    fast = aj.asof_join(entity, views)
    feast = _feast(store, entity, service)
    features = [name for view in views for _, name in view.features]
    assert len(fast) == len(feast) == len(entity) and list(fast[bi._ROW]) == list(feast[bi._ROW])
    for column in features:
        got, want = fast[column].to_numpy(dtype="float64"), feast[column].to_numpy(dtype="float64")
        same = np.isclose(got, want, rtol=0, atol=0, equal_nan=True)
        assert same.all(), f"{column}: {int((~same).sum())} rows differ, e.g. rows {np.flatnonzero(~same)[:5]}"
        assert fast[column].dtype == feast[column].dtype, column
    missing = fast[features].isna().to_numpy()
    assert 0 < missing.mean() < 0.5, "the data must have rows past the TTL (NaN) and rows within it"
    assert (fast["conv_rate"] > 50).sum() > 0, "some rows must have picked a rewritten row (newest created)"
    assert not (fast["conv_rate"] < -50).any(), "a row created earlier never wins"


def test_chunks_join_the_same_as_the_whole(repo: tuple[object, object, pd.DataFrame]) -> None:
    from airflow_mlops.core import asof_join as aj

    store, service, entity = repo
    views, _ = aj.asof_plan(store, service)
    assert views is not None
    whole = aj.asof_join(entity, views)
    parts = pd.concat([aj.asof_join(entity.iloc[i:i + 700], views) for i in range(0, len(entity), 700)],
                      ignore_index=True)
    pd.testing.assert_frame_equal(parts, whole)


def test_composite_keys_join_like_feast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A view keyed by (driver_id, city) with gaps, a 3 h TTL and a string feature; entity rows with unknown
    pairs, times before any data, exact as-of instants and the TTL edge."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    from airflow_mlops.core import asof_join as aj
    from airflow_mlops.core import batch_inference as bi
    from airflow_mlops.hooks.feast import FeastHook

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONN_FEAST_DEFAULT", raising=False)
    rng = np.random.default_rng(3)
    start = pd.Timestamp("2026-10-01", tz="UTC")
    cells = [(d, c, h) for d in range(10) for c in ("paris", "lyon", "nice") for h in range(48) if rng.random() > 0.3]
    rows = pd.DataFrame([{"driver_id": d, "city": c, "event_timestamp": start + pd.Timedelta(hours=h),
                          "surge": float(rng.uniform(1, 3)), "zone": f"z{d % 4}"} for d, c, h in cells])
    rows.to_parquet(tmp_path / "surge.parquet", index=False)
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    city = Entity(name="city", join_keys=["city"], value_type=ValueType.STRING)
    view = FeatureView(name="surge", entities=[driver, city], ttl=pd.Timedelta(hours=3).to_pytimedelta(),
                       schema=[Field(name="driver_id", dtype=Int64), Field(name="city", dtype=String),
                               Field(name="surge", dtype=Float64), Field(name="zone", dtype=String)],
                       source=FileSource(path=str(tmp_path / "surge.parquet"), timestamp_field="event_timestamp"))
    store = FeastHook().get_store()
    store.apply([driver, city, view, FeatureService(name="surge_v1", features=[view])])
    n = 3000
    entity = pd.DataFrame({
        "driver_id": rng.integers(0, 12, n),  # 10 and 11 are unknown
        "city": rng.choice(["paris", "lyon", "nice", "oslo"], n),
        "event_timestamp": start + pd.to_timedelta(rng.integers(-3 * 3600, 52 * 3600, n), unit="s")})
    entity.loc[:99, "event_timestamp"] = rows["event_timestamp"].iloc[:100].to_numpy()  # exact as-of instants
    entity.loc[100:199, "event_timestamp"] = (rows["event_timestamp"].iloc[:100] + pd.Timedelta(hours=3)).to_numpy()
    entity.loc[:199, ["driver_id", "city"]] = rows[["driver_id", "city"]].iloc[:100].to_numpy().tolist() * 2
    entity = entity.astype({"driver_id": "int64"})
    entity[bi._ROW] = range(n)
    service = store.get_feature_service("surge_v1")
    views, _ = aj.asof_plan(store, service)
    assert views is not None and views[0].keys == (("driver_id", "driver_id"), ("city", "city"))
    fast = aj.asof_join(entity, views)
    feast = _feast(store, entity, service)
    assert list(fast[bi._ROW]) == list(feast[bi._ROW])
    pd.testing.assert_series_equal(fast["surge"], feast["surge"], check_names=False)
    assert fast["zone"].isna().equals(feast["zone"].isna())
    assert (fast["zone"].dropna() == feast["zone"].dropna()).all()
    assert 0.1 < fast["surge"].isna().mean() < 0.9 and fast.loc[:199, "surge"].notna().all()
