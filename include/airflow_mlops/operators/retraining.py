"""MLflowRetrainGateOperator: the first task of a training DAG — why this run retrains, and whether it may.

Why a gate: drift and performance checks run every hour; while a model is drifted each run emits an
event, and each event would start a retrain. Two mechanisms keep that to one retrain:

1. Airflow itself, while a run is active. Verified in the Airflow 3.3.2 scheduler source:
   `DagModel.dags_needing_dagruns` (models/dag.py) leaves a DAG out of run creation while its
   queued + running runs reach `max_active_runs` (the training DAG uses 1), without deleting its
   queue rows; `AssetDagRunQueue` has one row per (asset, DAG) (primary key), so ten drift events
   queue one row; when the run ends, `_create_dag_runs_asset_triggered` (jobs/scheduler_job_runner.py)
   creates ONE run that consumes every event since the previous asset-triggered run.
2. This gate, after a run: a drift/performance-triggered run whose model started a retrain less
   than `cooldown` ago is skipped (AirflowSkipException: this task and, through the default
   all_success rule, every downstream task are skipped; the run ends "success", nothing trained).
   That also swallows the one collapsed run of (1) that follows a retrain.

Where "last retrain start" lives: tasks may not touch the Airflow metadata DB, so it is the
registered-model tag `airflow_mlops.retrain.last_started` ({at, dag_id, run_id, trigger}) in the
MLflow registry, read and written under the registry lease (hooks/mlflow_registry.py) so two gates
cannot both pass. Manual and scheduled (cron) runs always pass, and so do runs with any feature
event (new data is a reason of its own); every passing run records its start.

The result (XCom) `{reason, trigger, events: [{asset, extra, timestamp}], started_at, previous_start}`
feeds the register task, which writes `airflow_mlops.retrain.*` tags on the new version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from airflow_mlops.boundary import TaskBoundary

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient

TRIGGERS = ("manual", "schedule", "asset")


def trigger_of(context: Mapping[str, Any]) -> str:
    """manual | schedule | asset, from the run type (backfills count as schedule)."""
    run_type = getattr(context.get("dag_run"), "run_type", None) or "manual"
    # The Task SDK's DagRunType is a (str, Enum): str() of it is "DagRunType.MANUAL" on Python 3.11.
    run_type = str(getattr(run_type, "value", run_type))
    if run_type == "asset_triggered":
        return "asset"
    return "schedule" if run_type in ("scheduled", "backfill") else "manual"


def collect_events(triggering: Any) -> list[dict[str, Any]]:
    """[{asset, extra, timestamp}] of the run's triggering asset events, oldest first, each once.

    The accessor lists an event under its asset and again under each alias it came through.
    """
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for key in triggering or {}:
        for event in triggering[key]:
            name = event.asset.name
            stamp = event.timestamp.isoformat() if hasattr(event.timestamp, "isoformat") else str(event.timestamp)
            seen.setdefault((name, stamp), {"asset": name, "extra": dict(event.extra or {}), "timestamp": stamp})
    return sorted(seen.values(), key=lambda e: e["timestamp"])


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else str(value)


def describe_event(event: Mapping[str, Any]) -> str:
    """One human line per event, e.g. 'drift: share 0.45 >= 0.3 (trip_distance_km, ...) at <time>'."""
    name, extra, at = str(event["asset"]), dict(event.get("extra") or {}), event.get("timestamp")
    if name.startswith("mlops.drift."):
        columns = ", ".join(extra.get("drifted_columns") or []) or "no column listed"
        return f"drift: share {_num(extra.get('share'))} >= {_num(extra.get('threshold'))} ({columns}) at {at}"
    if name.startswith("mlops.performance."):
        champion = extra.get("champion_version")
        was = f" (champion v{champion} {_num(extra.get('champion_value'))})" if champion else ""
        return (f"performance: {extra.get('metric', 'metric')} {_num(extra.get('value'))} < "
                f"{_num(extra.get('threshold'))}{was} at {at}")
    if name.startswith("mlops.features."):
        return f"features: {name.removeprefix('mlops.features.')} got new rows at {at}"
    return f"{name} at {at}"


def retrain_reason(trigger: str, events: list[dict[str, Any]], context: Mapping[str, Any]) -> str:
    if trigger == "asset" and events:
        return "; ".join(describe_event(e) for e in events)
    dag_run = context.get("dag_run")
    if trigger == "schedule":
        return f"schedule: run {getattr(dag_run, 'run_id', '?')}"
    user = getattr(dag_run, "triggering_user_name", None)
    return f"manual: run {getattr(dag_run, 'run_id', '?')}" + (f" by {user}" if user else "")


def last_start(tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The registered model's last retrain start {at, dag_id, run_id, trigger}, None if absent or unreadable."""
    from airflow_mlops.core.lineage import TAG_RETRAIN_LAST_STARTED

    try:
        value = json.loads(tags.get(TAG_RETRAIN_LAST_STARTED) or "null")
        value["at"] = datetime.fromisoformat(value["at"])
    except (ValueError, TypeError, KeyError):
        return None
    return dict(value)


