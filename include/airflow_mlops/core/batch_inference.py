"""Batch inference: score entity rows with point-in-time features, one bounded chunk at a time.

`predict_batch` takes a ready `FeatureStore` (built by FeastHook) and an already loaded model, so
this module stays free of Airflow and MLflow. Per chunk of `chunk_rows` entity rows it joins the
feature service's features as of each row's time (`core.point_in_time`, the join training sets and
the skew check use), scores the rows with the model's task (`core.predictions.TaskOutput`) and writes one
parquet part.
Peak memory is set by the chunk, not by the number of rows (docs/benchmarks.md, "Batch inference").

Output, one folder per Airflow run::

    <MLOPS_HOME>/predictions_batch/<model>/run=<airflow run id>/part-00000.parquet ...
                                                               /_manifest.json

Each part holds the entity keys, the event timestamp, the request features, the task's output columns and
`model_version`, rows in entity order. Output columns: binary `prediction` (the positive-class
probability); multiclass `prediction` (the most probable class) and `proba_<class>` per class, in the
estimator's class order; regression `prediction` (the value). Parts are written into a
hidden temp folder (`.run=<id>.<random>.tmp`, skipped by parquet readers and globs) and the folder
is renamed into place at the end, replacing an earlier attempt of the same run whole: a retried or
cleared run never duplicates rows. `_manifest.json` lists every part with its rows and sha256; its
own sha256 goes into the lineage, so `sha256sum _manifest.json` verifies the whole output.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.offline import atomic_write_bytes, normalize_timestamps
from airflow_mlops.core.point_in_time import FEAST_TIMESTAMP, PointInTimeJoin, RowsLost
from airflow_mlops.core.predictions import TaskMismatch, TaskOutput
from airflow_mlops.core.training_set import _feature_service
from airflow_mlops.exceptions import BatchInferenceError

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions_batch"  # under MLOPS_HOME
PREDICTION_COLUMN = "prediction"
VERSION_COLUMN = "model_version"
MANIFEST_FILE = "_manifest.json"
DEFAULT_CHUNK_ROWS = 100_000
_ROW = "__mlops_row"  # carried through the join: every chunk's rows are checked to come back in order
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:+=-]")


@dataclass(frozen=True)
class ScoringModel:
    """A loaded model and what identifies it: registry version, MLflow run, input columns, task (`output`)."""

    estimator: Any  # a fitted estimator of the task, e.g. the sklearn Pipeline the training DAG logs
    version: str
    feature_columns: tuple[str, ...]
    run_id: str | None = None
    uri: str = ""
    output: TaskOutput = TaskOutput()

    @classmethod
    def from_estimator(cls, estimator: Any, version: str, run_id: str | None = None, uri: str = "",
                       tags: dict[str, str] | None = None) -> ScoringModel:
        """Input columns from sklearn's `feature_names_in_` (set when the model was fitted on a DataFrame); the
        task from the version's `tags` and the estimator (`TaskOutput.of`)."""
        columns = tuple(str(c) for c in getattr(estimator, "feature_names_in_", ()))
        where = f"model {uri or type(estimator).__name__} v{version} cannot be batch-scored"
        if not columns:
            raise BatchInferenceError(f"{where}: it has no feature_names_in_ (fit it on a pandas DataFrame, as the "
                                      "training DAG does)")
        try:
            output = TaskOutput.of(estimator, tags)
        except TaskMismatch as exc:
            raise BatchInferenceError(f"{where}: {exc}. Register a model of its task (the training DAG tags it)") \
                from None
        return cls(estimator=estimator, version=str(version), feature_columns=columns, run_id=run_id, uri=uri,
                   output=output)


def predictions_root(home: Path, model_name: str) -> Path:
    """`<MLOPS_HOME>/predictions_batch/<model>`: the parent of every run folder of one model."""
    return Path(home) / PREDICTIONS_DIR / model_name


