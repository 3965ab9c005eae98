"""FeastHook against the real feature repo (include/feature_repo): duckdb offline, SQLite online."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops import config
from airflow_mlops.core.demo_data import DemoConfig, driver_stats
from airflow_mlops.core.offline import land_landing_dir
from airflow_mlops.exceptions import FeatureRepoError, StoreUnavailable
from airflow_mlops.hooks.feast import FeastHook
from support.connects import connect_attempts

pytestmark = pytest.mark.integration

VIEW = "driver_hourly_stats"
FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "rating"]
# an untyped join key over a glob source
UNTYPED_GLOB_DEFS = Path(__file__).resolve().parents[1] / "support" / "feature_repos" / "untyped_glob_defs.py"


def _land(frames: dict[str, pd.DataFrame], name: str = "demo") -> dict:
    home = config.paths()
    for dataset, frame in frames.items():
        target = home.landing_dir / dataset / f"{name}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target, index=False)
    return land_landing_dir(home.landing_dir, home.offline_dir)


@pytest.fixture
def landed(mlops_home: Path, small_demo: tuple) -> tuple:
    cfg, data = small_demo
    summary = _land(data)
    batch = {b["dataset"]: b["batch_id"] for b in summary["batches"]}
    return cfg, data, batch


def _online(hook: FeastHook, drivers: list[int]) -> pd.DataFrame:
    rows = [{"driver_id": d} for d in drivers]
    refs = [f"{VIEW}:{f}" for f in FEATURES]
    return hook.get_store().get_online_features(features=refs, entity_rows=rows).to_df().set_index("driver_id")


def _latest(stats: pd.DataFrame, drivers: list[int]) -> pd.DataFrame:
    last = stats.sort_values("event_timestamp").groupby("driver_id").tail(1).set_index("driver_id")
    return last.loc[drivers, FEATURES]


def test_apply_registers_definitions_and_skips_unchanged(landed: tuple) -> None:
    first = FeastHook().apply()
    assert first["applied"] is True
    assert first["feature_views"] == [VIEW]
    assert first["feature_services"] == ["ride_completion_v1", "ride_duration_v1"]  # one per shipped spec
    assert (config.paths().feast_dir / "registry.db").is_file()

    second = FeastHook().apply()  # a new task, same definitions
    assert second == {**first, "applied": False}


def test_changed_definitions_are_applied_again(landed: tuple, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(config.feature_repo_dir(), repo, ignore=shutil.ignore_patterns("__pycache__"))
    before = FeastHook(repo_path=repo).apply()
    definitions = repo / "definitions.py"
    definitions.write_text(definitions.read_text().replace('"freshness": "2h"', '"freshness": "1h"'))

    after = FeastHook(repo_path=repo).apply()
    assert after["applied"] is True and after["hash"] != before["hash"]
    assert FeastHook(repo_path=repo).get_store().get_feature_view(VIEW).tags["freshness"] == "1h"


def test_first_materialization_starts_at_the_earliest_data(landed: tuple) -> None:
    _, data, batch = landed
    stats = data[VIEW]
    hook = FeastHook()
    hook.apply()
    result = hook.materialize_new()

    view = result["views"][VIEW]
    assert view["mode"] == "full" and view["rows"] == len(stats) == result["rows"]
    assert view["start"] == stats["event_timestamp"].min().isoformat()
    assert view["end"] == stats["event_timestamp"].max().isoformat()
    assert view["batch_ids"] == [batch[VIEW]]
    drivers = [1001, 1007, 1020]
    pd.testing.assert_frame_equal(_online(hook, drivers)[FEATURES], _latest(stats, drivers), check_dtype=False)


def test_later_runs_are_incremental(landed: tuple) -> None:
    cfg, data, _ = landed
    hook = FeastHook()
    hook.apply()
    first = hook.materialize_new()["views"][VIEW]
    newer = driver_stats(DemoConfig(start=cfg.end, days=1, drivers=cfg.drivers, seed=99))
    new_batch = _land({VIEW: newer}, name="day4")["batches"][0]["batch_id"]

    second = FeastHook().materialize_new()["views"][VIEW]
    assert second["mode"] == "incremental" and second["rows"] == len(newer)
    assert second["start"] == first["end"] and second["batch_ids"] == [new_batch]
    drivers = [1003, 1011]
    pd.testing.assert_frame_equal(_online(hook, drivers)[FEATURES], _latest(newer, drivers), check_dtype=False)

    third = FeastHook().materialize_new()["views"][VIEW]
    assert third["mode"] == "up_to_date" and third["rows"] == 0


def test_a_correction_replaced_in_place_reaches_the_online_store(landed: tuple) -> None:
    """Incremental materialization reads only newer event times: a corrected landed row must be re-materialized."""
    from airflow_mlops.core.row_keys import RowPolicy
    from airflow_mlops.operators.features import FeastMaterializeOperator

    _, data, _ = landed
    hook = FeastHook()
    hook.apply()
    hook.materialize_new()
    drivers = [1003, 1011]
    latest = data[VIEW].sort_values("event_timestamp").groupby("driver_id").tail(1)
    fix = latest[latest["driver_id"].isin(drivers)].assign(conv_rate=0.123)
    home = config.paths()
    (home.landing_dir / VIEW).mkdir(parents=True, exist_ok=True)
    fix.to_parquet(home.landing_dir / VIEW / "fix.parquet", index=False)
    policy = RowPolicy(VIEW, ("driver_id", "event_timestamp"), "event_timestamp", corrections="replace")
    landed_fix = land_landing_dir(home.landing_dir, home.offline_dir, policies={VIEW: policy})
    assert landed_fix["corrections_replaced"] == 2 and landed_fix["rows"] == 0
    assert landed_fix["corrected_since"] == {VIEW: fix["event_timestamp"].min().isoformat()}
    assert (_online(hook, drivers)["conv_rate"] != 0.123).all(), "stale until re-materialized"

    operator = FeastMaterializeOperator(task_id="materialize", landed=landed_fix, skip_when_up_to_date=False)
    operator.execute({"outlet_events": {}})
    assert _online(FeastHook(), drivers)["conv_rate"].tolist() == pytest.approx([0.123, 0.123])


def _digests(root: Path) -> dict[str, str]:
    import hashlib

    files = [p for p in root.rglob("*") if p.is_file()]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_a_copied_state_dir_never_touches_the_original(landed: tuple, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    """Feast records absolute online-table paths in its registry; a copy's apply used to drop the original's table."""
    cfg, _, _ = landed
    original = config.paths().home
    FeastHook().apply()
    FeastHook().materialize_new()
    drivers = [1003, 1011]
    serving_before = _online(FeastHook(), drivers)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    before = _digests(original)

    monkeypatch.setenv("MLOPS_HOME", str(copy))  # a second environment made from the copy
    assert FeastHook().apply()["applied"], "another state dir re-applies (its sources are its own files)"
    assert all(str(copy) in fv.batch_source.path for fv in FeastHook().get_store().list_feature_views())
    _land({VIEW: driver_stats(DemoConfig(start=cfg.end, days=1, drivers=cfg.drivers, seed=99))}, name="day4")
    assert FeastHook().materialize_new()["rows"] > 0

    assert _digests(original) == before, "the original's registry, online store and offline files are untouched"
    monkeypatch.setenv("MLOPS_HOME", str(original))
    pd.testing.assert_frame_equal(_online(FeastHook(), drivers), serving_before)


def test_a_deleted_online_store_is_healed_by_the_next_materialization(landed: tuple) -> None:
    _, data, _ = landed
    FeastHook().apply()
    FeastHook().materialize_new()
    (config.paths().feast_dir / "online.db").unlink()  # someone cleaned up; serving would answer nulls / 503

    result = FeastHook().materialize_new()["views"][VIEW]
    assert result["mode"] == "full" and result["rows"] == len(data[VIEW]), result
    drivers = [1001, 1020]
    pd.testing.assert_frame_equal(_online(FeastHook(), drivers)[FEATURES], _latest(data[VIEW], drivers),
                                  check_dtype=False)
    assert FeastHook().materialize_new()["views"][VIEW]["mode"] == "up_to_date"


def test_forced_reapply_keeps_materialization_state(landed: tuple) -> None:
    hook = FeastHook()
    hook.apply()
    hook.materialize_new()
    interval = FeastHook()._last_interval(VIEW)
    assert FeastHook().apply(force=True)["applied"] is True
    # Feast 0.67's file registry carries materialization_intervals over on re-apply
    # (registry.py apply_feature_view); the skip-if-unchanged guard covers registries that do not.
    assert FeastHook()._last_interval(VIEW) == interval
    assert FeastHook().materialize_new()["views"][VIEW]["mode"] == "up_to_date"


def test_explicit_window(landed: tuple) -> None:
    hook = FeastHook()
    hook.apply()
    day2 = hook.materialize(datetime(2026, 10, 2, tzinfo=UTC), datetime(2026, 10, 2, 23, tzinfo=UTC))
    assert day2["rows"] == 24 * 20 and day2["views"][VIEW]["mode"] == "full"
    assert day2["start"] == "2026-10-02T00:00:00+00:00" and day2["end"] == "2026-10-02T23:00:00+00:00"


def test_settings_precedence(mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = FeastHook(feast_conn_id="feast_not_defined")
    assert default.settings.repo_path == config.feature_repo_dir().resolve()
    online = default.repo_config().online_store
    assert online.type == "sqlite" and Path(online.path) == mlops_home / "feast" / "online.db"

    monkeypatch.setenv("MLOPS_FEAST_ONLINE_STORE", "redis://127.0.0.1:6379/3")
    assert FeastHook().repo_config().online_store.connection_string == "127.0.0.1:6379,db=3"

    extras = {"online_store": "rediss://cache:6380/2", "project": "other", "repo_path": str(mlops_home)}
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_TEST", json.dumps({"conn_type": "feast", "password": "s3cr3t-pw",
                                                              "extra": extras}))
    from_conn = FeastHook(feast_conn_id="feast_test")
    cfg = from_conn.repo_config()
    assert cfg.project == "other" and from_conn.settings.repo_path == mlops_home.resolve()
    assert cfg.online_store.connection_string == "cache:6380,db=2,password=s3cr3t-pw,ssl=true"
    assert from_conn.settings.online_store_label == "rediss://cache:6380/2"  # no password in logs/errors

    explicit = FeastHook(feast_conn_id="feast_test", online_store="sqlite", repo_path="/elsewhere")
    assert explicit.repo_config().online_store.type == "sqlite"
    assert explicit.settings.repo_path == Path("/elsewhere")


def test_unreachable_redis_fails_fast_before_any_work(landed: tuple) -> None:
    hook = FeastHook(online_store="redis://127.0.0.1:6390/15")
    with connect_attempts(6390) as attempts, pytest.raises(StoreUnavailable) as caught:
        hook.apply()
    assert len(attempts) == 1, f"tried once, not retried with backoff: {attempts}"
    assert "redis://127.0.0.1:6390/15" in str(caught.value) and "redis-server --port 6390" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not (config.paths().feast_dir / "registry.db").exists()


def _tiny_repo(tmp_path: Path, body: str) -> Path:
    repo = tmp_path / "tiny_repo"
    repo.mkdir()
    (repo / "defs.py").write_text(body)
    return repo


def test_untyped_join_key_over_a_glob_is_refused_with_the_fix(mlops_home: Path, tmp_path: Path) -> None:
    repo = _tiny_repo(tmp_path, UNTYPED_GLOB_DEFS.read_text(encoding="utf-8"))
    with pytest.raises(FeatureRepoError, match=r"join key 'rider_id' is not declared.*value_type=ValueType.INT64"):
        FeastHook(repo_path=repo).apply()


def test_broken_definitions_name_the_repo(mlops_home: Path, tmp_path: Path) -> None:
    repo = _tiny_repo(tmp_path, "raise ValueError('boom')\n")
    with pytest.raises(FeatureRepoError, match=r"cannot load Feast definitions from .*tiny_repo: ValueError: boom"):
        FeastHook(repo_path=repo).apply()
