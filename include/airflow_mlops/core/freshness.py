"""Feature freshness: how old is what the online store serves, and is that allowed? (no Airflow import)

The one decision shared by `FeastFeatureFreshnessSensor.poke`, its deferrable trigger and
`FeastCheckFreshnessOperator`: each reads a `ViewState` per feature view and calls `assess()`.

What "staleness" means here — "serving would use features older than X":

- Feast records, per feature view, the windows it loaded into the online store
  (`FeatureView.materialization_intervals`, a list of `(start, end)`). `materialized_until` is the
  latest `end`: no feature row with an event time after it has been loaded.
- The online store keeps, per entity, the newest row with event time <= `materialized_until`. So
  the newest event time the store can serve for the view is the newest *source* event time
  <= `materialized_until` (`newest_source_event`, read from the offline store). It equals
  `materialized_until` when the window ended at the newest data (what `FeastMaterializeOperator`
  does by default) and is older when a window was closed at "now" without data up to now
  (`materialize(start, now)`, `feast materialize-incremental <now>`): the registry alone would then
  call stale features fresh.
- `staleness = now - newest_event`, where `newest_event = newest_source_event` when the source was
  read, else `materialized_until`. Every value served for the view is at least that old (it is
  the age of the *freshest* entity; other entities can be older, never younger).
- A view never materialized (or whose materialized windows hold no rows) has no staleness: stale.

The allowed staleness is the `max_staleness` argument if given, else the view's tag `freshness`
(`"30m"`, `"2h"`, `"1d"`, `"1h30m"`, `"90s"`, `"1w"`). A view with neither is a configuration error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

FRESHNESS_TAG = "freshness"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
DEFAULT_FIX = (
    "run the `mlops_features` DAG (it lands new raw batches and materializes them; or "
    "FeastMaterializeOperator / `feast materialize-incremental`) so newer rows reach the online store. If no "
    "newer data is expected, raise the view's `freshness` tag or the sensor's `max_staleness`."
)


class FreshnessConfigError(ValueError):
    """A duration cannot be parsed or a view has no allowed staleness."""


def parse_duration(value: str | float | timedelta) -> timedelta:
    """`"30m"`, `"2h"`, `"1d"`, `"1h30m"`, `"90s"`, `"1w"`; a number is seconds; a timedelta is kept."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    text = str(value).strip().lower()
    parts = _PART.findall(text)
    if not text or not parts or _PART.sub("", text).strip():
        raise FreshnessConfigError(
            f"freshness {value!r} is not a duration; write a number and a unit s/m/h/d/w, e.g. '30m', '2h', '1d' "
            f"or '1h30m'"
        )
    return timedelta(seconds=sum(float(number) * _UNITS[unit] for number, unit in parts))


def format_duration(value: timedelta | None) -> str:
    """Compact and exact to the second: `2h`, `1d 3h 5m`, `45s`; None is `never`."""
    if value is None:
        return "never"
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    out = []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNITS[unit])
        if count:
            out.append(f"{count}{unit}")
    return " ".join(out)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class ViewState:
    """What the registry (and optionally the offline store) says about one feature view.

    :param source_checked: True when `newest_source_event` was read from the offline store (None
        then means the materialized windows hold no rows); False to trust `materialized_until`.
    """

    name: str
    tags: Mapping[str, str] = field(default_factory=dict)
    materialization_intervals: tuple[tuple[datetime, datetime], ...] = ()
    newest_source_event: datetime | None = None
    source_checked: bool = False
    ttl: timedelta | None = None

    @property
    def materialized_until(self) -> datetime | None:
        ends = [_utc(end) for _, end in self.materialization_intervals]
        return max(ends) if ends else None

    @property
    def newest_event(self) -> datetime | None:
        """The newest event time the online store can serve for this view."""
        until = self.materialized_until
        if until is None or not self.source_checked:
            return until
        return min(until, _utc(self.newest_source_event)) if self.newest_source_event is not None else None


