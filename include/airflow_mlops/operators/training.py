"""SklearnTrainModelOperator: a recorded training set -> a fitted pipeline logged to MLflow.

Thin adapter: the work is `jobs.training.run_training_job` (the same code a Kubernetes pod runs via
`airflow-mlops train-job`, see operators/kubernetes.py); connections live in `hooks/mlflow.py`.
Heavy libraries (pandas, sklearn, mlflow) are imported inside functions only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops.boundary import TaskBoundary
from airflow_mlops.openlineage.record import recall, remember
from airflow_mlops.operators.links import ModelPageLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.jobs.training import TrainingRequest
    from airflow_mlops.openlineage.datasets import Lineage


class SklearnTrainModelOperator(TaskBoundary, BaseOperator):
    """Train a scikit-learn estimator for the spec's task on a point-in-time training set and log it to MLflow.

    The run lands in the MLflow experiment named `model_name`, with params, validation metrics,
    lineage tags (training-set sha256/path/rows/window, feature service/views, git commit, Airflow
    dag/run/try), the lineage JSON as an artifact and the model (signature, input example, pinned
    pip requirements). A failed try ends its run as FAILED; a retry also closes runs a killed
    earlier try left RUNNING.

    :param model_name: registered model and experiment name. (templated)
    :param training_set: lineage dict of the training-set task, or its XComArg / JSON text:
        {path, sha256, rows, start, end, feature_service, feature_views, columns, missing}. (templated)
    :param estimator: import path of an estimator with the scikit-learn API for `task`: a classifier (binary,
        multiclass) such as sklearn.ensemble.HistGradientBoostingClassifier, or a regressor. (templated)
    :param params: estimator constructor arguments; kept as `estimator_params` because
        BaseOperator.params holds the DAG's Airflow params. (templated)
    :param preprocessing: {"impute": median|mean|most_frequent|none, "scale": bool}. (templated)
    :param split: {"method": time|random, "test_size": 0.2}. (templated)
    :param seed: random_state for the estimator and the random split.
    :param label: the label column; kept as `label_column` (BaseOperator.label is the
        task's display label). (templated)
    :param task: binary | multiclass | regression (the spec's `task`): the label check, the metrics, the MLflow
        signature and the run/version tags `airflow_mlops.task` (and `airflow_mlops.classes` for classifiers).
    :param timestamp_column: event-time column, used by the time split and never as a feature. (templated)
    :param exclude_columns: columns never used as features (entity keys, ids). (templated)
    :param spec_sha256: content hash of the model spec this task was built from (`core.spec.spec_sha256`;
        the DAG factory passes it). Recorded as run tag `airflow_mlops.spec_sha256` and part of the run's
        training fingerprint `airflow_mlops.fingerprint`, by which `register` recognises a repeat.
    :param search: the resolved spec `training.search` (`ModelSpec.search_config()`): candidates cross-validated
        on the training part, each an MLflow child run; the best one's arguments are fitted. None = no search.
        (templated)
    :param primary_metric: the spec's `evaluation.primary_metric`: the scorer of the permutation importance the run
        logs (`explanations/global_importance.json`); None = the task's default primary metric.
    :param explanations: the spec's `evaluation.explanations` (method, max_rows, repeats); None = permutation
        importance on at most 2000 held-out rows, 3 repeats.
    :param mlflow_conn_id: Airflow connection of type "mlflow".
    :return: {"run_id", "model_uri", "metrics", "experiment_id"}

    Extra link "Model page": the model's page in the Models view, opened on this run's version.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "training_set",
        "estimator",
        "estimator_params",
        "preprocessing",
        "split",
        "label_column",
        "timestamp_column",
        "exclude_columns",
        "search",
    )
    template_fields_renderers = {
        "search": "json",
        "training_set": "json",
        "estimator_params": "json",
        "preprocessing": "json",
        "split": "json",
    }
    ui_color = "#d7ecff"
    operator_extra_links = (ModelPageLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        training_set: Any,
        estimator: str,
        params: Mapping[str, Any] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        split: Mapping[str, Any] | None = None,
        seed: int = 7,
        label: str,
        timestamp_column: str = "event_timestamp",
        exclude_columns: Sequence[str] = (),
        spec_sha256: str | None = None,
        search: Mapping[str, Any] | None = None,
        task: str = "binary",
        primary_metric: str | None = None,
        explanations: Mapping[str, Any] | None = None,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        # One XCom per key as well as the whole dict, so `task.output["run_id"]` resolves downstream.
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.model_name = model_name
        self.training_set = training_set
        self.estimator = estimator
        self.estimator_params = dict(params or {})
        self.preprocessing = dict(preprocessing or {"impute": "median", "scale": False})
        self.split = dict(split or {"method": "time", "test_size": 0.2})
        self.seed = seed
        self.label_column = label
        self.timestamp_column = timestamp_column
        self.exclude_columns = list(exclude_columns)
        self.spec_sha256 = spec_sha256
        self.search = dict(search) if search else None
        self.task = task
        self.primary_metric = primary_metric
        self.explanations = dict(explanations) if explanations else None
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.xcom import json_safe
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.jobs.training import run_training_job

        hook = MLflowHook(self.mlflow_conn_id)
        request = self.training_request(context)
        # metrics can be NaN (a metric undefined on the held-out rows): XCom stays strict JSON
        result: dict[str, Any] = json_safe(run_training_job(request, hook))
        remember(self, context, {"result": result, "training_set": request.training_set,
                                 "registry_uri": hook.settings.registry_uri})
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """The training-set snapshot (input) -> the model the run logged (output, `logged_models/<m-id>`)."""
        from airflow_mlops.openlineage.datasets import training_lineage

        recorded = recall(self, task_instance)
        return training_lineage(recorded) if recorded else None

    def training_request(self, context: Context) -> TrainingRequest:
        """The job request for this task instance: the rendered arguments plus its Airflow identity."""
        from airflow_mlops import config
        from airflow_mlops.core import lineage
        from airflow_mlops.jobs.training import TrainingRequest, airflow_identity

        return TrainingRequest(
            model_name=self.model_name,
            training_set=lineage.normalize_lineage(self.training_set),
            estimator=self.estimator,
            label=self.label_column,
            params=dict(self.estimator_params),
            preprocessing=dict(self.preprocessing),
            split=dict(self.split),
            seed=self.seed,
            timestamp_column=self.timestamp_column,
            exclude_columns=list(self.exclude_columns),
            airflow=airflow_identity(context),
            git_commit=lineage.git_commit(config.project_dir()),
            spec_sha256=self.spec_sha256,
            search=dict(self.search) if self.search else None,
            task=self.task,
            primary_metric=self.primary_metric,
            explanations=dict(self.explanations) if self.explanations else None,
        )
