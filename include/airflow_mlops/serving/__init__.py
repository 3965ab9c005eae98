"""Online prediction server: model slots, prediction log, metrics, and the FastAPI app.

Names are imported lazily (PEP 562): `import airflow_mlops.serving` loads no ML library.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "LoadedModel": "loaded",
    "MissingFeatures": "loaded",
    "ModelLoadError": "loaded",
    "ModelManager": "models",
    "canary_bucket": "routing",
    "entity_key_text": "routing",
    "PredictionLog": "prediction_log",
    "ServingMetrics": "metrics",
    "create_app": "app",
}

__all__ = [
    "LoadedModel",
    "MissingFeatures",
    "ModelLoadError",
    "ModelManager",
    "PredictionLog",
    "ServingMetrics",
    "canary_bucket",
    "create_app",
    "entity_key_text",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
