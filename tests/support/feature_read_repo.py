"""A small real Feast repo for comparing the serving app's online read with Feast's get_online_features.

Two entities (driver_id INT64, city STRING); a driver view with float/int/string/bool/float32/list
features, NULLs and a driver written twice (the newer row must win); a driver x city view (composite
key); an on-demand view. Online rows are written with `FeatureStore.write_to_online_store`, the
store's own write path. Services: every plain feature, a subset, and one with the on-demand view.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd  # at module level: Feast evaluates the on-demand function's annotations here

DRIVERS = range(1, 31)
CITIES = ("paris", "lyon")
SERVICES = ("all_plain", "subset", "with_on_demand")


def build_repo(store: Any, data_dir: Path) -> None:
    """Apply the definitions and write their online rows into `store` (any online store type)."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Array, Bool, Float32, Float64, Int64, String

    data_dir.mkdir(parents=True, exist_ok=True)
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    city = Entity(name="city", join_keys=["city"], value_type=ValueType.STRING)
    frames = {"driver_stats": _driver_rows(), "driver_city": _driver_city_rows()}
    for name, frame in frames.items():
        frame.to_parquet(data_dir / f"{name}.parquet", index=False)
    stats = FeatureView(
        name="driver_stats", entities=[driver], ttl=timedelta(days=1),
        schema=[Field(name="driver_id", dtype=Int64), Field(name="conv_rate", dtype=Float64),
                Field(name="trips", dtype=Int64), Field(name="tier", dtype=String), Field(name="active", dtype=Bool),
                Field(name="score", dtype=Float32), Field(name="recent", dtype=Array(Int64))],
        source=FileSource(path=str(data_dir / "driver_stats.parquet"), timestamp_field="event_timestamp"))
    pairs = FeatureView(
        name="driver_city", entities=[driver, city], ttl=timedelta(days=1),
        schema=[Field(name="driver_id", dtype=Int64), Field(name="city", dtype=String),
                Field(name="surge", dtype=Float64)],
        source=FileSource(path=str(data_dir / "driver_city.parquet"), timestamp_field="event_timestamp"))

    @on_demand_feature_view(sources=[stats], schema=[Field(name="conv_pct", dtype=Float64)], mode="pandas")
    def conv_pct(inputs: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"conv_pct": inputs["conv_rate"] * 100.0})

    services = [FeatureService(name="all_plain", features=[stats, pairs]),
                FeatureService(name="subset", features=[stats[["tier", "conv_rate"]], pairs]),
                FeatureService(name="with_on_demand", features=[stats[["conv_rate"]], conv_pct])]
    store.apply([driver, city, stats, pairs, conv_pct, *services])
    for name, frame in frames.items():
        store.write_to_online_store(name, frame)


def _driver_rows() -> Any:
    base = datetime(2026, 10, 1, tzinfo=UTC)
    rows = [{"driver_id": d, "event_timestamp": base, "conv_rate": None if d == 3 else d / 100, "trips": d * 7,
             "tier": None if d == 4 else f"tier-{d % 3}", "active": d % 2 == 0, "score": d / 8,
             "recent": [d, d + 1, d + 2]} for d in DRIVERS if d != 5]  # driver 5: no row at all
    rows.append({**rows[0], "event_timestamp": base + timedelta(hours=1), "conv_rate": 0.99})  # newer row wins
    return pd.DataFrame(rows).astype({"score": "float32"})


def _driver_city_rows() -> Any:
    base = datetime(2026, 10, 1, tzinfo=UTC)
    return pd.DataFrame([{"driver_id": d, "city": c, "event_timestamp": base, "surge": 1 + d / 10 + len(c)}
                         for d in DRIVERS for c in CITIES if (d + len(c)) % 4])  # some pairs have no row


def entity_rows() -> list[dict[str, Any]]:
    """Known, unknown, half-known and repeated entities, in a shuffled order."""
    rows = [{"driver_id": d, "city": c} for d in DRIVERS for c in (*CITIES, "nowhere")]
    rows += [{"driver_id": 999, "city": "paris"}, {"driver_id": 1, "city": "paris"}, {"driver_id": 5, "city": "lyon"}]
    return rows[::7] + rows[1::7] + rows[2::7] + rows[3::7] + rows[4::7] + rows[5::7] + rows[6::7]