class MLflowRetrainGateOperator(TaskBoundary, BaseOperator):
    """Say why this training run starts; skip it when monitoring events arrive within the cooldown.

    OpenLineage: no datasets and no OpenLineage method: it reads asset events and writes a registry tag
    (the cooldown clock), no data; the provider reports the task run alone.

    :param model_name: registered model name. (templated)
    :param cooldown: "6h"-style duration (the spec's `monitoring.cooldown`). (templated)
    :param gated_assets: names of the assets whose events are subject to the cooldown
        (`mlops.drift.<model>`, `mlops.performance.<model>`); a run with any other event passes.
    :param description: description of the registered model if the gate has to create it (first run).
    :param mlflow_conn_id: Airflow connection of type "mlflow".
    :return: {reason, trigger, events: [{asset, extra, timestamp}], started_at, previous_start}
    """

    template_fields: Sequence[str] = ("model_name", "cooldown")
    ui_color = "#fff3cd"

    def __init__(self, *, model_name: str, cooldown: str, gated_assets: Iterable[str], description: str | None = None,
                 mlflow_conn_id: str = "mlflow_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.cooldown = cooldown
        self.gated_assets = sorted(gated_assets)
        self.description = description
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.lineage import TAG_DAG_ID, TAG_RUN_ID, TAG_TASK_ID, airflow_context_tags
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.hooks.mlflow_registry import ModelRegistry, ensure_registered_model

        trigger = trigger_of(context)
        events = collect_events(context.get("triggering_asset_events"))
        reason = retrain_reason(trigger, events, context)
        gated = trigger == "asset" and bool(events) and all(e["asset"] in self.gated_assets for e in events)
        tags = airflow_context_tags(context)
        owner = "/".join(tags.get(key, "?") for key in (TAG_DAG_ID, TAG_RUN_ID, TAG_TASK_ID))
        client = MLflowHook(self.mlflow_conn_id).get_conn()
        ensure_registered_model(client, self.model_name, self.description)  # the start is a model tag
        registry = ModelRegistry(client, self.model_name)
        with registry.lease(owner):
            previous = last_start(registry.tags())
            if gated:
                self._refuse_within_cooldown(previous, context, reason)
            else:
                self.log.info("%s run: the cooldown applies only to runs started by %s events alone; passing",
                              trigger, " / ".join(self.gated_assets))
            started = self._record_start(client, previous, context, trigger)
        self.log.info("retraining %s because %s", self.model_name, reason)
        return {"reason": reason, "trigger": trigger, "events": events, "started_at": started,
                "previous_start": previous["at"].isoformat() if previous else None}

    def _refuse_within_cooldown(self, previous: dict[str, Any] | None, context: Context, reason: str) -> None:
        from airflow_mlops.core.spec import duration_seconds

        if previous is None or previous.get("run_id") == context.get("run_id"):
            return  # never retrained, or a retry of this very gate
        age = (datetime.now(UTC) - previous["at"]).total_seconds()
        limit = duration_seconds(self.cooldown)
        if age < limit:
            raise AirflowSkipException(
                f"{self.model_name}: not retraining — the last retrain started {age / 60:.0f} min ago "
                f"(run {previous.get('run_id')}, {previous['at'].isoformat()}), within the cooldown of "
                f"{self.cooldown}. Events ignored: {reason}. Trigger the DAG by hand to retrain anyway"
            )
        self.log.info("last retrain started %.1f h ago (cooldown %s): passing", age / 3600, self.cooldown)

    def _record_start(self, client: MlflowClient, previous: dict[str, Any] | None, context: Context,
                      trigger: str) -> str:
        from airflow_mlops.core.lineage import TAG_RETRAIN_LAST_STARTED

        run_id = context.get("run_id")
        if previous is not None and previous.get("run_id") == run_id:
            return str(previous["at"].isoformat())  # a retry keeps the first start
        started = datetime.now(UTC).isoformat(timespec="seconds")
        dag_id = getattr(context.get("dag"), "dag_id", None) or getattr(context.get("dag_run"), "dag_id", None)
        value = json.dumps({"at": started, "dag_id": dag_id, "run_id": run_id, "trigger": trigger})
        client.set_registered_model_tag(self.model_name, TAG_RETRAIN_LAST_STARTED, value)
        return started
