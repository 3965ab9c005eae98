"""Feature freshness: wait until (sensor) or check that (operator) the online store is fresh enough.

Both run `triggers.feast.freshness_report()` → `core.freshness.assess()`; see `core.freshness`
for what "staleness" means (now − the newest event time the online store can serve for a view,
from the Feast registry's materialization intervals and the offline store) and where the allowed
value comes from (`max_staleness`, else the view's `freshness` tag).

- `FeastFeatureFreshnessSensor`: waits; `mode="poke"|"reschedule"` or `deferrable=True` (the
  same check runs in the triggerer). On timeout it fails (or skips with `soft_fail`) with a message
  naming each stale view, its staleness, the allowed value and the fix.
- `FeastCheckFreshnessOperator`: checks once, no waiting; for the end of the feature DAG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from airflow_mlops.boundary import TaskBoundary
from airflow_mlops.exceptions import MLOpsError
from airflow_mlops.sensors import completed_event, defer_until_deadline
from airflow_mlops.triggers.feast import FeastFreshnessTrigger, freshness_report

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.core.freshness import FreshnessReport

ON_STALE = ("fail", "skip", "warn")


class FeaturesStale(MLOpsError):
    """The online store serves features older than allowed; retrying at once cannot fix it (no retry)."""

    retry = False


def _log_report(log: Any, report: FreshnessReport) -> None:
    for view in report.views:
        (log.info if view.fresh else log.warning)("%s", view.describe())


class FeastFeatureFreshnessSensor(TaskBoundary, BaseSensorOperator):
    """Wait until every feature view's online data is fresh enough.

    XCom: the report `{fresh, checked_at, stale_views, views: [{view, fresh, staleness_s, allowed_s,
    materialized_until, newest_event, ...}]}` of the successful check.

    :param feature_views: views to check (templated); None checks every registered view.
    :param max_staleness: allowed staleness for every view, e.g. `"2h"` (templated); None uses each
        view's `freshness` tag (a view with neither fails with the fix).
    :param feast_conn_id: Feast connection (templated).
    :param check_source: also read the newest offline event inside the materialized windows (one
        duckdb aggregate per view per check); False trusts the registry's materialized-until.
    :param deferrable: wait in the triggerer (`FeastFreshnessTrigger`) instead of a worker slot.
    """

    template_fields: Sequence[str] = ("feature_views", "max_staleness", "feast_conn_id")
    ui_color = "#d9ecf2"

    def __init__(self, *, feature_views: list[str] | None = None, max_staleness: str | float | None = None,
                 feast_conn_id: str = "feast_default", check_source: bool = True,
                 deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feature_views = feature_views
        self.max_staleness = max_staleness
        self.feast_conn_id = feast_conn_id
        self.check_source = check_source
        self.deferrable = deferrable
        self._last_report: FreshnessReport | None = None

    def _report(self) -> FreshnessReport:
        views = list(self.feature_views) if self.feature_views else None
        report = freshness_report(views, self.max_staleness, feast_conn_id=self.feast_conn_id,
                                  check_source=self.check_source)
        self._last_report = report
        _log_report(self.log, report)
        return report

    def poke(self, context: Context) -> PokeReturnValue:
        report = self._report()
        return PokeReturnValue(is_done=report.fresh, xcom_value=report.to_dict())

    def execute(self, context: Context) -> Any:
        if self.deferrable:
            return self._execute_deferrable()
        try:
            return super().execute(context)
        except AirflowSensorTimeout as err:
            raise AirflowSensorTimeout(self._timeout_message()) from err
        except AirflowSkipException as err:  # soft_fail turned the timeout into a skip: say why
            if self.soft_fail and self._last_report is not None and not self._last_report.fresh:
                raise AirflowSkipException(self._timeout_message()) from err
            raise

    def _execute_deferrable(self) -> dict[str, Any]:
        report = self._report()
        if report.fresh:
            return report.to_dict()
        defer_until_deadline(self, lambda deadline: FeastFreshnessTrigger(
            feature_views=list(self.feature_views) if self.feature_views else None,
            max_staleness=self.max_staleness, feast_conn_id=self.feast_conn_id,
            poll_interval=self.poke_interval, deadline=deadline, check_source=self.check_source,
        ))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume from the trigger: fresh returns the report; stale fails (or skips) like a timeout."""
        event = completed_event(self, event, done="fresh", timed_out="stale", timeout_prefix=self._timeout_prefix())
        return dict(event["report"])

    def _timeout_prefix(self) -> str:
        return f"features still stale after waiting {self.timeout:.0f}s: "

    def _timeout_message(self) -> str:
        if self._last_report is None:
            return f"{self._timeout_prefix()}no freshness check completed"
        return f"{self._timeout_prefix()}{self._last_report.failure_message()}"


class FeastCheckFreshnessOperator(TaskBoundary, BaseOperator):
    """Check once (no waiting) that every feature view's online data is fresh enough.

    Meant as the last task of the feature DAG (trigger_rule `none_failed`, so it also runs when
    `materialize` was skipped for lack of new data — that is exactly when features go stale).
    Returns (XCom) the report; when stale and not `warn`, the report is pushed under key `freshness`.

    :param feature_views: views to check (templated); None checks every registered view.
    :param max_staleness: allowed staleness for every view (templated); None uses each view's
        `freshness` tag.
    :param feast_conn_id: Feast connection (templated).
    :param check_source: see `FeastFeatureFreshnessSensor`.
    :param on_stale: `fail` (FeaturesStale, no retry), `skip` (the task shows as skipped, with the
        message) or `warn` (log the message and succeed).
    """

    template_fields: Sequence[str] = ("feature_views", "max_staleness", "feast_conn_id")
    ui_color = "#d9ecf2"

    def __init__(self, *, feature_views: list[str] | None = None, max_staleness: str | float | None = None,
                 feast_conn_id: str = "feast_default", check_source: bool = True, on_stale: str = "fail",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if on_stale not in ON_STALE:
            raise ValueError(f"on_stale={on_stale!r}; use one of {', '.join(ON_STALE)}")
        self.feature_views = feature_views
        self.max_staleness = max_staleness
        self.feast_conn_id = feast_conn_id
        self.check_source = check_source
        self.on_stale = on_stale

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.freshness import FreshnessConfigError

        views = list(self.feature_views) if self.feature_views else None
        try:
            report = freshness_report(views, self.max_staleness, feast_conn_id=self.feast_conn_id,
                                      check_source=self.check_source)
        except FreshnessConfigError as err:
            if self.on_stale != "warn":
                raise
            # warn mode is advisory: a view without a freshness rule must not fail the pipeline.
            self.log.warning("freshness not checked: %s", err)
            return {"fresh": None, "error": str(err)}
        _log_report(self.log, report)
        if report.fresh or self.on_stale == "warn":
            if not report.fresh:
                self.log.warning("%s", report.failure_message())
            return report.to_dict()
        if context.get("ti") is not None:  # the failed check's report stays inspectable
            context["ti"].xcom_push(key="freshness", value=report.to_dict())
        if self.on_stale == "skip":
            raise AirflowSkipException(report.failure_message())
        raise FeaturesStale(report.failure_message())
