"""BatchPredictOperator: score the newest entity rows with the champion, point-in-time features, in chunks.

Thin adapter: the chunked join, scoring and writing live in `core/batch_inference.py`. mlflow,
feast and pandas are imported inside `execute()` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops.boundary import TaskBoundary
from airflow_mlops.openlineage.record import recall, remember

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.core.batch_inference import ScoringModel
    from airflow_mlops.openlineage.datasets import Lineage

PREDICTIONS_ASSET_PREFIX = "mlops.predictions."


class BatchPredictOperator(TaskBoundary, BaseOperator):
    """Score the last `lookback_days` of an entity dataset with a registered model version.

    Resolves `version` (an alias such as `champion`, or a version number) in the MLflow registry,
    loads that model once, reads the newest `lookback_days` of `entity_dataset` from the offline store
    (the window ends at the newest event time in the data), joins the feature service's features as
    of each row's time in chunks of `chunk_rows` rows and writes the predictions under
    `MLOPS_HOME/predictions_batch/<model_name>/run=<Airflow run id>/` (parquet parts + `_manifest.json`).
    A retried or cleared run replaces its own folder whole; it never duplicates rows.

    Skips (AirflowSkipException) when the alias is not set yet: there is no model to score with
    until the training DAG promotes one. Outlet `mlops.predictions.<model_name>` (see
    `operators.assets.predictions_asset`) gets the extra {version, rows, path, window, sha256}.

    :param model_name: registered model name. (templated)
    :param feature_service: Feast feature service the model was trained on. (templated)
    :param entity_dataset: offline-store dataset with the entity keys and event time. (templated)
    :param entity_keys: join keys, e.g. ["driver_id"].
    :param timestamp_column: event-time column of the entity dataset.
    :param request_features: request-time columns used as-is from the entity dataset.
    :param lookback_days: days of entity rows, counted back from the newest. (templated)
    :param chunk_rows: entity rows per chunk; bounds memory. (templated)
    :param version: alias (default `champion`) or version number to score with. (templated)
    :param mlflow_conn_id: Airflow connection of type "mlflow". (templated)
    :param feast_conn_id: Airflow connection of type "feast". (templated)
    :return: lineage {path, manifest, sha256, rows, parts, model_name, model_version, run_id (MLflow),
        model_uri, airflow_run_id, feature_service, window {start, end, dataset, lookback_days},
        chunk_rows, columns}
    """

    template_fields: Sequence[str] = ("model_name", "feature_service", "entity_dataset", "lookback_days",
                                      "chunk_rows", "version", "mlflow_conn_id", "feast_conn_id")
    ui_color = "#e0ecf8"

    def __init__(self, *, model_name: str, feature_service: str, entity_dataset: str, entity_keys: Sequence[str],
                 timestamp_column: str = "event_timestamp", request_features: Sequence[str] | None = None,
                 lookback_days: int | str = 1, chunk_rows: int | str = 100_000, version: str | int = "champion",
                 mlflow_conn_id: str = "mlflow_default", feast_conn_id: str = "feast_default",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.feature_service = feature_service
        self.entity_dataset = entity_dataset
        self.entity_keys = list(entity_keys)
        self.timestamp_column = timestamp_column
        self.request_features = list(request_features or [])
        self.lookback_days = lookback_days
        self.chunk_rows = chunk_rows
        self.version = version
        self.mlflow_conn_id = mlflow_conn_id
        self.feast_conn_id = feast_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.config import paths
        from airflow_mlops.core.batch_inference import predict_batch, predictions_root
        from airflow_mlops.core.feature_repo import feast_output_to_log
        from airflow_mlops.core.training_set import load_entity_df
        from airflow_mlops.hooks.feast import FeastHook

        model = self.load_model()
        home = paths()
        columns = [*self.entity_keys, self.timestamp_column, *self.request_features]
        entity_df = load_entity_df(home.dataset_dir(self.entity_dataset), self.timestamp_column,
                                   int(self.lookback_days), columns)
        hook = FeastHook(feast_conn_id=self.feast_conn_id)
        store = hook.get_store()
        with feast_output_to_log(self.log):
            lineage = predict_batch(
                store, model=model, model_name=self.model_name, feature_service=self.feature_service,
                entity_df=entity_df, entity_keys=self.entity_keys, timestamp_column=self.timestamp_column,
                request_features=self.request_features, out_dir=predictions_root(home.home, self.model_name),
                run_id=str(context["run_id"]), chunk_rows=int(self.chunk_rows),
            )
        lineage["window"] = {**lineage["window"], "dataset": self.entity_dataset,
                             "lookback_days": int(self.lookback_days)}
        self.log.info("%s v%s scored %s rows of %s (%s → %s) in %s part(s): %s (manifest sha256 %s)",
                      self.model_name, lineage["model_version"], lineage["rows"], self.entity_dataset,
                      lineage["window"]["start"] or "-", lineage["window"]["end"] or "-", lineage["parts"],
                      lineage["path"], lineage["sha256"][:12])
        self._annotate_outlets(context, lineage)
        self._remember(context, lineage, store, hook.settings.project)
        return lineage

    def _remember(self, context: Context, lineage: Mapping[str, Any], store: Any, project: str) -> None:
        """What the scoring read and wrote, for `get_openlineage_facets_on_complete`."""
        from airflow_mlops.config import paths
        from airflow_mlops.core.offline import partitions_between
        from airflow_mlops.hooks.mlflow import MLflowHook

        views = [p.name for p in store.get_feature_service(self.feature_service).feature_view_projections]
        window = lineage["window"]
        read = partitions_between(paths().dataset_dir(self.entity_dataset), window["start"], window["end"])
        remember(self, context, {"lineage": dict(lineage), "project": project, "feature_views": views,
                                 "registry_uri": MLflowHook(self.mlflow_conn_id).settings.registry_uri,
                                 "entity_partitions": read})

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """The scoring version, the feature views and the entity partitions (inputs) -> the predictions
        folder (output, versioned by its manifest's sha256)."""
        from openlineage.client.facet_v2 import dataset_version_dataset

        from airflow_mlops.core.lineage_names import feature_view_name, file_name
        from airflow_mlops.openlineage.datasets import (
            dataset,
            datasets,
            lineage,
            model_version_dataset,
        )

        recorded = recall(self, task_instance)
        if not recorded:  # skipped (no champion yet) or failed
            return None
        scored = recorded["lineage"]
        inputs = [model_version_dataset(recorded["registry_uri"], self.model_name, scored["model_version"])]
        inputs += datasets([feature_view_name(recorded["project"], v) for v in recorded["feature_views"]])
        inputs += datasets([file_name(p) for p in recorded["entity_partitions"]])
        version = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=scored["sha256"])
        output = dataset(file_name(scored["path"]), {"version": version})
        return lineage(inputs, [output], {"rows": scored["rows"], "model_version": scored["model_version"]})

    def load_model(self) -> ScoringModel:
        """The model behind `version` (alias or number), loaded once from the registry."""
        import mlflow.sklearn

        from airflow_mlops.core.batch_inference import ScoringModel
        from airflow_mlops.hooks.mlflow import MLflowHook

        hook = MLflowHook(self.mlflow_conn_id)
        hook.check_backend()
        with hook.activated() as client:
            version, run_id, tags = self._resolve(client)
            uri = f"models:/{self.model_name}/{version}"
            estimator = mlflow.sklearn.load_model(uri)
        model = ScoringModel.from_estimator(estimator, version=version, run_id=run_id, uri=uri, tags=tags)
        self.log.info("scoring with %s (MLflow run %s, %s)", uri, run_id, model.output.task)
        return model

    def _resolve(self, client: Any) -> tuple[str, str | None, dict[str, str]]:
        """(version, its MLflow run id, its tags) of `self.version`."""
        from airflow.sdk.exceptions import AirflowSkipException

        from airflow_mlops.exceptions import BatchInferenceError, RegistryError
        from airflow_mlops.hooks.mlflow_registry import ModelRegistry

        registry = ModelRegistry(client, self.model_name)
        wanted = str(self.version).strip() or "champion"
        version = wanted if wanted.isdigit() else registry.alias_version(wanted)
        if version is None:
            raise AirflowSkipException(
                f"{self.model_name} has no version with alias '{wanted}' yet, so there is nothing to score with; "
                f"run the {self.model_name}__train DAG (it promotes a champion), or pass a version number"
            )
        try:
            found = registry.version(version)
        except RegistryError as exc:  # the registry names the versions that do exist
            raise BatchInferenceError(f"cannot batch-score: {exc}; pass an existing version or an alias") from None
        return version, found.run_id, dict(found.tags or {})

    def _annotate_outlets(self, context: Context, lineage: Mapping[str, Any]) -> None:
        from airflow.sdk import Asset

        for outlet in self.outlets or []:
            if isinstance(outlet, Asset) and outlet.name == f"{PREDICTIONS_ASSET_PREFIX}{self.model_name}":
                context["outlet_events"][outlet].extra = {
                    "version": lineage["model_version"], "rows": lineage["rows"], "path": lineage["path"],
                    "window": dict(lineage["window"]), "sha256": lineage["sha256"],
                }
