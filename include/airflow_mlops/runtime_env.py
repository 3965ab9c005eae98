"""The environment every entry point (CLI, make targets, tests) gives Airflow.

Set before `airflow` is imported: Airflow reads its configuration once, at import.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from airflow_mlops import config
from airflow_mlops.privacy import TELEMETRY_OFF


def airflow_env() -> dict[str, str]:
    """Embedded-profile defaults; anything already in the environment wins (production profile)."""
    home = config.paths()
    project = config.project_dir()
    return {
        "MLOPS_HOME": str(home.home),
        "AIRFLOW_HOME": str(home.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(project / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Spec files change rarely; re-parsing every 30 s is plenty and keeps a laptop quiet.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
        **TELEMETRY_OFF,
    }


def apply_airflow_env(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Fill the missing variables in place and return the effective values."""
    target = os.environ if environ is None else environ
    for key, value in airflow_env().items():
        target.setdefault(key, value)
    os.makedirs(target["AIRFLOW_HOME"], exist_ok=True)
    return {key: target[key] for key in airflow_env()}
