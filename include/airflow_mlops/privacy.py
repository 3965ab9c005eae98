"""Switch off telemetry of every library we use; called on package import.

Each variable is set only when the user has not set it, so an operator can still opt in.
"""

from __future__ import annotations

import os

# Why each one: MLflow sends usage events and writes ~/.config (ARCHITECTURE.md §9);
# DO_NOT_TRACK is the cross-tool convention honoured by MLflow, Evidently and others;
# Feast and GX have their own switches; Airflow ships Scarf usage-data collection.
TELEMETRY_OFF: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "FEAST_USAGE": "False",
    "GX_ANALYTICS_ENABLED": "False",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
    "SCARF_ANALYTICS": "false",
    "HF_HUB_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    # not telemetry, log hygiene: MLflow's artifact download bars flood task logs
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def disable_telemetry() -> None:
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)
