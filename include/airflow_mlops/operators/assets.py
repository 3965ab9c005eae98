"""The Asset and AssetAlias objects our operators emit, built from `core.asset_names` (ARCHITECTURE.md §5).

They live here, beside the operators that emit them, so operators never reach up into the DAG layer;
`dags/assets.py` re-exports them with the landing watcher for DAG schedules and tests.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

from airflow_mlops.core import asset_names as names


def features_asset(feature_view: str) -> Asset:
    """Emitted when a feature view got new rows in the online store (through `features_alias`)."""
    return Asset(name=names.features_name(feature_view), uri=names.features_uri(feature_view), group=names.GROUP)


def features_alias(feature_view: str) -> AssetAlias:
    """The materialize task's outlet for a view: `mlops.features.<view>.updates`.

    A static Asset outlet gets an event on every successful run, changed or not. Through this alias
    the task adds an event for `features_asset(feature_view)` only in a run that gave the view new
    rows; a run that adds none emits nothing. Airflow links the alias to that asset at its first
    event, so the asset graph shows the feature DAG → alias → asset → training DAGs from then on.
    """
    return AssetAlias(name=names.features_alias_name(feature_view), group=names.GROUP)


def feature_view_of(outlet: object) -> str | None:
    """The view a `features_asset` or `features_alias` outlet names (read from its name), else None."""
    if isinstance(outlet, AssetAlias):
        return names.feature_view_in(outlet.name, alias=True)
    if isinstance(outlet, Asset):
        return names.feature_view_in(outlet.name, alias=False)
    return None


def champion_asset(model: str) -> Asset:
    """Emitted when a model version became champion."""
    return Asset(name=names.champion_name(model), uri=names.champion_uri(model), group=names.GROUP)


def predictions_asset(model: str) -> Asset:
    """Emitted when a batch-inference run wrote its predictions; extra {version, rows, path, window, sha256}."""
    return Asset(name=names.predictions_name(model), uri=names.predictions_uri(model), group=names.GROUP)


def drift_asset(model: str) -> Asset:
    """Emitted only when drift crossed the spec's threshold."""
    return Asset(name=names.drift_name(model), uri=names.drift_uri(model), group=names.GROUP)


def performance_asset(model: str) -> Asset:
    """Emitted only when delayed-label performance degraded beyond tolerance."""
    return Asset(name=names.performance_name(model), uri=names.performance_uri(model), group=names.GROUP)


def champion_restored_alias(model: str) -> AssetAlias:
    """The deploy teardown's outlet: a `champion_asset(model)` event only when a failed canary was rolled back."""
    return AssetAlias(name=names.champion_restored_alias_name(model), group=names.GROUP)


def drift_alias(model: str) -> AssetAlias:
    """The drift check's outlet: it adds a `drift_asset(model)` event through it only when drift is detected."""
    return AssetAlias(name=names.drift_alias_name(model), group=names.GROUP)


def performance_alias(model: str) -> AssetAlias:
    """The performance check's outlet: a `performance_asset(model)` event only when performance degraded."""
    return AssetAlias(name=names.performance_alias_name(model), group=names.GROUP)


def experiment_asset(model: str) -> Asset:
    """Emitted when an online experiment of the model ended (promoted or rolled back); extra: the readout."""
    return Asset(name=names.experiment_name(model), uri=names.experiment_uri(model), group=names.GROUP)


def experiment_alias(model: str) -> AssetAlias:
    """The readout's outlet: an `experiment_asset(model)` event only in the run that ended the experiment."""
    return AssetAlias(name=names.experiment_alias_name(model), group=names.GROUP)


def champion_experiment_alias(model: str) -> AssetAlias:
    """A `champion_asset(model)` event when an experiment moved `champion` (readout promote, or the start task
    of a model without a champion yet); never in runs that left it where it was."""
    return AssetAlias(name=names.champion_experiment_alias_name(model), group=names.GROUP)
