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
    pin_prometheus_mode()


def pin_prometheus_mode() -> None:
    """Fix prometheus_client's single/multiprocess mode from the environment as the user set it.

    Feast 0.67 exports PROMETHEUS_MULTIPROC_DIR (a temp dir of its own) when `feast.metrics` is imported, which
    its FeatureStore does lazily on some calls. prometheus_client picks its mode once, at its own first import,
    from that variable: imported after Feast, our serving metrics would silently go to Feast's files instead of
    this process's registry (seen: /metrics without our counters in a process that had read features first).
    Importing it here, before any Feast import of our code, makes its mode the user's choice. (A small module:
    no heavy import; `serve --workers N` sets the variable itself before its workers start.)"""
    import prometheus_client.values  # noqa: F401 - imported for the side effect described above
