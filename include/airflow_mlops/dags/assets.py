"""Stable Asset names (ARCHITECTURE.md §5). DAG schedules and the UI use these and nothing else.

Names and URIs are strings in `core/asset_names.py`; the Asset objects the operators emit are built in
`operators/assets.py` (re-exported here); the landing asset, whose watcher is a trigger, is built here.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetWatcher

from airflow_mlops.config import paths
from airflow_mlops.core.asset_names import (
    FEATURES_ALIAS_SUFFIX,
    FEATURES_PREFIX,
    GROUP,
    LANDING_ASSET,
    LANDING_URI,
    LANDING_WATCHER,
)
from airflow_mlops.operators.assets import (
    champion_asset,
    champion_experiment_alias,
    champion_restored_alias,
    drift_alias,
    drift_asset,
    experiment_alias,
    experiment_asset,
    feature_view_of,
    features_alias,
    features_asset,
    performance_alias,
    performance_asset,
    predictions_asset,
)
from airflow_mlops.triggers.landing import LandingFileTrigger, poll_interval_from_env

__all__ = [
    "FEATURES_ALIAS_SUFFIX", "FEATURES_PREFIX", "LANDING_ASSET", "LANDING_WATCHER", "champion_asset",
    "champion_experiment_alias", "champion_restored_alias", "drift_alias", "drift_asset", "experiment_alias",
    "experiment_asset", "feature_view_of", "features_alias", "features_asset",
    "landing_asset", "performance_alias", "performance_asset", "predictions_asset",
]


def landing_asset(poll_interval: float | None = None) -> Asset:
    """Updated by the AssetWatcher whenever a complete new raw batch lands in `landing/<dataset>/`.

    One event per file; the event's `extra["payload"]` names it ({dataset, file, path, size_bytes,
    modified_at}). The watcher runs in the triggerer, and only while a DAG scheduled on this asset is
    unpaused. Poll interval: `poll_interval`, else MLOPS_LANDING_POLL_INTERVAL, else 10 s. The
    trigger's arguments identify it (Airflow hashes them), so they must be the same on every parse.
    """
    trigger = LandingFileTrigger(landing_dir=str(paths().landing_dir),
                                 poll_interval=poll_interval if poll_interval is not None else poll_interval_from_env())
    return Asset(name=LANDING_ASSET, uri=LANDING_URI, group=GROUP,
                 watchers=[AssetWatcher(name=LANDING_WATCHER, trigger=trigger)])
