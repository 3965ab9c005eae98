"""Evidently drift check of a model's inputs and predictions: the champion's training snapshot vs its prediction log.

Thin by design: `execute()` resolves the champion and its snapshot (MLflow lineage), reads the
window of the prediction log (`core.prediction_window`), lets `core.drift` decide and write the
report, logs the report to the champion's MLflow run, appends the monitoring-history record and
emits the asset event. pandas/mlflow/evidently are imported inside `execute()` only.

- Prediction drift: the champion (loaded from the registry) scores the reference rows; its output
  column (`core.predictions`: probability, class or value, by the version's task) is compared with the
  logged predictions (`core.drift`). Drift is detected when the input share crosses `drift_share` or
  the predictions drifted.
- Asset event: give the task `outlets=[drift_alias(model)]`. Only when drift is detected it adds an
  event for `drift_asset(model)` (`mlops.drift.<model>`) through the alias, with the extra {share,
  threshold, drifted_columns: {col: {method, score, threshold}}, prediction_drift: {column, method, score,
  threshold, drifted, ...} or None, report_uri, window: {start, end}, model_version, rows, sampled_from}.
  A quiet or skipped run emits nothing.
- XCom (return value): that dict + {status: ok|detected|skipped, detected, report: {url, html, json,
  relpath, artifact_path}, reason (skipped)}.
- Extra link "Drift report" (`DriftReportLink`) → `/mlops/reports/drift/<model>/<dag_id>/<run_id>/
  report.html`, served (auth-checked) by the mlops UI plugin's report route, kind "drift".
- Monitoring history: one `CheckRecord(kind="drift")` per run, also when skipped or failing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseOperatorLink

from airflow_mlops.boundary import TaskBoundary
from airflow_mlops.exceptions import DriftReferenceMissing
from airflow_mlops.openlineage.record import recall, remember
from airflow_mlops.operators.links import DriftHistoryLink
from airflow_mlops.operators.validation import under_base_url

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey
    from mlflow import MlflowClient

    from airflow_mlops.core.drift import DriftResult
    from airflow_mlops.core.monitoring_history import Status
    from airflow_mlops.core.prediction_window import WindowFrame
    from airflow_mlops.core.predictions import TaskOutput
    from airflow_mlops.core.spec import Monitoring
    from airflow_mlops.openlineage.datasets import Lineage

CHAMPION = "champion"
SAMPLE_SEED = 0  # fixed: the same window gives the same sample, so a re-run gives the same verdict
SUMMARY_ARTIFACT = "training/summary.json"


class DriftReportLink(BaseOperatorLink):
    """Opens the task's drift report: `/mlops/reports/drift/<relpath>` (empty when there is none)."""

    name = "Drift report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        from airflow_mlops.operators.links import finished_without_result

        if finished_without_result(ti_key):  # skipped or failed: no result to look up (avoids an error-level 404 line)
            return ""
        value = XCom.get_value(ti_key=ti_key, key="return_value")
        report = value.get("report") if isinstance(value, Mapping) else None
        return under_base_url(str(report.get("url") or "")) if isinstance(report, Mapping) else ""


