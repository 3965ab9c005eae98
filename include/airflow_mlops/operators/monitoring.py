"""Monitoring operators: delayed-label performance and training-serving skew of a served model.

Thin by design: each `execute()` reads its (templated) arguments, reads the prediction log window
(`core.prediction_window`), calls `core.performance` / `core.skew`, appends one record to the
monitoring history (every run, quiet ones too: the UI plots them) and returns a small JSON-able dict.
pandas, mlflow and feast are imported inside `execute()` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import AssetAlias, BaseOperator

from airflow_mlops.boundary import TaskBoundary
from airflow_mlops.exceptions import MonitoringInputError, SpecError
from airflow_mlops.sensors.feast import FeastCheckFreshnessOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.core.monitoring_history import Status
    from airflow_mlops.core.prediction_window import WindowFrame
    from airflow_mlops.core.spec import Monitoring


class _MonitoringCheck(TaskBoundary, BaseOperator):
    """Shared by the checks: the window, the spec section and the history record.

    OpenLineage: the checks declare no datasets (no OpenLineage method): what they read is a window of
    the prediction log and labels, a parquet folder or PostgreSQL table depending on the profile, and
    what they write is a verdict in the monitoring history, not data the pipeline consumes; the drift
    check (EvidentlyDriftCheckOperator) is the one that reports its report file.
    """

    kind = ""

    def __init__(self, *, model_name: str, monitoring: Mapping[str, Any] | None = None,
                 window_end: str | datetime | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.monitoring = dict(monitoring or {})
        self.window_end = window_end

    def settings(self) -> Monitoring:
        from pydantic import ValidationError

        from airflow_mlops.core.spec import Monitoring

        try:
            return Monitoring.model_validate(self.monitoring)
        except ValidationError as exc:
            raise SpecError([f"{self.task_id}: the `monitoring` argument is not a valid spec section "
                             f"(monitoring.*): {exc}"]) from None

    def window(self, context: Context, cfg: Monitoring) -> tuple[datetime, datetime]:
        """[end - monitoring.window, end): end = window_end, else the run's data interval end, else now."""
        from airflow_mlops.core.prediction_window import window_bounds

        return window_bounds(cfg.window, self.window_end, context.get("data_interval_end"))

    def record(self, context: Context, *, status: str, window: tuple[datetime, datetime], value: float | None = None,
               threshold: float | None = None, rows: int = 0, model_version: str | None = None,
               details: Mapping[str, Any] | None = None) -> None:
        from airflow_mlops.core import monitoring_history
        from airflow_mlops.core.lineage import TAG_DAG_ID, TAG_RUN_ID, airflow_context_tags

        ids = airflow_context_tags(context)
        monitoring_history.append(monitoring_history.CheckRecord(
            model=self.model_name, kind=self.kind, status=status, value=value,  # type: ignore[arg-type]
            threshold=threshold, rows=rows, model_version=model_version, window_start=window[0],
            window_end=window[1], details=dict(details or {}), dag_id=ids.get(TAG_DAG_ID), run_id=ids.get(TAG_RUN_ID),
        ))

    def read_window(self, window: tuple[datetime, datetime], sample_rows: int | None = None) -> WindowFrame:
        from airflow_mlops.core.prediction_window import read_prediction_window

        return read_prediction_window(self.model_name, window[0], window[1], sample_rows=sample_rows)

    def skip_small(self, context: Context, window: tuple[datetime, datetime], rows: int,
                   cfg: Monitoring) -> dict[str, Any] | None:
        """A skipped result (recorded, logged, no event) when the window holds fewer than `min_rows` predictions."""
        if rows >= cfg.min_rows:
            return None
        span = f"[{window[0].isoformat()}, {window[1].isoformat()})"
        reason = (f"no predictions of {self.model_name} logged in {span}" if rows == 0 else
                  f"only {rows} prediction(s) of {self.model_name} logged in {span}; monitoring.min_rows is "
                  f"{cfg.min_rows}") + ": nothing to check, no event"
        self.log.info("%s check skipped: %s", self.kind, reason)
        self.record(context, status="skipped", window=window, rows=rows, details={"reason": reason})
        return {"status": "skipped", "value": None, "threshold": None, "reason": reason,
                "counts": {"predictions": rows}, "window": _window_dict(window)}

    def fail(self, context: Context, window: tuple[datetime, datetime], exc: Exception) -> None:
        """Bad input is recorded (status error, the message) before the task fails with it."""
        self.record(context, status="error", window=window, details={"error": str(exc)})