@dataclass(frozen=True)
class ViewFreshness:
    """The verdict for one view: its staleness, the allowed value and where that came from."""

    view: str
    fresh: bool
    staleness: timedelta | None  # None: the online store holds nothing for the view
    allowed: timedelta
    allowed_from: str
    materialized_until: datetime | None
    newest_event: datetime | None
    ttl: timedelta | None = None

    def describe(self) -> str:
        if self.newest_event is None:
            state = ("was never materialized" if self.materialized_until is None else
                     f"has no rows in its materialized windows (materialized until {_iso(self.materialized_until)})")
            return f"feature view '{self.view}' {state}; allowed staleness {format_duration(self.allowed)} " \
                   f"({self.allowed_from})"
        verdict = "fresh" if self.fresh else "STALE"
        text = (f"feature view '{self.view}' is {verdict}: newest online feature row is from "
                f"{_iso(self.newest_event)} (materialized until {_iso(self.materialized_until)}), "
                f"staleness {format_duration(self.staleness)}, allowed {format_duration(self.allowed)} "
                f"({self.allowed_from})")
        if not self.fresh:
            text += f"; serving would use features older than {format_duration(self.allowed)}"
        if self.ttl and self.staleness is not None and self.staleness > self.ttl:
            text += (f"; that is beyond the view's ttl {format_duration(self.ttl)}: the serving app marks such rows "
                     f"stale and applies the model's serving.stale_features policy (serve_stale: scored with "
                     f"degraded: true; request: scored without them; fail: 503)")
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view, "fresh": self.fresh, "allowed_from": self.allowed_from,
            "staleness_s": self.staleness.total_seconds() if self.staleness is not None else None,
            "staleness": format_duration(self.staleness), "allowed_s": self.allowed.total_seconds(),
            "allowed": format_duration(self.allowed), "materialized_until": _iso(self.materialized_until),
            "newest_event": _iso(self.newest_event),
            "ttl_s": self.ttl.total_seconds() if self.ttl else None,
        }


@dataclass(frozen=True)
class FreshnessReport:
    """Every checked view at one instant; fresh only if each view is."""

    checked_at: datetime
    views: tuple[ViewFreshness, ...]

    @property
    def fresh(self) -> bool:
        return all(v.fresh for v in self.views)

    @property
    def stale(self) -> list[ViewFreshness]:
        return [v for v in self.views if not v.fresh]

    def summary(self) -> str:
        return "; ".join(v.describe() for v in self.views)

    def failure_message(self, fix: str = DEFAULT_FIX) -> str:
        """Names each stale view, its staleness, the allowed value and the fix."""
        stale = self.stale
        lines = [f"{len(stale)} of {len(self.views)} feature view(s) too stale at {self.checked_at.isoformat()}:"]
        lines += [f"  - {v.describe()}" for v in stale]
        return "\n".join([*lines, f"Fix: {fix}"])

    def to_dict(self) -> dict[str, Any]:
        return {"fresh": self.fresh, "checked_at": self.checked_at.isoformat(),
                "stale_views": [v.view for v in self.stale], "views": [v.to_dict() for v in self.views]}


def allowed_staleness(state: ViewState, max_staleness: str | float | timedelta | None) -> tuple[timedelta, str]:
    """The operator argument wins over the view's `freshness` tag; neither is an error naming the fix."""
    if max_staleness is not None and max_staleness != "":
        return parse_duration(max_staleness), "max_staleness argument"
    tag = state.tags.get(FRESHNESS_TAG)
    if tag:
        try:
            return parse_duration(tag), f"tag {FRESHNESS_TAG}={tag!r}"
        except FreshnessConfigError as err:
            raise FreshnessConfigError(f"feature view '{state.name}': {err}") from None
    raise FreshnessConfigError(
        f"feature view '{state.name}' has no allowed staleness: add tags={{'{FRESHNESS_TAG}': '2h'}} to its "
        f"FeatureView definition (then apply), or pass max_staleness='2h'"
    )


def assess_view(state: ViewState, now: datetime, max_staleness: str | float | timedelta | None = None) -> ViewFreshness:
    allowed, source = allowed_staleness(state, max_staleness)
    newest = state.newest_event
    staleness = max(_utc(now) - newest, timedelta(0)) if newest is not None else None  # clock skew: never < 0
    return ViewFreshness(view=state.name, fresh=staleness is not None and staleness <= allowed, staleness=staleness,
                         allowed=allowed, allowed_from=source, materialized_until=state.materialized_until,
                         newest_event=newest, ttl=state.ttl)


def assess(states: Iterable[ViewState], now: datetime | None = None,
           max_staleness: str | float | timedelta | None = None) -> FreshnessReport:
    """The freshness verdict of every view at `now` (default: the current UTC time)."""
    at = _utc(now) if now is not None else datetime.now(UTC)
    return FreshnessReport(checked_at=at, views=tuple(assess_view(s, at, max_staleness) for s in states))