class EvidentlyDriftCheckOperator(TaskBoundary, BaseOperator):
    """Data drift of the champion's input columns over the last `monitoring.window` of predictions.

    Reference: the champion version's training snapshot (tag `airflow_mlops.training_set.path`),
    columns: the training run's feature columns. Methods, thresholds, drift_share, sample_rows and
    min_rows come from the spec's `monitoring` (see `core.drift` for the decision rules). A window
    with fewer than `min_rows` predictions is skipped (logged, recorded, no event); a missing
    snapshot raises DriftReferenceMissing naming the model version. See the module doc for outputs.

    :param model_name: registered model name (templated).
    :param monitoring: the spec's `monitoring` as JSON (`spec.monitoring.model_dump(mode="json")`).
    :param window_end: end of the window, ISO string (templated); default the run's
        data_interval_end, else now. The window is [window_end - monitoring.window, window_end).
    :param mlflow_conn_id: MLflow connection.
    :param prediction_log_dir: parquet prediction log root (default MLOPS_HOME/predictions).
    """

    template_fields: Sequence[str] = ("model_name", "window_end")
    operator_extra_links = (DriftReportLink(), DriftHistoryLink())

    def __init__(self, *, model_name: str, monitoring: Mapping[str, Any], window_end: str | None = None,
                 mlflow_conn_id: str = "mlflow_default", prediction_log_dir: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.monitoring = dict(monitoring)
        self.window_end = window_end
        self.mlflow_conn_id = mlflow_conn_id
        self.prediction_log_dir = prediction_log_dir

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.prediction_window import window_bounds
        from airflow_mlops.core.spec import Monitoring

        spec = Monitoring.model_validate(self.monitoring)
        start, end = window_bounds(spec.window, self.window_end, context.get("data_interval_end"))
        base: dict[str, Any] = {"model": self.model_name,
                                "window": {"start": start.isoformat(), "end": end.isoformat()}}
        try:
            result = self._check(context, spec, base, start, end)
        except Exception as exc:
            # Every run leaves one history record: the UI shows a failing check as an error, not a gap.
            self._record(context, base, "error", rows=0, details={"error": f"{type(exc).__name__}: {exc}"})
            raise
        from airflow_mlops.hooks.mlflow import MLflowHook

        remember(self, context, {**(recall(self, context.get("ti")) or {}), "result": result,
                                 "registry_uri": MLflowHook(mlflow_conn_id=self.mlflow_conn_id).settings.registry_uri})
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """The champion version and its training snapshot (the reference) -> the drift report (JSON). The
        prediction log window is not a dataset here: it may be a parquet folder or a PostgreSQL table, and
        its rows are named by the run facet's window. A skipped check (no champion, too few rows) wrote
        no report: inputs only."""
        from airflow_mlops.core.lineage_names import file_name
        from airflow_mlops.openlineage.datasets import dataset, lineage, model_version_dataset

        recorded = recall(self, task_instance)
        if not recorded or not recorded["result"].get("model_version"):
            return None
        result = recorded["result"]
        inputs = [model_version_dataset(recorded["registry_uri"], self.model_name, result["model_version"],
                                        aliases=[CHAMPION])]
        if recorded.get("reference"):
            inputs.append(dataset(file_name(recorded["reference"])))
        outputs = [dataset(file_name(result["report"]["json"]))] if result.get("report") else []
        keep = ("status", "detected", "share", "threshold", "window", "drifted_columns")
        return lineage(inputs, outputs, {k: result[k] for k in keep if k in result})

    def _check(self, context: Context, spec: Monitoring, base: dict[str, Any], start: datetime,
               end: datetime) -> dict[str, Any]:
        from airflow_mlops.hooks.mlflow import MLflowHook

        client = MLflowHook(mlflow_conn_id=self.mlflow_conn_id).get_conn()
        version = self._champion(client)
        if version is None:
            return self._skip(context, base, None, 0, 0, f"{self.model_name} has no {CHAMPION} version yet")
        base["model_version"] = version
        snapshot, run_id = self._reference(client, version)
        remember(self, context, {"reference": str(snapshot)})
        columns = _feature_columns(client, run_id)
        window = self._window(spec, start, end)
        if window.sampled_from < spec.min_rows:
            why = (f"window {start.isoformat()} → {end.isoformat()} holds {window.sampled_from} predictions of "
                   f"{self.model_name}, fewer than monitoring.min_rows={spec.min_rows}: no drift verdict, no event")
            return self._skip(context, base, version, len(window.frame), window.sampled_from, why)
        if not columns:
            columns = list(window.feature_columns)
            self.log.warning("training run %s logged no %s feature_columns; checking the logged features %s",
                             run_id, SUMMARY_ARTIFACT, columns)
        result = self._compare(snapshot, window, columns, spec, self._champion_model(client, version))
        return self._finish(context, base, client, run_id, result, window.sampled_from)

    # ------------------------------------------------------------------------------------ inputs
    def _champion(self, client: MlflowClient) -> str | None:
        from airflow_mlops.hooks.mlflow_registry import ModelRegistry

        return ModelRegistry(client, self.model_name).alias_version(CHAMPION)

    def _reference(self, client: MlflowClient, version: str) -> tuple[Path, str]:
        """The champion's snapshot file and training run id, or DriftReferenceMissing naming the version."""
        from airflow_mlops.config import mlops_home
        from airflow_mlops.core.lineage import TAG_TRAINING_SET_PATH

        found = client.get_model_version(self.model_name, version)
        recorded = (found.tags or {}).get(TAG_TRAINING_SET_PATH)
        where = f"{self.model_name} version {version} ({CHAMPION})"
        if not recorded:
            raise DriftReferenceMissing(
                f"{where} has no tag {TAG_TRAINING_SET_PATH}: its training-set snapshot, the drift reference, is "
                f"unknown. Register models through the training DAG (it records the snapshot), or set the tag to "
                f"the parquet snapshot the version was trained on."
            )
        path = Path(recorded) if Path(recorded).is_absolute() else mlops_home() / recorded
        if not path.is_file():
            raise DriftReferenceMissing(
                f"{where}: training-set snapshot {path} (tag {TAG_TRAINING_SET_PATH}) does not exist, so there is "
                f"no drift reference. Restore the file under MLOPS_HOME={mlops_home()}, or retrain and promote a "
                f"new champion (it records a new snapshot)."
            )
        return path, str(found.run_id)

    def _window(self, spec: Monitoring, start: datetime, end: datetime) -> WindowFrame:
        from airflow_mlops.core.prediction_window import read_prediction_window

        directory = Path(self.prediction_log_dir) if self.prediction_log_dir else None
        window = read_prediction_window(self.model_name, start, end, sample_rows=spec.drift.sample_rows,
                                        seed=SAMPLE_SEED, directory=directory)
        self.log.info("window %s → %s: %s predictions of %s, %s read", start.isoformat(), end.isoformat(),
                      window.sampled_from, self.model_name, len(window.frame))
        return window

    def _champion_model(self, client: MlflowClient, version: str) -> tuple[TaskOutput, Any] | None:
        """The champion's estimator and task output (for prediction drift), or None when it cannot be loaded."""
        import mlflow.sklearn
        from mlflow.exceptions import MlflowException

        from airflow_mlops.core.predictions import TaskMismatch, TaskOutput
        from airflow_mlops.hooks.mlflow import MLflowHook

        tags = dict(client.get_model_version(self.model_name, version).tags or {})
        try:
            with MLflowHook(mlflow_conn_id=self.mlflow_conn_id).activated():
                estimator = mlflow.sklearn.load_model(f"models:/{self.model_name}/{version}")
            return TaskOutput.of(estimator, tags), estimator
        except (TaskMismatch, MlflowException, OSError, ValueError, AttributeError, ImportError) as exc:
            self.log.warning("%s v%s cannot be loaded to score the reference (%s: %s): no prediction drift check",
                             self.model_name, version, type(exc).__name__, exc)
            return None

    def _compare(self, snapshot: Path, window: WindowFrame, columns: list[str], spec: Monitoring,
                 model: tuple[TaskOutput, Any] | None) -> DriftResult:
        import pyarrow.parquet as pq

        from airflow_mlops.core.drift import check_drift, sample_frame

        available = set(pq.ParquetFile(snapshot).schema_arrow.names)
        inputs = list(getattr(model[1], "feature_names_in_", ())) if model else []
        # Only the model's columns: a wide snapshot (label, keys, other features) never enters memory.
        wanted = [c for c in dict.fromkeys([*columns, *inputs]) if c in available]
        reference = pq.read_table(snapshot, columns=wanted).to_pandas()
        total = len(reference)
        current, prediction = window.frame, None
        if model is not None and set(inputs) <= set(reference.columns):
            # scored after sampling: the reference side of the drift check never holds more than sample_rows
            reference = sample_frame(reference, spec.drift.sample_rows, SAMPLE_SEED)
            reference, current, prediction = _with_predictions(model, reference, current, inputs)
        elif model is not None:
            self.log.warning("the training snapshot lacks the model's columns %s: no prediction drift check",
                             sorted(set(inputs) - set(reference.columns)))
        result = check_drift(reference, current, columns, spec.drift, seed=SAMPLE_SEED,
                             current_total=window.sampled_from, prediction=prediction, reference_total=total)
        self.log.info("%s", result.summary())
        for column in result.columns:
            self.log.info("  %s: %s %s", column.column, "DRIFTED" if column.drifted else "ok", column.reason)
        return result

    # ----------------------------------------------------------------------------------- outputs
    def _finish(self, context: Context, base: dict[str, Any], client: MlflowClient, run_id: str,
                result: DriftResult, sampled_from: int) -> dict[str, Any]:
        from airflow_mlops.config import paths
        from airflow_mlops.core.drift import save_report

        ids = _run_ids(context)
        parts = [self.model_name, ids["dag_id"], ids["run_id"]]
        report: dict[str, Any] = save_report(result, paths().reports_dir / "drift", parts, context={**base, **ids})
        report["artifact_path"] = self._log_artifacts(client, run_id, report, base["window"]["end"])
        extra = {"share": result.share, "threshold": result.drift_share, "drifted_columns": result.drifted_columns,
                 "prediction_drift": result.prediction.to_dict() if result.prediction is not None else None,
                 "report_uri": report["url"], "window": base["window"], "model_version": base["model_version"],
                 "rows": result.sampling.current_rows, "sampled_from": sampled_from}
        status: Status = "detected" if result.detected else "ok"
        self._record(context, base, status, rows=result.sampling.current_rows, value=result.share,
                     threshold=result.drift_share,
                     details={**extra, "sampling": result.sampling.to_dict(), "report": report,
                              "checked_columns": len(result.columns)})
        if result.detected:
            self._emit(context, extra)
        else:
            self.log.info("no drift: no %s event", f"mlops.drift.{self.model_name}")
        return {**extra, "status": status, "detected": result.detected, "report": report,
                "sampling": result.sampling.to_dict()}

    def _log_artifacts(self, client: MlflowClient, run_id: str, report: Mapping[str, str], end: str) -> str | None:
        """Attach the report to the champion's training run; a failure is logged, not fatal (the file exists)."""
        from mlflow.exceptions import MlflowException

        stamp = end.replace(":", "").replace("+0000", "Z").replace("+", "_")
        artifact_path = f"monitoring/drift/{stamp}"
        try:
            for key in ("html", "json"):
                client.log_artifact(run_id, report[key], artifact_path=artifact_path)
        except (MlflowException, OSError) as exc:
            self.log.warning("could not log the drift report to MLflow run %s (%s); it is at %s", run_id, exc,
                             report["html"])
            return None
        self.log.info("drift report logged to MLflow run %s under %s", run_id, artifact_path)
        return artifact_path

    def _emit(self, context: Context, extra: dict[str, Any]) -> None:
        from airflow.sdk import AssetAlias

        from airflow_mlops.operators.assets import drift_alias, drift_asset

        alias = drift_alias(self.model_name)
        if not any(isinstance(o, AssetAlias) and o.name == alias.name for o in self.outlets or []):
            self.log.warning("drift detected but the task has no outlet %s: no asset event is emitted", alias.name)
            return
        context["outlet_events"][alias].add(drift_asset(self.model_name), extra=json.loads(json.dumps(extra)))
        self.log.info("drift detected: event for %s (share %.3f, columns %s)", drift_asset(self.model_name).name,
                      extra["share"], ", ".join(extra["drifted_columns"]))

    def _skip(self, context: Context, base: dict[str, Any], version: str | None, rows: int, sampled_from: int,
              reason: str) -> dict[str, Any]:
        self.log.info("drift check skipped: %s", reason)
        self._record(context, base, "skipped", rows=rows, details={"reason": reason, "sampled_from": sampled_from})
        return {**base, "model_version": version, "status": "skipped", "detected": False, "reason": reason,
                "rows": rows, "sampled_from": sampled_from, "report": None}

    def _record(self, context: Context, base: Mapping[str, Any], status: Status, *, rows: int,
                details: Mapping[str, Any], value: float | None = None, threshold: float | None = None) -> None:
        from airflow_mlops.core import monitoring_history

        ids = _run_ids(context)
        monitoring_history.append(monitoring_history.CheckRecord(
            model=self.model_name, kind="drift", status=status, value=value, threshold=threshold,
            rows=rows, model_version=base.get("model_version"),
            window_start=datetime.fromisoformat(base["window"]["start"]),
            window_end=datetime.fromisoformat(base["window"]["end"]),
            details=details, dag_id=ids["dag_id"], run_id=ids["run_id"]))


def _with_predictions(model: tuple[TaskOutput, Any], reference: Any, current: Any,
                      inputs: list[str]) -> tuple[Any, Any, str]:
    """Reference rows with the champion's predictions, current rows with the logged ones, both in the task's
    drift column (`TaskOutput.drift_column`: classes as text for multiclass)."""
    from airflow_mlops.core.predictions import class_text

    output, estimator = model
    scores = output.score(estimator, reference[inputs].astype("float64"))
    column = output.drift_column
    reference = reference.assign(**{column: output.drift_values(scores)})
    if output.multiclass and column in current.columns:
        current = current.assign(**{column: [None if v is None else class_text(v) for v in current[column]]})
    return reference, current, column


def _run_ids(context: Context) -> dict[str, str]:
    ti = context.get("ti")
    return {"dag_id": str(getattr(ti, "dag_id", None) or "adhoc"),
            "run_id": str(context.get("run_id") or getattr(ti, "run_id", None) or "adhoc")}


def _feature_columns(client: MlflowClient, run_id: str) -> list[str]:
    """The model's input columns as its training run logged them (training/summary.json), else []."""
    import tempfile

    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, SUMMARY_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return []
        with open(local, encoding="utf-8") as handle:
            return [str(c) for c in json.load(handle).get("feature_columns") or []]
