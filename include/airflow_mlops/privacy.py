"""Switch off telemetry of every library we use, in the processes where our own code runs.

Called by the CLI's `main` (before anything imports a library), at the start of our operators',
sensors' and triggers' Airflow entry points (`boundary.py`; heavy libraries are imported inside
them, after), by the serving app and by the UI plugin's app. Never at import: Airflow loads the
plugin in every process, and a variable set there would change other teams' tasks.
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
