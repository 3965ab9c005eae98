"""SklearnTrainModelOperator: a recorded training set -> a fitted pipeline logged to MLflow.

Thin adapter: lineage checks and training live in `core/`, connections in `hooks/mlflow.py`.
Heavy libraries (pandas, sklearn, mlflow) are imported inside `execute()` only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient

    from airflow_mlops.core.training import TrainResult

# Explicit choice: MLflow 3's default "skops" format refuses to save tree models such as
# HistGradientBoostingClassifier unless every internal type is listed in skops_trusted_types.
# cloudpickle loads any estimator, and MLflow (3.17) gates loading of every sklearn format,
# skops included, behind MLFLOW_ALLOW_PICKLE_DESERIALIZATION anyway.
SERIALIZATION_FORMAT = "cloudpickle"
MODEL_ARTIFACT = "model"


class SklearnTrainModelOperator(BaseOperator):
    """Train a scikit-learn classifier on a point-in-time training set and log it to MLflow.

    The run lands in the MLflow experiment named `model_name`, with params, validation metrics,
    lineage tags (training-set sha256/path/rows/window, feature service/views, git commit, Airflow
    dag/run/try), the lineage JSON as an artifact and the model (signature, input example, pinned
    pip requirements). A failed try ends its run as FAILED; a retry also closes runs a killed
    earlier try left RUNNING.

    :param model_name: registered model and experiment name. (templated)
    :param training_set: lineage dict of the training-set task, or its XComArg / JSON text:
        {path, sha256, rows, start, end, feature_service, feature_views, columns, missing}. (templated)
    :param estimator: import path of a classifier, e.g. sklearn.ensemble.HistGradientBoostingClassifier. (templated)
    :param params: estimator constructor arguments; kept as `estimator_params` because
        BaseOperator.params holds the DAG's Airflow params. (templated)
    :param preprocessing: {"impute": median|mean|most_frequent|none, "scale": bool}. (templated)
    :param split: {"method": time|random, "test_size": 0.2}. (templated)
    :param seed: random_state for the estimator and the random split.
    :param label: the binary label column; kept as `label_column` (BaseOperator.label is the
        task's display label). (templated)
    :param timestamp_column: event-time column, used by the time split and never as a feature. (templated)
    :param exclude_columns: columns never used as features (entity keys, ids). (templated)
    :param mlflow_conn_id: Airflow connection of type "mlflow".
    :return: {"run_id", "model_uri", "metrics", "experiment_id"}
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
    )
    template_fields_renderers = {
        "training_set": "json",
        "estimator_params": "json",
        "preprocessing": "json",
        "split": "json",
    }
    ui_color = "#d7ecff"

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
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        import pandas as pd

        from airflow_mlops.core import lineage, training
        from airflow_mlops.hooks.mlflow import MLflowHook

        record = lineage.normalize_lineage(self.training_set)
        hook = MLflowHook(self.mlflow_conn_id)
        hook.check_backend()  # fail in seconds, before spending minutes on training
        frame = pd.read_parquet(lineage.verify_snapshot(record))
        self.log.info(
            "Training %s on %s rows x %s columns from %s", self.estimator, len(frame), frame.shape[1], record["path"]
        )
        result = training.train(
            frame,
            label=self.label_column,
            estimator=self.estimator,
            params=self.estimator_params,
            preprocessing=self.preprocessing,
            split_config=self.split,
            seed=self.seed,
            timestamp_column=self.timestamp_column,
            exclude=self.exclude_columns,
        )
        self.log.info("Validation metrics (%s rows): %s", result.validation_rows, result.metrics)
        experiment_id = hook.experiment_id(self.model_name)
        tags = self._run_tags(context, record)
        with hook.activated() as client:
            self._end_orphaned_runs(client, experiment_id, tags)
            run_id, model_uri = self._log_run(experiment_id, tags, record, result, context)
        self.log.info("Logged run %s with model %s in experiment %s", run_id, model_uri, experiment_id)
        return {"run_id": run_id, "model_uri": model_uri, "metrics": result.metrics, "experiment_id": experiment_id}

    def _run_tags(self, context: Context, record: Mapping[str, Any]) -> dict[str, str]:
        from airflow_mlops import config
        from airflow_mlops.core import lineage

        tags = {lineage.TAG_MODEL_NAME: self.model_name, **lineage.training_set_tags(record)}
        tags.update(lineage.airflow_context_tags(context))
        commit = lineage.git_commit(config.project_dir())
        if commit:
            tags[lineage.TAG_GIT_COMMIT] = commit
        return tags

    def _end_orphaned_runs(self, client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> None:
        """A try killed without cleanup (OOM, SIGKILL) leaves its run RUNNING; mark it KILLED."""
        from airflow_mlops.core import lineage

        keys = (lineage.TAG_DAG_ID, lineage.TAG_RUN_ID, lineage.TAG_TASK_ID)
        if not all(tags.get(key) for key in keys) or any("'" in tags[key] for key in keys):
            return  # no Airflow identity to match on (ad-hoc execute) or unquotable value
        clauses = [f"tags.`{key}` = '{tags[key]}'" for key in keys]
        filter_string = " and ".join([*clauses, "attributes.status = 'RUNNING'"])
        for run in client.search_runs([experiment_id], filter_string=filter_string, max_results=50):
            self.log.warning("Ending run %s left RUNNING by an earlier try as KILLED", run.info.run_id)
            client.set_terminated(run.info.run_id, status="KILLED")

    def _run_name(self, context: Context) -> str:
        run_id = context.get("run_id")
        ti = context.get("ti")
        try_number = getattr(ti, "try_number", None)
        if not run_id:
            return f"{self.model_name}-adhoc"
        return f"{self.model_name}-{run_id}" + (f"-try{try_number}" if try_number else "")

    def _flat_params(self, result: TrainResult) -> dict[str, Any]:
        flat: dict[str, Any] = {
            "estimator": self.estimator,
            "seed": self.seed,
            "label": self.label_column,
            "n_features": len(result.feature_columns),
        }
        flat.update({f"params.{key}": value for key, value in self.estimator_params.items()})
        flat.update({f"preprocessing.{key}": value for key, value in self.preprocessing.items()})
        flat.update({f"split.{key}": value for key, value in result.split.items()})
        return flat

    def _log_run(
        self, experiment_id: str, tags: dict[str, str], record: Mapping[str, Any], result: TrainResult, context: Context
    ) -> tuple[str, str]:
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        from airflow_mlops.core.training import model_requirements

        sample = result.sample
        # The context manager ends the run FAILED on any exception (incl. Airflow timeouts).
        with mlflow.start_run(experiment_id=experiment_id, run_name=self._run_name(context), tags=tags) as run:
            mlflow.log_params(self._flat_params(result))
            info = mlflow.sklearn.log_model(
                result.pipeline,
                name=MODEL_ARTIFACT,
                serialization_format=SERIALIZATION_FORMAT,
                signature=infer_signature(sample, result.pipeline.predict(sample)),
                input_example=sample,
                pip_requirements=model_requirements(self.estimator),
                metadata={"feature_columns": result.feature_columns, "label": self.label_column},
            )
            timings = {
                "fit_seconds": result.fit_seconds,
                "train_rows": result.train_rows,
                "validation_rows": result.validation_rows,
            }
            mlflow.log_metrics({**result.metrics, **timings}, model_id=info.model_id)
            # default=str: start/end may arrive as datetimes when the lineage is passed in-process
            mlflow.log_dict(json.loads(json.dumps(dict(record), default=str)), "training_set/lineage.json")
            mlflow.log_dict(result.summary(), "training/summary.json")
        return run.info.run_id, info.model_uri
