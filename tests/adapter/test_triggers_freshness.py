"""The freshness decision shared by the sensor, its trigger and the check operator (core.freshness)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airflow_mlops.core.freshness import (
    FreshnessConfigError,
    ViewState,
    assess,
    format_duration,
    parse_duration,
)
from airflow_mlops.triggers.feast import FeastFreshnessTrigger

pytestmark = pytest.mark.adapter

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _state(newest: datetime | None = None, *, until: datetime | None = None, checked: bool = True,
           tags: dict[str, str] | None = None, ttl: timedelta | None = None) -> ViewState:
    end = until or newest
    intervals = ((end - timedelta(days=1), end),) if end else ()
    return ViewState(name="stats", tags={"freshness": "2h"} if tags is None else tags,
                     materialization_intervals=intervals, newest_source_event=newest, source_checked=checked, ttl=ttl)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("90s", 90), ("1w", 604800), (" 2H ", 7200),
    ("1.5h", 5400), ("1d 2h", 93600), (45, 45), (timedelta(minutes=3), 180),
])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "2", "h", "2 hours", "2x", "-1h", "1h and 2m"])
def test_parse_duration_rejects_with_the_format(text: str) -> None:
    with pytest.raises(FreshnessConfigError, match=r"not a duration; write a number and a unit s/m/h/d/w"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(hours=2)) == "2h"
    assert format_duration(timedelta(days=52, hours=3, minutes=5, seconds=1)) == "52d 3h 5m 1s"
    assert format_duration(timedelta(0)) == "0s" and format_duration(None) == "never"


def test_staleness_is_now_minus_the_newest_servable_event() -> None:
    report = assess([_state(NOW - timedelta(minutes=90))], now=NOW)
    [view] = report.views
    assert report.fresh and view.staleness == timedelta(minutes=90) and view.allowed == timedelta(hours=2)
    stale = assess([_state(NOW - timedelta(hours=3))], now=NOW)
    assert not stale.fresh and stale.views[0].staleness == timedelta(hours=3)
    assert assess([_state(NOW - timedelta(hours=2))], now=NOW).fresh  # the limit itself is allowed


def test_the_source_bound_wins_over_a_window_closed_later() -> None:
    state = _state(NOW - timedelta(hours=5), until=NOW)  # materialize(start, now) over 5-hour-old data
    assert state.materialized_until == NOW and state.newest_event == NOW - timedelta(hours=5)
    assert not assess([state], now=NOW).fresh
    trusted = _state(NOW - timedelta(hours=5), until=NOW, checked=False)
    assert trusted.newest_event == NOW and assess([trusted], now=NOW).fresh


def test_the_argument_beats_the_tag_and_a_missing_rule_names_the_fix() -> None:
    state = _state(NOW - timedelta(hours=3))
    report = assess([state], now=NOW, max_staleness="4h")
    assert report.fresh and report.views[0].allowed_from == "max_staleness argument"
    with pytest.raises(FreshnessConfigError, match=r"'stats' has no allowed staleness: add tags=\{'freshness'"):
        assess([_state(NOW, tags={})], now=NOW)
    with pytest.raises(FreshnessConfigError, match=r"feature view 'stats': freshness 'soon' is not a duration"):
        assess([_state(NOW, tags={"freshness": "soon"})], now=NOW)


def test_nothing_materialized_is_stale_and_says_so() -> None:
    never = assess([ViewState(name="stats", tags={"freshness": "2h"})], now=NOW)
    assert not never.fresh and never.views[0].staleness is None
    assert "feature view 'stats' was never materialized" in never.failure_message()
    empty = assess([_state(None, until=NOW - timedelta(hours=1))], now=NOW)  # windows without rows
    assert not empty.fresh and "has no rows in its materialized windows" in empty.failure_message()


def test_clock_skew_never_gives_negative_staleness() -> None:
    report = assess([_state(NOW + timedelta(minutes=5))], now=NOW)
    assert report.fresh and report.views[0].staleness == timedelta(0)


def test_failure_message_names_view_staleness_allowed_ttl_and_fix() -> None:
    report = assess([_state(NOW - timedelta(days=3), ttl=timedelta(days=2))], now=NOW)
    message = report.failure_message()
    assert message.startswith("1 of 1 feature view(s) too stale at 2026-11-25T12:00:00+00:00:")
    assert "feature view 'stats' is STALE: newest online feature row is from 2026-11-22T12:00:00+00:00" in message
    assert "staleness 3d, allowed 2h (tag freshness='2h'); serving would use features older than 2h" in message
    assert "beyond the view's ttl 2d: the serving app marks such rows stale" in message
    assert "serving.stale_features" in message, "says what serving actually does"
    assert "Fix: run the `mlops_features` DAG" in message
    assert report.to_dict()["views"][0]["staleness_s"] == 3 * 86400


def test_freshness_trigger_serializes() -> None:
    from airflow.sdk.module_loading import import_string

    trigger = FeastFreshnessTrigger(feature_views=["stats"], max_staleness="2h", poll_interval=30,
                                    deadline=NOW.isoformat(), check_source=False)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_mlops.triggers.feast.FeastFreshnessTrigger"
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs == {"feature_views": ["stats"], "max_staleness": "2h", "feast_conn_id": "feast_default",
                      "poll_interval": 30.0, "deadline": NOW.isoformat(), "check_source": False}
