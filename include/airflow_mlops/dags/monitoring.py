"""`<model>__monitor`: drift, delayed-label performance, training-serving skew and feature freshness.

The four checks run side by side with no edges between them, so a failing check never hides the
others; `summary` runs after all of them whatever their states (trigger rule `all_done`), logs one
line per check and returns the run summary. Every check appends one monitoring-history record per
run (quiet runs too: the UI plots drift share and metrics as time series).

Drift and performance emit `mlops.drift.<model>` / `mlops.performance.<model>` (through their
aliases) only when a threshold is crossed; the training DAG schedules on those (with a cooldown).

The two small operators below exist for this DAG only: the freshness check is the feature DAG's
`FeastCheckFreshnessOperator` plus a history record, and the summary reads the records back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, AssetOrTimeSchedule, BaseOperator, CronTriggerTimetable

from airflow_mlops.core.spec import ModelSpec
from airflow_mlops.dags.assets import drift_alias, performance_alias
from airflow_mlops.dags.docs import monitoring_dag_doc
from airflow_mlops.operators.evidently import EvidentlyDriftCheckOperator
from airflow_mlops.operators.monitoring import DelayedLabelPerformanceOperator, FeastSkewCheckOperator
from airflow_mlops.sensors.feast import FeastCheckFreshnessOperator
from airflow_mlops.triggers.labels import labels_asset

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.core.monitoring_history import Status

CHECKS = ("drift", "performance", "skew", "freshness")
# Every check reads the same window [end - monitoring.window, end): end = the run's data interval end
# (a scheduled run; "" for a label-triggered run, where each check takes "now"). Rendered to an ISO
# string it shows in "Rendered Template", and plain datetimes compare with pandas (pendulum's do not).
# `is defined`: a run triggered without a logical date (REST API, UI "Trigger") has no
# data_interval_end in its context at all, and Airflow's StrictUndefined fails the task on it.
WINDOW_END = "{{ data_interval_end.isoformat() if data_interval_end is defined and data_interval_end else '' }}"


def monitoring_dag_id(model: str) -> str:
    return f"{model}__monitor"


class FeastFreshnessRecordOperator(FeastCheckFreshnessOperator):
    """`FeastCheckFreshnessOperator` (warn mode) that appends a `freshness` monitoring-history record.

    Record: value = the oldest view's staleness in seconds (None when a view was never materialized),
    threshold = the smallest allowed staleness, status ok / detected (stale) / error (no rule, no store).

    :param model_name: the model whose history gets the record. (templated)
    """

    template_fields: Sequence[str] = (*FeastCheckFreshnessOperator.template_fields, "model_name")

    def __init__(self, *, model_name: str, **kwargs: Any) -> None:
        kwargs["on_stale"] = "warn"  # stale features are a finding to record, not a reason to fail
        super().__init__(**kwargs)
        self.model_name = model_name

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core import monitoring_history
        from airflow_mlops.core.lineage import TAG_DAG_ID, TAG_RUN_ID, airflow_context_tags

        report = super().execute(context)
        views = report.get("views") or []
        ages = [v.get("staleness_s") for v in views]
        status: Status = "error" if report.get("error") else ("ok" if report.get("fresh") else "detected")
        ids = airflow_context_tags(context)
        monitoring_history.append(monitoring_history.CheckRecord(
            model=self.model_name, kind="freshness", status=status,
            value=max(ages) if ages and None not in ages else None,
            threshold=min((v["allowed_s"] for v in views), default=None),
            details={"error": report["error"]} if report.get("error") else
            {"stale_views": report.get("stale_views", []), "views": views},
            dag_id=ids.get(TAG_DAG_ID), run_id=ids.get(TAG_RUN_ID),
        ))
        return {**report, "status": status}


def describe_record(kind: str, record: Mapping[str, Any] | None) -> str:
    """One readable line per check, e.g. 'drift: detected — value 0.45 vs threshold 0.3 on 812 rows (v1)'."""
    if record is None:
        return f"{kind}: no record — the task failed before recording or did not run; see its log"
    details = record.get("details") or {}
    if record["status"] in ("skipped", "error"):
        why = details.get("reason") or details.get("error") or "no reason recorded"
        return f"{kind}: {record['status']} — {why}"
    value, threshold = record.get("value"), record.get("threshold")
    shown = f"{value:.4g}" if isinstance(value, int | float) else "n/a"
    limit = f" vs threshold {threshold:.4g}" if isinstance(threshold, int | float) else ""
    version = f" (v{record['model_version']})" if record.get("model_version") else ""
    rows = f" on {record['rows']} rows" if record.get("rows") else ""
    return f"{kind}: {record['status']} — value {shown}{limit}{rows}{version}"


class MonitoringSummaryOperator(BaseOperator):
    """Read back this run's monitoring-history records; log one line per check; return the summary.

    :param model_name: the model. (templated)
    :return: {model, run_id, detected: [kinds], checks: {kind: {status, value, threshold, rows} | None}}
    """

    template_fields: Sequence[str] = ("model_name",)
    ui_color = "#eef5e9"

    def __init__(self, *, model_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core import monitoring_history

        run_id = context.get("run_id")
        started = getattr(context.get("dag_run"), "start_date", None)
        latest: dict[str, dict[str, Any]] = {}
        for record in monitoring_history.history(self.model_name, since=started):
            if record.get("run_id") == run_id:
                latest[record["kind"]] = record  # oldest first: a retried check's last record wins
        for kind in CHECKS:
            self.log.info("%s", describe_record(kind, latest.get(kind)))
        checks = {kind: ({k: latest[kind].get(k) for k in ("status", "value", "threshold", "rows")}
                         if kind in latest else None) for kind in CHECKS}
        detected = [kind for kind in CHECKS if (checks[kind] or {}).get("status") == "detected"]
        self.log.info("%s: %s", self.model_name, f"detected {', '.join(detected)}" if detected else "nothing detected")
        return {"model": self.model_name, "run_id": run_id, "detected": detected, "checks": checks}


def _schedule(spec: ModelSpec) -> Any:
    labels = labels_asset(spec.name, spec.monitoring.performance.labels.path)
    cron = spec.monitoring.schedule
    if not cron:
        return labels  # no schedule: only new label files start a run
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=labels)


def monitoring_dag(spec: ModelSpec, default_args: dict[str, Any], start_date: Any) -> DAG:
    feats, monitoring = spec.features, spec.monitoring.model_dump(mode="json")
    with DAG(
        dag_id=monitoring_dag_id(spec.name),
        schedule=_schedule(spec),
        start_date=start_date,
        catchup=False,
        max_active_runs=1,  # overlapping windows would double-count events
        default_args=default_args,
        tags=["mlops", "monitoring", spec.name, *spec.tags],
        doc_md=monitoring_dag_doc(spec),
    ) as dag:
        checks = [
            EvidentlyDriftCheckOperator(task_id="check_drift", model_name=spec.name, monitoring=monitoring,
                                        window_end=WINDOW_END, outlets=[drift_alias(spec.name)]),
            DelayedLabelPerformanceOperator(
                task_id="check_performance", model_name=spec.name, monitoring=monitoring, label=feats.label,
                entity_keys=list(feats.entity_keys), primary_metric=spec.evaluation.primary_metric,
                window_end=WINDOW_END, outlets=[performance_alias(spec.name)]),
            FeastSkewCheckOperator(
                task_id="check_skew", model_name=spec.name, monitoring=monitoring,
                feature_service=feats.feature_service, entity_keys=list(feats.entity_keys),
                request_features=list(feats.entity_df.request_features), window_end=WINDOW_END),
            FeastFreshnessRecordOperator(task_id="check_freshness", model_name=spec.name,
                                         feature_views=list(feats.feature_views)),
        ]
        # all_done: the summary must also report checks that failed (their record says why, or is missing).
        checks >> MonitoringSummaryOperator(task_id="summary", model_name=spec.name, trigger_rule="all_done")
    return dag
