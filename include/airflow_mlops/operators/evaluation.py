"""EvaluateModelOperator: the challenger and the current champion, scored on the same held-out rows.

Thin adapter: the metrics, bootstrap and verdict live in `core/evaluation.py`, the report in
`core/evaluation_report.py`. Heavy libraries are imported inside `execute()` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops.boundary import TaskBoundary
from airflow_mlops.openlineage.record import recall, remember
from airflow_mlops.operators.links import EvaluationReportLink

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from airflow.sdk import Context
    from mlflow import MlflowClient

    from airflow_mlops.openlineage.datasets import Lineage

REPORT_DIR = "evaluation"
TAG_VERDICT = "airflow_mlops.evaluation.verdict"
TAG_CHAMPION_COMPARED = "airflow_mlops.evaluation.champion_version"


class EvaluateModelOperator(TaskBoundary, BaseOperator):
    """Judge a freshly trained challenger: absolute thresholds, then against the champion.

    Both models are scored on the held-out rows of the challenger's own training-set snapshot (the
    same split `train` used: newest rows for a time split), so neither was fitted on them and both
    see the features as of the same point in time. The report (JSON + self-contained HTML with the
    task's charts: ROC curves, predicted vs actual and residuals, or confusion matrices and per-class
    recall; per-slice bars) is logged to the challenger's MLflow run under `evaluation/`,
    the verdict as run tags and `eval.*` metrics.

    Raises ModelBelowThreshold (no retry) when a threshold is missed. A challenger that does not
    beat the champion is NOT an error: the task succeeds with promote=false and the reasons, and
    the promotion task skips itself. So does a challenger that breaks an `evaluation.fairness` bound
    (verdict passed_fairness=false): it is registered with verdict "hold" and a model card that shows
    the breach, and neither approval nor promotion runs. A fairness group column absent from the
    held-out rows raises FairnessGroupMissing (no retry) before any model is scored.

    :param model_name: registered model name. (templated)
    :param training_set: lineage dict of the training-set task (or its XComArg). (templated)
    :param challenger: the training task's result {run_id, model_uri, ...}. (templated)
    :param evaluation: the spec's `evaluation` block as a dict. (templated)
    :param label: label column; kept as `label_column`. (templated)
    :param split: the spec's `training.split` (the held-out rows are the same ones train used). (templated)
    :param seed: bootstrap and random-split seed.
    :param timestamp_column: event-time column of the training set.
    :param task: binary | multiclass | regression (the spec's `task`): the metrics and the report's charts. A
        multiclass champion is scored on the challenger's classes (a class it never saw: probability 0).
    :param champion_alias: alias of the model to beat.
    :param mlflow_conn_id: Airflow connection of type "mlflow".
    :param spec_file: the model spec's file, named by configuration errors (a missing fairness group column).
    :return: {promote, passed_thresholds, beats_champion, passed_fairness, champion_version, run_id, model_uri,
        primary_metric, challenger_value, champion_value, gain, ci, reasons, summary, report_uri}

    Extra link "Evaluation report": the HTML report, served by the mlops UI plugin (also after a failure).
    """

    template_fields: Sequence[str] = ("model_name", "training_set", "challenger", "evaluation", "label_column",
                                      "split")
    template_fields_renderers = {"training_set": "json", "challenger": "json", "evaluation": "json"}
    ui_color = "#fff2cc"
    operator_extra_links = (EvaluationReportLink(),)

    def __init__(self, *, model_name: str, training_set: Any, challenger: Any, evaluation: Mapping[str, Any],
                 label: str, split: Mapping[str, Any] | None = None, seed: int = 7,
                 timestamp_column: str = "event_timestamp", task: str = "binary", champion_alias: str = "champion",
                 mlflow_conn_id: str = "mlflow_default", spec_file: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.model_name = model_name
        self.training_set = training_set
        self.challenger = challenger
        self.evaluation = dict(evaluation)
        self.label_column = label
        self.split = dict(split or {"method": "time", "test_size": 0.2})
        self.seed = seed
        self.timestamp_column = timestamp_column
        self.task = task
        self.champion_alias = champion_alias
        self.mlflow_conn_id = mlflow_conn_id
        self.spec_file = spec_file

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.hooks.mlflow import MLflowHook

        challenger = _as_mapping(self.challenger, "challenger")
        rows = self._holdout_rows()
        self._check_fairness_groups(rows)
        hook = MLflowHook(self.mlflow_conn_id)
        hook.check_backend()
        with hook.activated() as client:
            champion_version = self._champion_version(client)
            result = self._evaluate(rows, challenger["model_uri"], champion_version)
            report_uri = self._log(client, challenger["run_id"], result)
        verdict = result["verdict"]
        self.log.info("Evaluation of %s run %s: %s", self.model_name, challenger["run_id"], result["summary"])
        if not verdict["passed_thresholds"]:
            from airflow_mlops.exceptions import ModelBelowThreshold

            raise ModelBelowThreshold(
                f"{self.model_name} run {challenger['run_id']} refused: " + "; ".join(verdict["reasons"])
                + f". Full report: {report_uri}"
            )
        from airflow_mlops.core.lineage import normalize_lineage
        from airflow_mlops.core.xcom import json_safe

        # NaN metrics: strict JSON
        summary: dict[str, Any] = json_safe(_xcom_result(result, challenger, champion_version, report_uri))
        remember(self, context, {"result": summary, "training_set": normalize_lineage(self.training_set),
                                 "registry_uri": hook.settings.registry_uri})
        return summary

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """Reads the snapshot, the challenger's logged model and the champion version it was compared with;
        writes no dataset (the verdict is a run facet, the report an artifact of the challenger's run)."""
        from airflow_mlops.core.lineage_names import logged_model_name
        from airflow_mlops.openlineage.datasets import (
            dataset,
            lineage,
            model_version_dataset,
            training_set_dataset,
        )

        recorded = recall(self, task_instance)
        if not recorded:
            return None
        result, registry = recorded["result"], recorded["registry_uri"]
        inputs = [training_set_dataset(recorded["training_set"]),
                  dataset(logged_model_name(registry, result["model_uri"]))]
        if result.get("champion_version"):
            inputs.append(model_version_dataset(registry, self.model_name, result["champion_version"],
                                                aliases=[self.champion_alias]))
        keep = ("promote", "primary_metric", "challenger_value", "champion_value", "gain", "report_uri")
        return lineage(inputs, [], {k: result.get(k) for k in keep})

    def _holdout_rows(self) -> pd.DataFrame:
        import pandas as pd

        from airflow_mlops.core import lineage, training

        record = lineage.normalize_lineage(self.training_set)
        frame = pd.read_parquet(lineage.verify_snapshot(record))
        rows = training.holdout(frame, label=self.label_column, split_config=self.split, seed=self.seed,
                                timestamp_column=self.timestamp_column, task=self.task)
        self.log.info("Held-out rows: %s of %s (split %s)", len(rows), len(frame), self.split)
        return rows

    def _check_fairness_groups(self, rows: pd.DataFrame) -> None:
        from airflow_mlops.core.fairness import missing_group_columns

        fairness = self.evaluation.get("fairness")
        source = self.spec_file or f"the spec of {self.model_name}"
        problem = fairness and missing_group_columns(fairness, rows, source=source)
        if problem:
            from airflow_mlops.exceptions import FairnessGroupMissing

            raise FairnessGroupMissing(problem)

    def _champion_version(self, client: MlflowClient) -> str | None:
        from mlflow.exceptions import MlflowException

        from airflow_mlops.hooks.mlflow_registry import ModelRegistry

        try:
            return ModelRegistry(client, self.model_name).alias_version(self.champion_alias)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None  # no registered model yet: the first model is judged on thresholds alone
            raise

    def _evaluate(self, rows: pd.DataFrame, challenger_uri: str, champion_version: str | None) -> dict[str, Any]:
        from airflow_mlops.core.evaluation import evaluate

        y_true = labels(rows[self.label_column], self.task)
        challenger_proba, note, classes = score(challenger_uri, rows, self.task)
        if challenger_proba is None:
            from airflow_mlops.exceptions import ModelBelowThreshold

            raise ModelBelowThreshold(f"challenger {challenger_uri} cannot score its own held-out rows: {note}")
        champion_proba = None
        if champion_version is not None:
            champion_proba, note, _ = score(f"models:/{self.model_name}/{champion_version}", rows, self.task, classes)
            if champion_proba is None:
                self.log.warning("Champion v%s not scored: %s", champion_version, note)
        cfg = self.evaluation
        result = evaluate(
            y_true, challenger_proba, champion_proba,
            metrics=list(cfg.get("metrics") or []), primary_metric=cfg.get("primary_metric", "roc_auc"),
            thresholds=cfg.get("thresholds") or {}, rule=cfg.get("rule", "improvement"),
            min_improvement=float(cfg.get("min_improvement", 0.0)),
            max_regression=float(cfg.get("max_regression", 0.0)),
            confidence=float(cfg.get("confidence", 0.95)), bootstrap_samples=int(cfg.get("bootstrap_samples", 500)),
            seed=self.seed, slices=list(cfg.get("slices") or []), slice_frame=rows.reset_index(drop=True),
            min_slice_rows=int(cfg.get("min_slice_rows", 50)),
            champion_version=champion_version if champion_proba is not None else None,
            task=self.task, classes=classes, fairness=cfg.get("fairness"),
        )
        data = result.to_dict()
        if champion_version is not None and champion_proba is None:
            data["verdict"]["reasons"].append(f"champion v{champion_version} could not be scored: {note}")
        data["summary"] = result.summary()
        return data

    def _log(self, client: MlflowClient, run_id: str, result: dict[str, Any]) -> str:
        from airflow_mlops.core.evaluation_report import render_html

        verdict = result["verdict"]
        client.log_dict(run_id, result, f"{REPORT_DIR}/report.json")
        client.log_text(run_id, render_html(result, title=f"{self.model_name}: challenger evaluation"),
                        f"{REPORT_DIR}/report.html")
        label = "promote" if verdict["promote"] else ("below_threshold" if not verdict["passed_thresholds"] else "hold")
        client.set_tag(run_id, TAG_VERDICT, label)
        client.set_tag(run_id, TAG_CHAMPION_COMPARED, (result.get("champion") or {}).get("version") or "none")
        metrics = {f"eval.{k}": v for k, v in result["challenger"]["metrics"].items() if v is not None}
        comparison = result.get("comparison") or {}
        for key in ("gain", "ci_low", "ci_high"):
            if comparison.get(key) is not None:
                metrics[f"eval.{key}"] = comparison[key]
        if metrics:
            client.log_batch(run_id, metrics=_metric_entities(metrics))
        return f"{client.get_run(run_id).info.artifact_uri}/{REPORT_DIR}/report.html"


def labels(values: pd.Series, task: str) -> np.ndarray:
    """The held-out labels as the task's metrics take them: int 0/1, the class labels as they are, float values."""
    import numpy as np

    dtype = {"binary": "int64", "regression": "float64"}.get(task, object)
    return np.asarray(values.to_numpy(dtype=dtype))


def score(model_uri: str, rows: pd.DataFrame, task: str = "binary", classes: list[Any] | None = None
          ) -> tuple[np.ndarray | None, str, list[Any] | None]:
    """(predictions, "", classes) of a logged sklearn model on `rows`, or (None, why not, None).

    Predictions as `core.training.predict` gives them for the task; multiclass probabilities in the order of
    `classes` when given (the challenger's; a champion's columns are re-ordered to them), else the model's own
    `classes_`, which are returned."""
    import mlflow.sklearn

    from airflow_mlops.core.metrics import align_proba, plain_labels
    from airflow_mlops.core.training import predict

    model = mlflow.sklearn.load_model(model_uri)
    columns = list(getattr(model, "feature_names_in_", []))
    missing = [c for c in columns if c not in rows.columns]
    if not columns or missing:
        return None, f"needs columns {missing or '(unknown: no feature_names_in_)'} absent from the rows", None
    if task == "regression" and hasattr(model, "predict_proba"):
        return None, "it is a classifier (predict_proba), but the spec's task is regression", None
    if task != "regression" and not hasattr(model, "predict_proba"):
        return None, f"it has no predict_proba (a regressor?), but the spec's task is {task}", None
    predictions = predict(model, rows[columns].astype("float64"), task)
    own = plain_labels(model.classes_) if task != "regression" else None
    if task == "multiclass" and own is not None and classes is not None and own != list(classes):
        predictions = align_proba(predictions, own, classes)
        own = list(classes)
    return predictions, "", own


def _metric_entities(metrics: Mapping[str, float]) -> list[Any]:
    import time

    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    return [Metric(key, float(value), stamp, 0) for key, value in metrics.items()]


def _as_mapping(value: Any, name: str) -> Mapping[str, Any]:
    import json

    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping) or not value.get("run_id") or not value.get("model_uri"):
        raise ValueError(f"{name}: expected the training task's result with run_id and model_uri, got {value!r}")
    return value


def _xcom_result(result: Mapping[str, Any], challenger: Mapping[str, Any], champion_version: str | None,
                 report_uri: str) -> dict[str, Any]:
    comparison = result.get("comparison") or {}
    primary = result["primary_metric"]
    verdict = result["verdict"]
    return {
        "promote": bool(verdict["promote"]),
        "passed_thresholds": bool(verdict["passed_thresholds"]),
        "beats_champion": verdict.get("beats_champion"),
        "passed_fairness": verdict.get("passed_fairness"),
        "champion_version": champion_version,
        "run_id": challenger["run_id"],
        "model_uri": challenger["model_uri"],
        "primary_metric": primary,
        "challenger_value": result["challenger"]["metrics"].get(primary),
        "champion_value": ((result.get("champion") or {}).get("metrics") or {}).get(primary),
        "gain": comparison.get("gain"),
        "ci": [comparison.get("ci_low"), comparison.get("ci_high")] if comparison else None,
        "reasons": list(verdict["reasons"]),
        "summary": result.get("summary", ""),
        "report_uri": report_uri,
    }
