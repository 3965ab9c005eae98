"""Feature freshness against a real Feast repo (include/feature_repo: duckdb offline, SQLite online).

Every path — the sensor's poke (poke and reschedule mode), the deferrable path (execute → defer →
FeastFreshnessTrigger.run() under asyncio → execute_complete) and FeastCheckFreshnessOperator —
must reach the same decision on the same store.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import (
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_mlops import config
from airflow_mlops.core.demo_data import DemoConfig, driver_stats
from airflow_mlops.core.offline import land_landing_dir
from airflow_mlops.hooks.feast import FeastHook
from airflow_mlops.sensors.feast import FeastCheckFreshnessOperator, FeastFeatureFreshnessSensor, FeaturesStale
from airflow_mlops.triggers.feast import FeastFreshnessTrigger, freshness_report

pytestmark = pytest.mark.integration

VIEW = "driver_hourly_stats"
AGE = timedelta(minutes=30)  # the newest feature row is this old when the test starts


def _land_stats(newest: datetime) -> None:
    """One day of hourly driver stats whose newest row is at `newest`, landed into the offline store."""
    frame = driver_stats(DemoConfig(start=newest - timedelta(hours=23), days=1, drivers=5, seed=3))
    assert frame["event_timestamp"].max() == newest
    home = config.paths()
    target = home.landing_dir / VIEW / f"stats-{newest:%Y%m%d%H%M%S}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(target, index=False)
    land_landing_dir(home.landing_dir, home.offline_dir)


@pytest.fixture
def newest(mlops_home: Path) -> datetime:
    """Materialized the usual way (window ends at the newest event): the online store is AGE old."""
    newest = datetime.now(UTC).replace(microsecond=0) - AGE
    _land_stats(newest)
    hook = FeastHook()
    hook.apply()
    assert hook.materialize_new()["views"][VIEW]["end"] == newest.isoformat()
    return newest


def _run_trigger(trigger: FeastFreshnessTrigger) -> dict[str, Any]:
    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first_event(), timeout=60))


def _sensor(**kwargs: Any) -> FeastFeatureFreshnessSensor:
    kwargs = {"task_id": "fresh_features", "poke_interval": 0.2, "timeout": 1, **kwargs}
    return FeastFeatureFreshnessSensor(**kwargs)


def _reschedule_context(first_try: datetime | None) -> dict[str, Any]:
    # BaseSensorOperator (reschedule mode) asks the task instance when the first try was; no DB here.
    return {"ti": SimpleNamespace(get_first_reschedule_date=lambda _context: first_try)}


def test_fresh_features_pass_in_every_path(newest: datetime) -> None:
    report = freshness_report()
    [view] = report.views
    assert report.fresh and view.view == VIEW and view.allowed_from == "tag freshness='2h'"
    assert view.newest_event == view.materialized_until == newest
    assert AGE <= view.staleness < AGE + timedelta(minutes=5)

    assert _sensor().execute({})["fresh"] is True  # poke mode
    assert _sensor(mode="reschedule").execute(_reschedule_context(None))["fresh"] is True
    assert _sensor(deferrable=True).execute({})["fresh"] is True  # fresh at once: no deferral
    assert FeastCheckFreshnessOperator(task_id="check").execute({})["stale_views"] == []
    event = _run_trigger(FeastFreshnessTrigger(poll_interval=0.2, deadline=datetime.now(UTC).isoformat()))
    assert event["status"] == "fresh" and event["report"]["views"][0]["newest_event"] == newest.isoformat()


def _assert_names_view_staleness_allowed_and_fix(message: str, allowed: str) -> None:
    assert f"feature view '{VIEW}' is STALE" in message
    assert re.search(r"staleness 3[0-4]m", message) and f"allowed {allowed}" in message  # AGE + test time
    assert f"serving would use features older than {allowed}" in message
    assert "Fix: run the `mlops_features` DAG" in message and "materialize" in message


def test_stale_features_fail_with_view_staleness_allowed_and_fix(newest: datetime) -> None:
    report = freshness_report(max_staleness="10m")
    assert not report.fresh and [v.view for v in report.stale] == [VIEW]
    _assert_names_view_staleness_allowed_and_fix(report.failure_message(), "10m")

    with pytest.raises(AirflowSensorTimeout) as poked:  # poke mode: polls for `timeout`, then fails
        _sensor(max_staleness="10m").execute({})
    _assert_names_view_staleness_allowed_and_fix(str(poked.value), "10m")
    assert "still stale after waiting 1s" in str(poked.value)

    with pytest.raises(AirflowRescheduleException):  # reschedule mode: frees the slot while within timeout
        _sensor(max_staleness="10m", mode="reschedule", timeout=600).execute(_reschedule_context(None))
    started_long_ago = datetime.now(UTC) - timedelta(hours=1)
    with pytest.raises(AirflowSensorTimeout) as rescheduled:
        _sensor(max_staleness="10m", mode="reschedule", timeout=60).execute(_reschedule_context(started_long_ago))
    _assert_names_view_staleness_allowed_and_fix(str(rescheduled.value), "10m")

    with pytest.raises(AirflowSkipException) as skipped:  # soft_fail: skipped, same message
        _sensor(max_staleness="10m", soft_fail=True).execute({})
    _assert_names_view_staleness_allowed_and_fix(str(skipped.value), "10m")

    with pytest.raises(FeaturesStale) as checked:
        FeastCheckFreshnessOperator(task_id="check", max_staleness="10m").execute({})
    _assert_names_view_staleness_allowed_and_fix(str(checked.value), "10m")
    with pytest.raises(AirflowSkipException, match="is STALE"):
        FeastCheckFreshnessOperator(task_id="check", max_staleness="10m", on_stale="skip").execute({})
    warned = FeastCheckFreshnessOperator(task_id="check", max_staleness="10m", on_stale="warn").execute({})
    assert warned["stale_views"] == [VIEW]


def test_the_deferrable_path_reaches_the_same_decision(newest: datetime) -> None:
    sensor = _sensor(max_staleness="10m", deferrable=True, timeout=0.5)
    poked = freshness_report(max_staleness="10m")
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, FeastFreshnessTrigger) and deferred.value.method_name == "execute_complete"
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_mlops.triggers.feast.FeastFreshnessTrigger"

    started = time.monotonic()
    event = _run_trigger(FeastFreshnessTrigger(**kwargs))  # as the triggerer rebuilds it
    assert time.monotonic() - started >= 0.3  # it kept checking until the deadline
    assert event["status"] == "stale"
    triggered = event["report"]
    assert triggered["fresh"] is poked.fresh is False and triggered["stale_views"] == [v.view for v in poked.stale]
    assert triggered["views"][0]["allowed_s"] == poked.views[0].allowed.total_seconds() == 600
    assert triggered["views"][0]["newest_event"] == newest.isoformat()
    _assert_names_view_staleness_allowed_and_fix(event["message"], "10m")

    with pytest.raises(AirflowSensorTimeout) as resumed:
        sensor.execute_complete({}, event)
    _assert_names_view_staleness_allowed_and_fix(str(resumed.value), "10m")
    assert sensor.execute_complete({}, {"status": "fresh", "report": {"fresh": True}, "message": "ok"}) == {
        "fresh": True}


def test_the_view_tag_is_the_default_rule(newest: datetime) -> None:
    later = freshness_report(now=datetime.now(UTC) + timedelta(hours=3))  # the clock moved on, no new data
    assert not later.fresh
    message = later.failure_message()
    assert "allowed 2h (tag freshness='2h')" in message and re.search(r"staleness 3h 3[0-4]m", message)
    event = _run_trigger(FeastFreshnessTrigger(max_staleness="1d", poll_interval=0.2))  # argument beats the tag
    assert event["status"] == "fresh" and event["report"]["views"][0]["allowed"] == "1d"


def test_a_window_closed_at_now_without_data_is_still_stale(mlops_home: Path) -> None:
    """materialize(start, now) records `now` as materialized-until; the online data is as old as the source."""
    now = datetime.now(UTC).replace(microsecond=0)
    _land_stats(now - timedelta(hours=5))
    hook = FeastHook()
    hook.apply()
    hook.materialize(now - timedelta(days=2), now)

    exact = freshness_report()
    assert exact.views[0].materialized_until == now and exact.views[0].newest_event == now - timedelta(hours=5)
    assert not exact.fresh and "staleness 5h" in exact.failure_message()
    registry_only = freshness_report(check_source=False)  # trusts materialized-until: looks fresh
    assert registry_only.fresh and registry_only.views[0].newest_event == now


def test_never_materialized_and_unknown_views(mlops_home: Path) -> None:
    _land_stats(datetime.now(UTC).replace(microsecond=0))
    FeastHook().apply()
    report = freshness_report()
    assert not report.fresh and report.views[0].staleness is None
    assert f"feature view '{VIEW}' was never materialized" in report.failure_message()
    event = _run_trigger(FeastFreshnessTrigger(feature_views=["nope"], poll_interval=0.2))
    assert event["status"] == "error" and "feature views ['nope'] are not registered" in event["message"]