def feast_answer(store: Any, service: str, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    answer = store.get_online_features(features=store.get_feature_service(service), entity_rows=rows,
                                       full_feature_names=False).to_dict()
    return {name: values for name, values in answer.items() if name not in ("driver_id", "city")}


def assert_same_as_feast(store: Any, checks: int = 3) -> None:
    """Every service, all entity rows together and one at a time: values, types and NULLs equal Feast's."""
    from airflow_mlops.serving.feature_read import DirectRead

    direct = DirectRead(store)
    rows = entity_rows()
    for name in SERVICES[:2]:
        service = store.get_feature_service(name)
        for _ in range(checks):  # again: the cached context and entity keys must give the same answer
            want, got = feast_answer(store, name, rows), direct.read(service, rows)
            assert got == want, name
            assert {k: [type(v) for v in vs] for k, vs in got.items()} == {
                k: [type(v) for v in vs] for k, vs in want.items()}, name
        for row in rows[:40]:
            assert direct.read(service, [row]) == feast_answer(store, name, [row]), (name, row)


ROWS_WRITTEN_AT = datetime(2026, 10, 1, tzinfo=UTC)  # every row's event time (driver 1: one hour later)


def assert_feature_ages(store: Any) -> None:
    """The age of each online row is its event time as the store keeps it, on the direct read and through
    Feast's call, and `stale()` flags exactly the views older than their TTL (1 day here) or max_age."""
    from airflow_mlops.serving.features import OnlineFeatures

    rows = [{"driver_id": 2, "city": "paris"}, {"driver_id": 1, "city": "lyon"}, {"driver_id": 6, "city": "nowhere"}]
    online = OnlineFeatures(store, "all_plain", ["driver_id", "city"])
    assert online._direct is not None and online.ttls == {"driver_stats": 86400.0, "driver_city": 86400.0}
    now = (ROWS_WRITTEN_AT + timedelta(hours=12)).timestamp()
    _, ages = online.lookup_aged(rows, now=now)
    hour = 3600.0
    assert ages["driver_stats"] == [12 * hour, 11 * hour, 12 * hour], ages  # driver 1's newer row
    assert ages["driver_city"][0] == 12 * hour and ages["driver_city"][2] is None, f"no row: no age {ages}"
    assert online.stale(ages, None) == {}, "12 h is within the 1-day TTL"
    assert online.stale(ages, 6 * hour) == {"driver_stats": (12 * hour, 6 * hour),
                                            "driver_city": (12 * hour, 6 * hour)}, "max_age is stricter"
    later = (ROWS_WRITTEN_AT + timedelta(days=3)).timestamp()
    _, old = online.lookup_aged(rows, now=later)
    assert online.stale(old, None) == {"driver_stats": (3 * 86400.0, 86400.0), "driver_city": (3 * 86400.0, 86400.0)}
    through_feast = OnlineFeatures(store, "with_on_demand", ["driver_id"])  # not the direct read
    _, feast_ages = through_feast.lookup_aged([{"driver_id": 2}, {"driver_id": 1}], now=now)
    assert feast_ages["driver_stats"] == [12 * hour, 11 * hour], feast_ages


def assert_stale_policies(store: Any) -> None:
    """Each serving.stale_features policy on this store's rows: fresh -> not degraded; stale -> named, blanked
    (request), or refused (fail). The policy code is store-independent; the ages are the store's."""
    import pytest

    from airflow_mlops.serving.features import OnlineFeatures, StaleFeatures, apply_stale_policy

    rows = [{"driver_id": 2, "city": "paris"}, {"driver_id": 7, "city": "lyon"}]
    online = OnlineFeatures(store, "all_plain", ["driver_id", "city"])
    fresh_at = (ROWS_WRITTEN_AT + timedelta(hours=12)).timestamp()
    stale_at = (ROWS_WRITTEN_AT + timedelta(days=3)).timestamp()
    values, ages = online.lookup_aged(rows, now=fresh_at)
    assert apply_stale_policy(online, values, ages, "fail", None) == ({"degraded": False}, {})

    values, ages = online.lookup_aged(rows, now=stale_at)
    kept = {name: list(v) for name, v in values.items()}
    status, counts = apply_stale_policy(online, values, ages, "serve_stale", None)
    assert status == {"degraded": True, "stale_features": ["driver_city", "driver_stats"]} and values == kept
    assert counts == {"driver_stats": 2, "driver_city": 2}
    status, _ = apply_stale_policy(online, values, ages, "request", None)
    assert status["degraded"] is True and all(v == [None, None] for v in values.values()), values
    with pytest.raises(StaleFeatures, match=r"view 'driver_city': row 3.0d old, allowed 1.0d; view 'driver_stats'"):
        apply_stale_policy(online, *online.lookup_aged(rows, now=stale_at), "fail", None)
