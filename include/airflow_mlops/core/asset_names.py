"""Stable asset names and URIs (ARCHITECTURE.md §5): plain strings, no Airflow.

The `Asset`/`AssetAlias` objects are built from these by `operators/assets.py` (where the operators that
emit them live) and re-exported with the landing watcher by `dags/assets.py`; the UI and any other reader
use the same strings.
"""

from __future__ import annotations

GROUP = "mlops"
LANDING_ASSET = "mlops.landing"
LANDING_URI = "mlops://landing"
LANDING_WATCHER = "mlops_landing_watcher"
FEATURES_PREFIX = "mlops.features."
FEATURES_ALIAS_SUFFIX = ".updates"


def features_name(feature_view: str) -> str:
    return f"{FEATURES_PREFIX}{feature_view}"


def features_uri(feature_view: str) -> str:
    return f"mlops://features/{feature_view}"


def features_alias_name(feature_view: str) -> str:
    return f"{FEATURES_PREFIX}{feature_view}{FEATURES_ALIAS_SUFFIX}"


def feature_view_in(name: str, *, alias: bool) -> str | None:
    """The view a features asset name (or, with `alias`, a features alias name) names, else None."""
    suffix = FEATURES_ALIAS_SUFFIX if alias else ""
    view = name[len(FEATURES_PREFIX): len(name) - len(suffix)]
    return view if name.startswith(FEATURES_PREFIX) and name.endswith(suffix) and view else None


def champion_name(model: str) -> str:
    return f"mlops.model.{model}.champion"


def champion_uri(model: str) -> str:
    return f"mlops://model/{model}/champion"


def predictions_name(model: str) -> str:
    return f"mlops.predictions.{model}"


def predictions_uri(model: str) -> str:
    return f"mlops://predictions/{model}"


def drift_name(model: str) -> str:
    return f"mlops.drift.{model}"


def drift_uri(model: str) -> str:
    return f"mlops://drift/{model}"


def performance_name(model: str) -> str:
    return f"mlops.performance.{model}"


def performance_uri(model: str) -> str:
    return f"mlops://performance/{model}"


def champion_restored_alias_name(model: str) -> str:
    return f"mlops.model.{model}.champion.restored"


def drift_alias_name(model: str) -> str:
    return f"mlops.drift.{model}.detected"


def performance_alias_name(model: str) -> str:
    return f"mlops.performance.{model}.degraded"


def experiment_name(model: str) -> str:
    return f"mlops.experiment.{model}"


def experiment_uri(model: str) -> str:
    return f"mlops://experiment/{model}"


def experiment_alias_name(model: str) -> str:
    return f"mlops.experiment.{model}.decided"


def champion_experiment_alias_name(model: str) -> str:
    return f"mlops.model.{model}.champion.experiment"