def run_folder_name(run_id: str) -> str:
    """`run=<run id>` with anything but letters, digits and `_.:+=-` replaced by `_` (no `/` in a name)."""
    return f"run={_UNSAFE.sub('_', run_id)}"


def predict_batch(
    store: FeatureStore,
    *,
    model: ScoringModel,
    model_name: str,
    feature_service: str,
    entity_df: pd.DataFrame,
    entity_keys: list[str],
    timestamp_column: str,
    request_features: list[str],
    out_dir: Path,
    run_id: str,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict[str, Any]:
    """Score every entity row; write `out_dir/run=<run_id>/`; return its lineage.

    Lineage (strings and ints): {path, manifest, sha256 (of the manifest), rows, parts, model_name,
    model_version, run_id (MLflow run of the version), model_uri, airflow_run_id, feature_service,
    window {start, end} (event times of the entity rows scored), chunk_rows, columns}.
    """
    if int(chunk_rows) < 1:
        raise BatchInferenceError(f"chunk_rows must be >= 1, got {chunk_rows} (spec default {DEFAULT_CHUNK_ROWS})")
    keep = list(dict.fromkeys([*entity_keys, timestamp_column, *request_features]))
    absent = sorted(set(keep) - set(entity_df.columns))
    if absent:
        raise BatchInferenceError.missing_entity_columns(absent, sorted(entity_df.columns))
    service = _feature_service(store, feature_service)
    _check_inputs(model, service, feature_service, request_features)
    entity = normalize_timestamps(entity_df[keep]).rename(columns={timestamp_column: FEAST_TIMESTAMP})
    entity[_ROW] = range(len(entity))
    target = Path(out_dir) / run_folder_name(run_id)
    tmp = _fresh_temp_dir(target)
    try:
        chunks = _scored_chunks(store, service, entity, model, keep, timestamp_column, int(chunk_rows))
        dictionary = (*entity_keys, VERSION_COLUMN, *([PREDICTION_COLUMN] if model.output.multiclass else []))
        parts = [_write_part(part, tmp, i, dictionary) for i, part in enumerate(chunks)]
        manifest = _manifest(model, model_name, feature_service, run_id, entity, parts, int(chunk_rows), keep)
        sha = _write_manifest(manifest, tmp)
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful publish
    if not len(entity):
        log.info("no entity rows to score for %s: wrote 0 predictions (empty run folder %s)", model_name, target)
    else:
        log.info("scored %s rows with %s v%s in %s part(s) -> %s", manifest["rows"], model_name, model.version,
                 len(parts), target)
    return _lineage(manifest, target, sha)


def _check_inputs(model: ScoringModel, service: Any, feature_service: str, request_features: list[str]) -> None:
    """Fail before any join when the model needs a column neither the service nor the request carries."""
    served = [f.name for projection in service.feature_view_projections for f in projection.features]
    missing = [c for c in model.feature_columns if c not in {*served, *request_features}]
    if missing:
        raise BatchInferenceError.model_inputs(model.uri or "", model.version, missing, feature_service, served,
                                               list(request_features))


def _scored_chunks(store: Any, service: Any, entity: pd.DataFrame, model: ScoringModel, keep: list[str],
                   timestamp_column: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """One frame of predictions per `chunk_rows` entity rows; only one chunk is in memory at a time."""
    join = PointInTimeJoin(store, service, entity, purpose=f"batch inference of {service.name}")
    chunks = join.chunks(chunk_rows)
    for start in range(0, len(entity), chunk_rows):
        chunk = entity.iloc[start: start + chunk_rows]
        try:
            features = next(chunks)
        except RowsLost as lost:
            raise BatchInferenceError.rows_lost(lost.got, lost.given) from None
        if _ROW not in features.columns or not (features[_ROW].to_numpy() == chunk[_ROW].to_numpy()).all():
            raise BatchInferenceError("the feature store returned other entity rows than it was given (row ids differ)")
        yield _score_chunk(chunk, features, model, keep, timestamp_column)


def _score_chunk(chunk: pd.DataFrame, features: pd.DataFrame, model: ScoringModel, keep: list[str],
                 timestamp_column: str) -> pd.DataFrame:
    """Identity columns from the entity rows as given, the task's output columns from the model's columns."""
    columns = list(model.feature_columns)
    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise BatchInferenceError(
            f"joined features lack column(s) {missing} the model v{model.version} needs (got "
            f"{sorted(c for c in features.columns if c != _ROW)}); check the feature service's views"
        )
    import pandas as pd

    scores = model.output.score(model.estimator, _model_input(features, columns))
    source = {timestamp_column: FEAST_TIMESTAMP}
    out = {name: chunk[source.get(name, name)].array for name in keep}  # .array: tz-aware times stay times
    return pd.DataFrame({**out, **model.output.batch_columns(scores), VERSION_COLUMN: model.version})


def _model_input(features: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The model's columns as one float64 block: sklearn takes it as an array without re-interleaving columns."""
    import numpy as np
    import pandas as pd

    matrix = np.column_stack([features[c].to_numpy(dtype="float64", na_value=np.nan) for c in columns])
    return pd.DataFrame(matrix, columns=columns, copy=False)


def _write_part(frame: pd.DataFrame, folder: Path, index: int, dictionary: tuple[str, ...] = ()) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = folder / f"part-{index:05d}.parquet"
    digest: dict[str, str] = {}

    def write(tmp: Path) -> None:
        # Dictionary pages only where values repeat (keys, version): trying them on unique floats and
        # falling back cost half of the write (docs/benchmarks.md).
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, use_dictionary=list(dictionary))
        digest["sha256"] = _sha256(tmp)

    atomic_write_bytes(target, write)
    log.info("part %s: %s rows", target.name, len(frame))
    return {"file": target.name, "rows": len(frame), "sha256": digest["sha256"]}


def _manifest(model: ScoringModel, model_name: str, feature_service: str, run_id: str, entity: pd.DataFrame,
              parts: list[dict[str, Any]], chunk_rows: int, keep: list[str]) -> dict[str, Any]:
    """Deterministic (no wall-clock time): the same inputs give a byte-equal manifest and sha256."""
    stamps = entity[FEAST_TIMESTAMP]
    return {
        "model_name": model_name,
        "model_version": model.version,
        "run_id": model.run_id or "",
        "model_uri": model.uri,
        "airflow_run_id": run_id,
        "feature_service": feature_service,
        "window": {"start": stamps.min().isoformat() if len(entity) else "",
                   "end": stamps.max().isoformat() if len(entity) else ""},
        "rows": sum(p["rows"] for p in parts),
        "chunk_rows": chunk_rows,
        "columns": [*keep, *model.output.output_columns(), VERSION_COLUMN],
        "feature_columns": list(model.feature_columns),
        "parts": parts,
    }


def _write_manifest(manifest: dict[str, Any], folder: Path) -> str:
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    atomic_write_bytes(folder / MANIFEST_FILE, lambda tmp: tmp.write_bytes(data))
    return hashlib.sha256(data).hexdigest()


def _lineage(manifest: dict[str, Any], target: Path, sha: str) -> dict[str, Any]:
    keys = ("rows", "model_name", "model_version", "run_id", "model_uri", "airflow_run_id", "feature_service",
            "window", "chunk_rows", "columns")
    return {"path": str(target), "manifest": str(target / MANIFEST_FILE), "sha256": sha,
            "parts": len(manifest["parts"]), **{k: manifest[k] for k in keys}}


def _fresh_temp_dir(target: Path) -> Path:
    """A hidden temp folder next to `target`; leftovers of this run's crashed attempts are removed first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished folder into place; an earlier attempt's folder of the same run is replaced whole.

    A directory cannot be renamed over a non-empty one, so the old folder is first renamed aside
    (hidden) and deleted after: readers see the old parts or the new ones, never a mix (for a moment
    between the two renames, no folder).
    """
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old") if target.exists() else None
    if old is not None:
        os.replace(target, old)
        log.info("replacing the earlier output of this run: %s", target)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
