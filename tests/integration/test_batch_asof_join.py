"""The batch path's as-of join (core.batch_inference.asof_join) against Feast's own point-in-time join.

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


def test_asof_join_returns_exactly_what_feast_returns(repo: tuple[object, object, pd.DataFrame]) -> None:
    from airflow_mlops.core import batch_inference as bi
    from airflow_mlops.core.training_set import _historical_features

    store, service, entity = repo
    views = bi.asof_plan(store, service)
    assert views is not None and [v.name for v in views] == ["driver_hourly", "driver_daily", "driver_events"]
    assert views[0].created == "created" and views[0].ttl_us == 2 * 86_400 * 10**6
    fast = bi.asof_join(entity, views)
    feast = _historical_features(store, entity, service).sort_values(bi._ROW, kind="mergesort").reset_index(drop=True)
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
    from airflow_mlops.core import batch_inference as bi

    store, service, entity = repo
    views = bi.asof_plan(store, service)
    assert views is not None
    whole = bi.asof_join(entity, views)
    parts = pd.concat([bi.asof_join(entity.iloc[i:i + 700], views) for i in range(0, len(entity), 700)],
                      ignore_index=True)
    pd.testing.assert_frame_equal(parts, whole)
