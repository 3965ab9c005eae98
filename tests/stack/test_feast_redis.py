"""Production profile: the same FeastHook with the Redis online store on 127.0.0.1:6379 (db 15).

If Redis is not reachable the tests ERROR with StoreUnavailable's reason (never skip): start it with
`redis-server --daemonize yes` or the compose stack's redis service.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops import config
from airflow_mlops.core.offline import land_landing_dir
from airflow_mlops.exceptions import StoreConfigError, StoreUnavailable
from airflow_mlops.hooks.feast import FeastHook
from support.connects import connect_attempts

pytestmark = pytest.mark.stack

REDIS_URL = "redis://127.0.0.1:6379/15"  # db 15: a database the tests own and may flush
VIEW = "driver_hourly_stats"
FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "rating"]


@pytest.fixture
def redis_hook(mlops_home: Path, small_demo: tuple) -> FeastHook:
    import redis

    hook = FeastHook(online_store=REDIS_URL)
    hook.check_online_store()  # raises StoreUnavailable (test ERROR) when Redis is down
    redis.Redis.from_url(REDIS_URL).flushdb()
    for dataset, frame in small_demo[1].items():
        target = config.paths().landing_dir / dataset / "demo.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target, index=False)
    land_landing_dir(config.paths().landing_dir, config.paths().offline_dir)
    return hook


def test_materialize_and_read_back_from_redis(redis_hook: FeastHook, small_demo: tuple) -> None:
    import redis

    stats = small_demo[1][VIEW]
    assert redis_hook.repo_config().online_store.type == "redis"
    assert redis_hook.apply()["applied"] is True
    result = redis_hook.materialize_new()
    assert result["views"][VIEW]["mode"] == "full" and result["rows"] == len(stats)
    assert redis.Redis.from_url(REDIS_URL).dbsize() == stats["driver_id"].nunique()
    assert not (config.paths().feast_dir / "online.db").exists(), "nothing may go to the SQLite online store"

    drivers = [1002, 1013]
    online = FeastHook(online_store=REDIS_URL).get_store().get_online_features(
        features=[f"{VIEW}:{f}" for f in FEATURES], entity_rows=[{"driver_id": d} for d in drivers],
    ).to_df().set_index("driver_id")
    latest = stats.sort_values("event_timestamp").groupby("driver_id").tail(1).set_index("driver_id")
    pd.testing.assert_frame_equal(online.loc[drivers, FEATURES], latest.loc[drivers, FEATURES], check_dtype=False)


def test_unreachable_redis_raises_store_unavailable_naming_the_url(mlops_home: Path) -> None:
    hook = FeastHook(online_store="redis://127.0.0.1:6390/15")
    with connect_attempts(6390) as attempts, pytest.raises(StoreUnavailable) as caught:
        hook.check_online_store()
    assert len(attempts) == 1, f"the check must fail fast, not retry with backoff: {attempts}"
    message = str(caught.value)
    assert "redis://127.0.0.1:6390/15" in message and "(connection refused)" in message
    assert isinstance(caught.value, StoreConfigError), "a closed port is configuration: the task must not retry"
    assert "redis-server --port 6390" in message
    with pytest.raises(StoreUnavailable):
        hook.materialize_new()


def test_serving_direct_read_equals_get_online_features_on_redis(mlops_home: Path) -> None:
    """The serving app's online read (serving/feature_read.py) against Feast's own call, on Redis."""
    import redis

    from support.feature_read_repo import (
        assert_feature_ages,
        assert_same_as_feast,
        assert_stale_policies,
        build_repo,
    )

    hook = FeastHook(online_store=REDIS_URL)
    hook.check_online_store()
    redis.Redis.from_url(REDIS_URL).flushdb()
    store = hook.get_store()
    assert store.config.online_store.type == "redis"
    build_repo(store, mlops_home / "data")
    assert_same_as_feast(store)
    assert_feature_ages(store)  # the same ages and staleness as on SQLite
    assert_stale_policies(store)  # and each serving.stale_features policy