class DelayedLabelPerformanceOperator(_MonitoringCheck):
    """Join delayed labels to the prediction log window; emit `mlops.performance.<model>` when degraded.

    Reads every label file of the model (`monitoring.performance.labels`), joins it to the window's
    predictions (by request id, or entity keys + nearest time), scores the champion's labelled
    predictions with `monitoring.performance.metric` (default: the primary metric), a metric of the
    model's `task` (`core.task_metrics`), and compares with the champion's evaluation value (MLflow run
    metric `eval.<metric>`, else the training run's `<metric>`). Degraded (worse by more than `tolerance`,
    in the metric's direction: rmse rising, f1_macro falling): the task adds a `performance_asset(model)`
    event through its `performance_alias(model)` outlet, with the extra {metric, value, threshold,
    champion_version, champion_value, rows, window}; otherwise nothing is emitted. Fewer than
    `min_labels` joined rows, no champion or an empty window: status skipped with the reason.
    Unknown request ids and labels without a prediction are counted (with a sample of ids).

    Returns {status, metric, value, threshold, champion_value, champion_version, rows, reason, counts, window}.

    :param model_name: the model (templated).
    :param monitoring: the spec's `monitoring` section as a dict (templated).
    :param label: the spec's `features.label`, used when `labels.label_column` is not set.
    :param entity_keys: the spec's `features.entity_keys` (for `labels.join: entity_time`).
    :param primary_metric: the spec's `evaluation.primary_metric`, used when `performance.metric` is not set.
    :param task: the spec's `task` (binary | multiclass | regression): the labels' kind and the metrics allowed.
    :param window_end: end of the window, ISO string or datetime (templated); default: the run's
        data interval end, else now.
    :param mlflow_conn_id: MLflow connection (templated).
    """

    template_fields: Sequence[str] = ("model_name", "monitoring", "window_end", "mlflow_conn_id")
    kind = "performance"

    def __init__(self, *, model_name: str, monitoring: Mapping[str, Any] | None = None, label: str,
                 entity_keys: list[str], primary_metric: str | None = None, task: str = "binary",
                 window_end: str | datetime | None = None, mlflow_conn_id: str = "mlflow_default",
                 **kwargs: Any) -> None:
        super().__init__(model_name=model_name, monitoring=monitoring, window_end=window_end, **kwargs)
        from airflow_mlops.core.tasks import DEFAULT_PRIMARY, TASKS

        if task not in TASKS:
            raise SpecError([f"{self.task_id}: task={task!r}; allowed: {list(TASKS)}"])
        self.label_column = label  # BaseOperator.label is taken
        self.entity_keys = list(entity_keys)
        self.task = task
        self.primary_metric = primary_metric or DEFAULT_PRIMARY[task]
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        cfg = self.settings()
        window = self.window(context, cfg)
        frame = self.read_window(window).frame
        small = self.skip_small(context, window, len(frame), cfg)
        if small is not None:
            return small
        metric = self._metric(cfg)
        try:
            joined, directory = self._join(cfg, frame, window)
        except MonitoringInputError as exc:
            self.fail(context, window, exc)
            raise
        version, champion_value, source = self._champion(metric)
        from airflow_mlops.core.performance import judge

        result = judge(joined, metric=metric, champion_version=version, champion_value=champion_value,
                       tolerance=cfg.performance.tolerance, min_labels=cfg.performance.min_labels, task=self.task)
        if result.status == "skipped" and not joined.counts["label_files"]:
            result = replace(result, reason=f"{result.reason}; no label files in {directory} yet")
        details = {**result.to_dict(), "champion_source": source, "tolerance": cfg.performance.tolerance}
        self.log.info("performance of %s (%s): %s. Counts: %s", self.model_name, result.status, result.reason,
                      result.counts)
        self.record(context, status=result.status, window=window, value=result.value, threshold=result.threshold,
                    rows=result.rows, model_version=version, details=details)
        out = {**result.to_dict(), "champion_version": version, "window": _window_dict(window)}
        if result.degraded:
            self._emit(context, out)
        return out

    def _metric(self, cfg: Monitoring) -> str:
        from airflow_mlops.core.tasks import METRICS_BY_TASK

        metric = cfg.performance.metric or self.primary_metric
        allowed = METRICS_BY_TASK[self.task]
        if metric not in allowed:
            raise SpecError([f"{self.model_name}: monitoring.performance.metric (or evaluation.primary_metric) is "
                             f"{metric!r}, not a {self.task} metric; allowed: {list(allowed)}"])
        return metric

    def _join(self, cfg: Monitoring, frame: Any, window: tuple[datetime, datetime]) -> tuple[Any, Path]:
        from airflow_mlops.core.performance import join_labels, load_labels
        from airflow_mlops.core.spec import duration_seconds
        from airflow_mlops.triggers.labels import labels_dir_of

        spec = cfg.performance.labels
        directory = labels_dir_of(self.model_name, spec.path)
        labels = load_labels(directory, label_column=spec.label_column or self.label_column, join=spec.join,
                             entity_keys=self.entity_keys, timestamp_column=spec.timestamp_column, task=self.task)
        self.log.info("labels: %s row(s) from %s file(s) in %s (%s unreadable, %s without a label, %s duplicate)",
                      len(labels.frame), len(labels.files), directory, len(labels.unreadable), labels.missing_label,
                      labels.duplicates)
        joined = join_labels(frame, labels, join=spec.join, entity_keys=self.entity_keys,
                             timestamp_column=spec.timestamp_column,
                             tolerance=timedelta(seconds=duration_seconds(spec.join_tolerance)),
                             start=window[0], end=window[1])
        joined.counts.update(label_files=len(labels.files), unreadable_files=len(labels.unreadable),
                             labels_missing_value=labels.missing_label, duplicate_labels=labels.duplicates)
        if joined.counts.get("unknown_request_ids"):
            self.log.warning("%s label(s) name request ids with no prediction in the window, e.g. %s",
                             joined.counts["unknown_request_ids"], list(joined.unknown_sample))
        return joined, directory

    def _champion(self, metric: str) -> tuple[str | None, float | None, str]:
        """(champion version, its evaluation value of `metric`, where that value came from)."""
        from mlflow.exceptions import MlflowException

        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.hooks.mlflow_registry import ModelRegistry

        hook = MLflowHook(self.mlflow_conn_id)
        hook.check_backend()
        with hook.activated() as client:
            try:
                version = ModelRegistry(client, self.model_name).alias_version("champion")
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                version = None
            if version is None:
                return None, None, f"{self.model_name} has no champion"
            run_id = client.get_model_version(self.model_name, version).run_id
            metrics = dict(client.get_run(run_id).data.metrics) if run_id else {}
        for key in (f"eval.{metric}", metric):
            if key in metrics:
                return version, float(metrics[key]), f"MLflow run {run_id} metric {key}"
        return version, None, f"MLflow run {run_id} has no eval.{metric} or {metric} (has {sorted(metrics)})"

    def _emit(self, context: Context, out: Mapping[str, Any]) -> None:
        from airflow_mlops.operators.assets import performance_alias, performance_asset

        alias = performance_alias(self.model_name)
        extra = {key: out[key] for key in ("metric", "value", "threshold", "champion_version", "champion_value",
                                           "rows", "window")}
        for outlet in self.outlets or []:
            if isinstance(outlet, AssetAlias) and outlet.name == alias.name:
                context["outlet_events"][outlet].add(performance_asset(self.model_name), extra=extra)
                self.log.warning("performance degraded: event for %s (%s)", performance_asset(self.model_name).name,
                                 out["reason"])
                return
        self.log.warning("performance degraded, but this task has no %s outlet: no event emitted", alias.name)


