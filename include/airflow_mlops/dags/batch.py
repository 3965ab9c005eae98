"""`<model>__batch_predict`: score the newest entity rows with the champion, on a schedule or a new champion.

Built from the spec's `batch` block (`schedule`, `entity_dataset`, `lookback_days`, `chunk_rows`).
Imports only airflow.sdk, core.spec and the thin operator, like the rest of the factory.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param

from airflow_mlops.core.spec import ModelSpec
from airflow_mlops.dags.assets import champion_asset, predictions_asset
from airflow_mlops.operators.batch import BatchPredictOperator


def batch_dag_id(model: str) -> str:
    return f"{model}__batch_predict"


def _batch_schedule(spec: ModelSpec) -> Any:
    """A new champion re-scores at once; the spec's cron (if any) scores fresh entity rows."""
    champion = champion_asset(spec.name)
    cron = spec.batch.schedule
    if cron:
        return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=champion)
    return champion


def batch_inference_dag(spec: ModelSpec) -> DAG:
    # Imported here, not at module top: factory.build_dags imports this module, so a top-level
    # import of factory would be circular (factory half-initialised when this module loads).
    from airflow_mlops.dags.factory import START_DATE, _default_args

    feats, batch = spec.features, spec.batch
    dataset = batch.entity_dataset or feats.entity_df.dataset
    with DAG(
        dag_id=batch_dag_id(spec.name),
        schedule=_batch_schedule(spec),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # one scoring pass at a time per model: each holds a chunk of features in memory
        default_args=_default_args(spec.owner),
        tags=["mlops", "batch", spec.name, *spec.tags],
        doc_md=batch_dag_doc(spec),
        params={"version": Param("champion", type="string", title="Model version",
                                 description="an alias (champion, challenger) or a version number")},
    ) as dag:
        BatchPredictOperator(
            task_id="batch_predict",
            model_name=spec.name,
            feature_service=feats.feature_service,
            entity_dataset=dataset,
            entity_keys=list(feats.entity_keys),
            timestamp_column=feats.entity_df.timestamp_column,
            request_features=list(feats.entity_df.request_features),
            lookback_days=batch.lookback_days,
            chunk_rows=batch.chunk_rows,
            version="{{ params.version }}",
            outlets=[predictions_asset(spec.name)],
        )
    return dag


# What the batch output holds per task (core/predictions.py): (in words, its columns)
_OUTPUTS = {"binary": ("the positive-class probability", "`prediction`"),
            "multiclass": ("the predicted class and each class' probability", "`prediction`, `proba_<class>`"),
            "regression": ("the predicted value", "`prediction`")}


def batch_dag_doc(spec: ModelSpec) -> str:
    feats, batch = spec.features, spec.batch
    dataset = batch.entity_dataset or feats.entity_df.dataset
    return f"""### Batch inference: `{spec.name}`
Generated from `{spec.source_file}` (block `batch`) — edit the spec, not this DAG.

**batch_predict** — loads the `champion` version of `{spec.name}` from the MLflow registry once (or
the version / alias given as param `version`), reads the newest {batch.lookback_days} day(s) of
`{dataset}` from the offline store, joins feature service `{feats.feature_service}` as of each row's
time (Feast, duckdb) in chunks of {batch.chunk_rows:,} rows, and writes {_OUTPUTS[spec.task][0]} per row
to `$MLOPS_HOME/predictions_batch/{spec.name}/run=<run id>/` (parquet parts with the entity keys, event
time, request features, {_OUTPUTS[spec.task][1]}, `model_version`, plus `_manifest.json` with every
part's sha256). Clearing or retrying a run replaces its own folder: rows are never
duplicated. Skipped, not failed, while the model has no champion yet.

**Runs on**: a new champion (`mlops.model.{spec.name}.champion`); schedule `{batch.schedule or "none"}`;
or by hand. **Emits** `mlops.predictions.{spec.name}` with {{version, rows, path, window, sha256}}.
"""
