"""Stable Asset names (ARCHITECTURE.md §5). DAG schedules and the UI use these and nothing else."""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias, AssetWatcher

from airflow_mlops.config import paths
from airflow_mlops.triggers.landing import LandingFileTrigger, poll_interval_from_env

LANDING_ASSET = "mlops.landing"
LANDING_WATCHER = "mlops_landing_watcher"
FEATURES_PREFIX = "mlops.features."
FEATURES_ALIAS_SUFFIX = ".updates"


def features_asset(feature_view: str) -> Asset:
    """Emitted when a feature view got new rows in the online store (through `features_alias`)."""
    return Asset(name=f"{FEATURES_PREFIX}{feature_view}", uri=f"mlops://features/{feature_view}", group="mlops")


def features_alias(feature_view: str) -> AssetAlias:
    """The materialize task's outlet for a view: `mlops.features.<view>.updates`.

    A static Asset outlet gets an event on every successful run, changed or not. Through this alias
    the task adds an event for `features_asset(feature_view)` only in a run that gave the view new
    rows; a run that adds none emits nothing. Airflow links the alias to that asset at its first
    event, so the asset graph shows the feature DAG → alias → asset → training DAGs from then on.
    """
    return AssetAlias(name=f"{FEATURES_PREFIX}{feature_view}{FEATURES_ALIAS_SUFFIX}", group="mlops")


def feature_view_of(outlet: object) -> str | None:
    """The view a `features_asset` or `features_alias` outlet names (read from its name), else None."""
    if isinstance(outlet, AssetAlias):
        name, suffix = outlet.name, FEATURES_ALIAS_SUFFIX
    elif isinstance(outlet, Asset):
        name, suffix = outlet.name, ""
    else:
        return None
    view = name[len(FEATURES_PREFIX): len(name) - len(suffix)]
    return view if name.startswith(FEATURES_PREFIX) and name.endswith(suffix) and view else None


def champion_asset(model: str) -> Asset:
    """Emitted when a model version became champion."""
    return Asset(name=f"mlops.model.{model}.champion", uri=f"mlops://model/{model}/champion", group="mlops")


def predictions_asset(model: str) -> Asset:
    """Emitted when a batch-inference run wrote its predictions; extra {version, rows, path, window, sha256}."""
    return Asset(name=f"mlops.predictions.{model}", uri=f"mlops://predictions/{model}", group="mlops")


def drift_asset(model: str) -> Asset:
    """Emitted only when drift crossed the spec's threshold."""
    return Asset(name=f"mlops.drift.{model}", uri=f"mlops://drift/{model}", group="mlops")


def performance_asset(model: str) -> Asset:
    """Emitted only when delayed-label performance degraded beyond tolerance."""
    return Asset(name=f"mlops.performance.{model}", uri=f"mlops://performance/{model}", group="mlops")


def champion_restored_alias(model: str) -> AssetAlias:
    """The deploy teardown's outlet: a `champion_asset(model)` event only when a failed canary was rolled back."""
    return AssetAlias(name=f"mlops.model.{model}.champion.restored", group="mlops")


def drift_alias(model: str) -> AssetAlias:
    """The drift check's outlet: it adds a `drift_asset(model)` event through it only when drift is detected."""
    return AssetAlias(name=f"mlops.drift.{model}.detected", group="mlops")


def performance_alias(model: str) -> AssetAlias:
    """The performance check's outlet: a `performance_asset(model)` event only when performance degraded."""
    return AssetAlias(name=f"mlops.performance.{model}.degraded", group="mlops")


def landing_asset(poll_interval: float | None = None) -> Asset:
    """Updated by the AssetWatcher whenever a complete new raw batch lands in `landing/<dataset>/`.

    One event per file; the event's `extra["payload"]` names it ({dataset, file, path, size_bytes,
    modified_at}). The watcher runs in the triggerer, and only while a DAG scheduled on this asset is
    unpaused. Poll interval: `poll_interval`, else MLOPS_LANDING_POLL_INTERVAL, else 10 s. The
    trigger's arguments identify it (Airflow hashes them), so they must be the same on every parse.
    """
    trigger = LandingFileTrigger(landing_dir=str(paths().landing_dir),
                                 poll_interval=poll_interval if poll_interval is not None else poll_interval_from_env())
    return Asset(name=LANDING_ASSET, uri="mlops://landing", group="mlops",
                 watchers=[AssetWatcher(name=LANDING_WATCHER, trigger=trigger)])
