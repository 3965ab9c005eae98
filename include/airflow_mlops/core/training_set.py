"""Point-in-time training sets: label rows from the offline store joined with Feast features.

`build_training_set` takes a ready `FeatureStore` (built by FeastHook) so this module stays free of
Airflow; the snapshot it writes is named by its sha256, so the same inputs give the same file and
the lineage record can be verified with `sha256sum`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from datetime import UTC, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.offline import atomic_write_bytes, normalize_timestamps
from airflow_mlops.exceptions import TrainingSetError

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)

FEAST_TIMESTAMP = "event_timestamp"  # the entity-df column Feast looks for first
SNAPSHOT_ID_LENGTH = 16


def load_entity_df(
    dataset_dir: Path, timestamp_column: str, lookback_days: int, columns: list[str] | None = None,
    window: tuple[str, str] | None = None,
) -> pd.DataFrame:
    """The newest `lookback_days` of a label dataset in the offline store, oldest row first.

    The window ends at the newest event time in the data (not at wall-clock now), so replaying or
    back-filling old data trains on the same rows. `window` = (start, end), ISO times, both included: the
    rows of a recorded training set (its lineage's start and end) instead, for `airflow-mlops reproduce`.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    dataset_dir = Path(dataset_dir)
    if not any(dataset_dir.glob("**/*.parquet")):
        raise TrainingSetError(
            f"no landed data in {dataset_dir}; land raw batches first (LandRawBatchesOperator / "
            f"`airflow_mlops.core.offline.land_landing_dir`)"
        )
    # hive partitioning turns date=YYYY-MM-DD into a column; `_batches`/`.tmp` files are skipped by prefix
    dataset = ds.dataset(str(dataset_dir), format="parquet", partitioning="hive")
    wanted = columns or [c for c in dataset.schema.names if c != "date"]
    missing = sorted((set(wanted) | {timestamp_column}) - set(dataset.schema.names))
    if missing:
        raise TrainingSetError(
            f"dataset {dataset_dir.name} has no column(s) {missing}; it has {sorted(dataset.schema.names)}"
        )
    if window is not None:
        field_type = dataset.schema.field(timestamp_column).type
        cutoff, newest = (_bound(value, field_type) for value in window)
        rows = (ds.field(timestamp_column) >= cutoff) & (ds.field(timestamp_column) <= newest)
    else:
        newest = pc.max(dataset.to_table(columns=[timestamp_column])[timestamp_column]).as_py()
        cutoff = newest - timedelta(days=int(lookback_days))
        rows = ds.field(timestamp_column) > cutoff
    table = dataset.to_table(columns=list(dict.fromkeys(wanted)), filter=rows)
    frame = normalize_timestamps(table.to_pandas())
    frame = frame.sort_values(timestamp_column, kind="mergesort").reset_index(drop=True)
    log.info("entity rows from %s: %s rows in (%s, %s]", dataset_dir.name, len(frame), cutoff, newest)
    return frame


def _bound(value: str, field_type: Any) -> Any:
    """An ISO time as a pyarrow scalar of the dataset's own timestamp type (tz-aware or naive UTC)."""
    import pandas as pd
    import pyarrow as pa

    stamp = pd.Timestamp(value)
    if getattr(field_type, "tz", None) is None:
        stamp = stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp
    elif stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return pa.scalar(stamp, type=field_type)


# Feast's duckdb join keeps every in-TTL feature row per entity row before picking the newest:
# ~8 GB peak for 1M entity rows in one call, ~2 GB in 200k chunks, identical output and CPU
# (benchmarks/training_set_build.py, docs/benchmarks.md).
ENTITY_CHUNK_ROWS = 200_000


def _historical_features(store: Any, entity: pd.DataFrame, service: Any) -> pd.DataFrame:
    """Point-in-time join in bounded-memory chunks of entity rows."""
    import pandas as pd

    parts = [
        store.get_historical_features(entity_df=entity.iloc[i : i + ENTITY_CHUNK_ROWS], features=service).to_df()
        for i in range(0, max(len(entity), 1), ENTITY_CHUNK_ROWS)
    ]
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def build_training_set(
    store: FeatureStore,
    *,
    feature_service: str,
    entity_df: pd.DataFrame,
    entity_keys: list[str],
    timestamp_column: str,
    label: str,
    request_features: list[str],
    out_dir: Path,
) -> dict[str, Any]:
    """Join features as of each entity row's time (duckdb), check it, snapshot it, return lineage.

    Returns {path, sha256, rows, start, end, feature_service, feature_views, columns, missing}
    (strings and ints only), where `missing` counts NaNs per feature column (rows with no feature
    value within the view's TTL).
    """
    keep = list(dict.fromkeys([*entity_keys, timestamp_column, label, *request_features]))
    absent = sorted(set(keep) - set(entity_df.columns))
    if absent:
        raise TrainingSetError(f"entity dataframe lacks column(s) {absent} (has {sorted(entity_df.columns)})")
    entity = normalize_timestamps(entity_df[keep]).rename(columns={timestamp_column: FEAST_TIMESTAMP})
    service = _feature_service(store, feature_service)
    frame = _historical_features(store, entity, service)
    if len(frame) != len(entity):
        raise TrainingSetError(
            f"feature service '{feature_service}' returned {len(frame)} rows for {len(entity)} entity rows; a "
            f"point-in-time join must return every entity row once (check the offline store type is duckdb)"
        )
    frame = _canonical(frame.rename(columns={FEAST_TIMESTAMP: timestamp_column}), keep, timestamp_column, entity_keys)
    path, sha = _write_snapshot(frame, Path(out_dir))
    lineage = _lineage(frame, path, sha, timestamp_column, [c for c in frame.columns if c not in keep])
    lineage = {**lineage, "feature_service": feature_service, "feature_views": feature_view_versions(store, service)}
    atomic_write_bytes(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(lineage, indent=2)))
    gaps = {c: n for c, n in lineage["missing"].items() if n}
    log.info("training set %s: %s rows, missing values %s", path.name, lineage["rows"], gaps or "none")
    return lineage


