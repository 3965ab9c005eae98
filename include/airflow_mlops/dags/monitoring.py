"""`<model>__monitor`: drift, delayed-label performance, training-serving skew and feature freshness.

The four checks run side by side with no edges between them, so a failing check never hides the
others; `summary` runs after all of them whatever their states (trigger rule `all_done`), logs one
line per check and returns the run summary. Every check appends one monitoring-history record per
run (quiet runs too: the UI plots drift share and metrics as time series).

Drift and performance emit `mlops.drift.<model>` / `mlops.performance.<model>` (through their
aliases) only when a threshold is crossed; the training DAG schedules on those (with a cooldown).

Freshness is the feature DAG's `FeastCheckFreshnessOperator` plus a history record
(`FeastFreshnessRecordOperator`); `MonitoringSummaryOperator` reads the records back. Both live in
operators/monitoring.py with the other checks: this module only wires the DAG.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable

from airflow_mlops.core.spec import ModelSpec
from airflow_mlops.dags.assets import drift_alias, performance_alias
from airflow_mlops.dags.docs import monitoring_dag_doc
from airflow_mlops.operators.evidently import EvidentlyDriftCheckOperator
from airflow_mlops.operators.monitoring import (
    DelayedLabelPerformanceOperator,
    FeastFreshnessRecordOperator,
    FeastSkewCheckOperator,
    MonitoringSummaryOperator,
)
from airflow_mlops.triggers.labels import labels_asset

# Every check reads the same window [end - monitoring.window, end): end = the run's data interval end
# (a scheduled run; "" for a label-triggered run, where each check takes "now"). Rendered to an ISO
# string it shows in "Rendered Template", and plain datetimes compare with pandas (pendulum's do not).
# `is defined`: a run triggered without a logical date (REST API, UI "Trigger") has no
# data_interval_end in its context at all, and Airflow's StrictUndefined fails the task on it.
WINDOW_END = "{{ data_interval_end.isoformat() if data_interval_end is defined and data_interval_end else '' }}"


def monitoring_dag_id(model: str) -> str:
    return f"{model}__monitor"


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
                entity_keys=list(feats.entity_keys), primary_metric=spec.evaluation.primary_metric, task=spec.task,
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
