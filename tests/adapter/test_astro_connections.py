"""The Astro project's connections (airflow_settings.yaml): one per hook we ship, read by our hooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import astro_cli

pytestmark = pytest.mark.adapter

PROJECT = Path(__file__).resolve().parents[2]
SETTINGS = PROJECT / "airflow_settings.yaml"


def _settings() -> dict[str, Any]:
    return yaml.safe_load(SETTINGS.read_text())


def test_embedded_profile_connections_leave_the_stores_to_the_environment(
    mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created as the CLI creates them, mlflow_default and feast_default pick the embedded stores."""
    from airflow_mlops.hooks.feast import FeastHook
    from airflow_mlops.hooks.mlflow import MLflowHook

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_FEAST_ONLINE_STORE"):
        monkeypatch.delenv(var, raising=False)
    for conn in _settings()["airflow"]["connections"]:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn['conn_id'].upper()}",
                           json.dumps(astro_cli.airflow_connection(conn)))
    assert MLflowHook().tracking_uri == f"sqlite:///{mlops_home / 'mlflow' / 'mlflow.db'}"
    settings = FeastHook().settings
    assert settings.online_store is None
    assert settings.repo_path == Path("/usr/local/airflow/include/feature_repo")


def test_every_connection_type_we_ship_has_its_default_connection_declared() -> None:
    import importlib

    from airflow_mlops.provider import CONNECTION_FORMS, HOOKS

    declared = {c["conn_id"]: c for c in _settings()["airflow"]["connections"]}
    for conn_type, (class_path, _) in HOOKS.items():
        module, _, name = class_path.rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        conn = declared.get(hook.default_conn_name)
        assert conn and conn["conn_type"] == conn_type, f"{hook.default_conn_name} (type {conn_type}) not declared"
        documented = json.loads(CONNECTION_FORMS[conn_type]["placeholders"].get("extra", "{}"))
        unknown = set(conn.get("conn_extra") or {}) - set(documented)
        assert not unknown, f"{hook.default_conn_name}: extras {sorted(unknown)} are not ones {name} reads"