def _lineage(frame: pd.DataFrame, path: Path, sha: str, timestamp_column: str, features: list[str]) -> dict[str, Any]:
    stamps = frame[timestamp_column]
    return {
        "path": str(path),
        "sha256": sha,
        "rows": len(frame),
        "start": stamps.min().isoformat() if len(frame) else "",
        "end": stamps.max().isoformat() if len(frame) else "",
        "columns": list(frame.columns),
        "missing": {c: int(n) for c, n in frame[features].isna().sum().items()},
    }


def _feature_service(store: FeatureStore, name: str) -> Any:
    from feast.errors import FeatureServiceNotFoundException

    try:
        return store.get_feature_service(name)
    except FeatureServiceNotFoundException:
        known = sorted(fs.name for fs in store.list_feature_services())
        raise TrainingSetError(
            f"feature service '{name}' is not registered (registered: {known}); define it in the feature "
            f"repo and run FeastApplyOperator"
        ) from None


def _canonical(frame: pd.DataFrame, keep: list[str], timestamp_column: str, keys: list[str]) -> pd.DataFrame:
    """Stable column and row order so equal inputs give byte-equal snapshots (Feast's order is not stable)."""
    features = [c for c in frame.columns if c not in keep]
    frame = normalize_timestamps(frame[[*keep, *features]])
    order = [timestamp_column, *keys, *[c for c in keep if c not in (timestamp_column, *keys)]]
    return frame.sort_values(order, kind="mergesort").reset_index(drop=True)


def _write_snapshot(frame: pd.DataFrame, out_dir: Path) -> tuple[Path, str]:
    """Write parquet to a temp file, hash it, rename to `<sha16>.parquet` (kept if it already exists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".snapshot.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
        sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
        target = out_dir / f"{sha[:SNAPSHOT_ID_LENGTH]}.parquet"
        if not target.exists():
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target, sha


def feature_view_versions(store: FeatureStore, service: Any) -> dict[str, dict[str, Any]]:
    """Registry facts that identify each view's definition and data: version, timestamps, spec hash."""
    views = {}
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        spec = view.to_proto().spec.SerializeToString(deterministic=True)
        info: dict[str, Any] = {
            "version": int(getattr(view, "current_version_number", 0) or 0),
            "spec_sha256": hashlib.sha256(spec).hexdigest()[:SNAPSHOT_ID_LENGTH],
            "features": [f.name for f in projection.features],
        }
        for key, value in (("created", view.created_timestamp), ("last_updated", view.last_updated_timestamp),
                           ("materialized_until", view.most_recent_end_time)):
            if value is not None:  # the file registry stores naive UTC
                info[key] = (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
        views[projection.name] = info
    return views
