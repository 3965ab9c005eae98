"""Stable Asset names (ARCHITECTURE.md §5). DAG schedules and the UI use these and nothing else."""

from __future__ import annotations

from airflow.sdk import Asset


def features_asset(feature_view: str) -> Asset:
    """Emitted when a feature view was materialized to the online store."""
    return Asset(name=f"mlops.features.{feature_view}", uri=f"mlops://features/{feature_view}", group="mlops")


def champion_asset(model: str) -> Asset:
    """Emitted when a model version became champion."""
    return Asset(name=f"mlops.model.{model}.champion", uri=f"mlops://model/{model}/champion", group="mlops")


def drift_asset(model: str) -> Asset:
    """Emitted only when drift crossed the spec's threshold."""
    return Asset(name=f"mlops.drift.{model}", uri=f"mlops://drift/{model}", group="mlops")


def performance_asset(model: str) -> Asset:
    """Emitted only when delayed-label performance degraded beyond tolerance."""
    return Asset(name=f"mlops.performance.{model}", uri=f"mlops://performance/{model}", group="mlops")
