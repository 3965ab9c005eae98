"""FeastFreshnessTrigger: the deferrable half of `FeastFeatureFreshnessSensor`, plus the check both halves run.

`freshness_report()` is the one check: it reads each view's state from Feast (registry
materialization intervals and tags, and the newest offline-store event inside the materialized
windows) and hands it to `core.freshness.assess()`. The sensor's `poke`, this trigger's `run` and
`FeastCheckFreshnessOperator` all call it, so they cannot disagree. Feast and duckdb are imported
inside functions (this module is imported by DAG files through the sensor).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.boundary import TriggerBoundary
from airflow_mlops.core.freshness import FreshnessConfigError, FreshnessReport, ViewState, assess
from airflow_mlops.exceptions import FeatureRepoError, MLOpsError

if TYPE_CHECKING:
    from airflow_mlops.hooks.feast import FeastHook

log = logging.getLogger(__name__)


def read_view_states(hook: FeastHook, feature_views: list[str] | None = None, *,
                     check_source: bool = True) -> list[ViewState]:
    """Registry state of each view (all registered views when None; unknown names raise FeatureRepoError).

    With `check_source`, the newest offline event <= materialized-until is read too (one duckdb
    aggregate per view); without it the registry's materialized-until alone is trusted.
    """
    store = hook.get_store()
    states = []
    for name in hook.feature_view_names(feature_views):
        view = store.registry.get_feature_view(name, hook.settings.project, allow_cache=False)
        intervals = tuple((start, end) for start, end in view.materialization_intervals)
        newest, checked = None, False
        if check_source and intervals:
            try:
                end = hook.source_window(name, end=max(stop for _, stop in intervals))["end"]
            except FeatureRepoError as err:  # not a file source: the registry is all we have
                log.info("feature view %s: %s; using the registry's materialized-until only", name, err)
            else:
                newest, checked = (datetime.fromisoformat(end) if end else None), True
        states.append(ViewState(name=name, tags=dict(view.tags or {}), materialization_intervals=intervals,
                                newest_source_event=newest, source_checked=checked, ttl=view.ttl or None))
    return states


def freshness_report(feature_views: list[str] | None = None, max_staleness: str | float | None = None, *,
                     feast_conn_id: str = "feast_default", check_source: bool = True,
                     hook: FeastHook | None = None, now: datetime | None = None) -> FreshnessReport:
    """The freshness verdict of `feature_views` (None: every registered view) right now."""
    if hook is None:
        from airflow_mlops.hooks.feast import FeastHook

        hook = FeastHook(feast_conn_id=feast_conn_id)
    states = read_view_states(hook, feature_views, check_source=check_source)
    return assess(states, now=now, max_staleness=max_staleness)


class FeastFreshnessTrigger(TriggerBoundary, BaseTrigger):
    """Poll `freshness_report()` until every view is fresh or `deadline` passes; one event, then done.

    Event payloads: `{"status": "fresh", "report", "message"}`, `{"status": "stale", "report",
    "message"}` (deadline reached; `message` is `FreshnessReport.failure_message()`), or
    `{"status": "error", "message"}` (configuration or store error: unknown view, no freshness
    rule, unreachable online store).

    :param deadline: ISO time after which a stale result is final; None waits forever.
    """

    def __init__(self, *, feature_views: list[str] | None = None, max_staleness: str | float | None = None,
                 feast_conn_id: str = "feast_default", poll_interval: float = 60.0, deadline: str | None = None,
                 check_source: bool = True, **kwargs: Any) -> None:
        # Airflow's BaseTrigger.__init__(**kwargs) is unannotated; mypy's untyped_calls_exclude does not reach super()
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.feature_views = list(feature_views) if feature_views is not None else None
        self.max_staleness = max_staleness
        self.feast_conn_id = feast_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.check_source = check_source
        self._hook: FeastHook | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"feature_views": self.feature_views, "max_staleness": self.max_staleness,
             "feast_conn_id": self.feast_conn_id, "poll_interval": self.poll_interval, "deadline": self.deadline,
             "check_source": self.check_source},
        )

    def _check(self) -> FreshnessReport:
        """Blocking (Feast registry + duckdb): run in a worker thread. The hook is built once per trigger."""
        if self._hook is None:
            from airflow_mlops.hooks.feast import FeastHook

            self._hook = FeastHook(feast_conn_id=self.feast_conn_id)
        return freshness_report(self.feature_views, self.max_staleness, check_source=self.check_source,
                                hook=self._hook)

    def _seconds_left(self) -> float | None:
        if not self.deadline:
            return None
        deadline = datetime.fromisoformat(self.deadline)
        deadline = deadline.replace(tzinfo=UTC) if deadline.tzinfo is None else deadline
        return (deadline - datetime.now(UTC)) / timedelta(seconds=1)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            try:
                report = await asyncio.to_thread(self._check)
            except (MLOpsError, FreshnessConfigError) as err:
                yield TriggerEvent({"status": "error", "message": str(err)})
                return
            if report.fresh:
                yield TriggerEvent({"status": "fresh", "report": report.to_dict(), "message": report.summary()})
                return
            left = self._seconds_left()
            if left is not None and left <= 0:
                yield TriggerEvent({"status": "stale", "report": report.to_dict(),
                                    "message": report.failure_message()})
                return
            wait = self.poll_interval if left is None else min(self.poll_interval, left)
            self.log.info("%s; next check in %.0fs", report.summary(), wait)
            await asyncio.sleep(wait)