class FeastSkewCheckOperator(_MonitoringCheck):
    """Training-serving skew: feature values logged at serving vs Feast's offline values, same entity/time.

    Samples `monitoring.skew.sample_rows` logged rows of the window, fetches the offline values of the
    same entities as of the same times (point-in-time, duckdb) and reports per feature the share of
    rows differing by more than the relative `skew.tolerance`. A feature logged but not served by the
    feature service, or served but not logged, is skew named by column. Status detected when any
    share exceeds `skew.max_mismatch_share` (recorded in the monitoring history; no asset event).

    Returns {status, value, threshold, rows, reason, skewed_features, missing_offline, missing_in_log,
    features, counts, window}.

    :param model_name: the model (templated).
    :param monitoring: the spec's `monitoring` section as a dict (templated).
    :param feature_service: the spec's `features.feature_service` (templated).
    :param entity_keys: the spec's `features.entity_keys`.
    :param request_features: the spec's `features.entity_df.request_features`: logged, never in Feast.
    :param window_end: end of the window (templated); default: the run's data interval end, else now.
    :param feast_conn_id: Feast connection (templated).
    """

    template_fields: Sequence[str] = ("model_name", "monitoring", "feature_service", "window_end", "feast_conn_id")
    kind = "skew"

    def __init__(self, *, model_name: str, monitoring: Mapping[str, Any] | None = None, feature_service: str,
                 entity_keys: list[str], request_features: list[str] | None = None,
                 window_end: str | datetime | None = None, feast_conn_id: str = "feast_default",
                 **kwargs: Any) -> None:
        super().__init__(model_name=model_name, monitoring=monitoring, window_end=window_end, **kwargs)
        self.feature_service = feature_service
        self.entity_keys = list(entity_keys)
        self.request_features = list(request_features or [])
        self.feast_conn_id = feast_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core import skew
        from airflow_mlops.hooks.feast import FeastHook

        cfg = self.settings()
        window = self.window(context, cfg)
        # the window reader samples per file, approximately: read about twice the rows, then sample exactly
        logged = self.read_window(window, sample_rows=2 * cfg.skew.sample_rows)
        small = self.skip_small(context, window, logged.sampled_from, cfg)
        if small is not None:
            return small
        try:
            rows = skew.sample_rows(logged.frame, self.entity_keys, cfg.skew.sample_rows)
        except MonitoringInputError as exc:
            self.fail(context, window, exc)
            raise
        store = FeastHook(feast_conn_id=self.feast_conn_id).get_store()
        served = skew.service_features(store, self.feature_service)
        features = [c for c in logged.feature_columns if c not in self.request_features]
        offline = skew.offline_values(store, self.feature_service, rows, self.entity_keys)
        result = skew.compare(rows, offline, logged_features=features, offline_features=served,
                              tolerance=cfg.skew.tolerance, max_mismatch_share=cfg.skew.max_mismatch_share)
        counts = {"predictions": logged.sampled_from, "sampled": len(rows)}
        self.log.info("skew of %s (%s): %s", self.model_name, result.status, result.reason)
        for name, info in result.features.items():
            self.log.info("  %s: %s/%s mismatching%s", name, info["mismatches"], info["compared"],
                          f" ({info['problem']})" if info.get("problem") else "")
        out = {**result.to_dict(), "counts": counts, "window": _window_dict(window)}
        self.record(context, status=result.status, window=window, value=result.value, threshold=result.threshold,
                    rows=result.rows, details=out)
        return out


def _window_dict(window: tuple[datetime, datetime]) -> dict[str, str]:
    return {"start": window[0].isoformat(), "end": window[1].isoformat()}


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


class MonitoringSummaryOperator(TaskBoundary, BaseOperator):
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
        from airflow_mlops.core.monitoring_history import KINDS

        run_id = context.get("run_id")
        started = getattr(context.get("dag_run"), "start_date", None)
        latest: dict[str, dict[str, Any]] = {}
        for record in monitoring_history.history(self.model_name, since=started):
            if record.get("run_id") == run_id:
                latest[record["kind"]] = record  # oldest first: a retried check's last record wins
        for kind in KINDS:
            self.log.info("%s", describe_record(kind, latest.get(kind)))
        checks = {kind: ({k: latest[kind].get(k) for k in ("status", "value", "threshold", "rows")}
                         if kind in latest else None) for kind in KINDS}
        detected = [kind for kind in KINDS if (checks[kind] or {}).get("status") == "detected"]
        self.log.info("%s: %s", self.model_name, f"detected {', '.join(detected)}" if detected else "nothing detected")
        return {"model": self.model_name, "run_id": run_id, "detected": detected, "checks": checks}
