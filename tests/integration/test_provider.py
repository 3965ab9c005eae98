"""Provider metadata: Airflow discovers the distribution, its hooks and connection types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_airflow_providers_list_shows_the_distribution() -> None:
    airflow = Path(sys.executable).with_name("airflow")
    out = subprocess.run([str(airflow), "providers", "list", "-o", "plain"], capture_output=True, text=True,
                         check=True, timeout=120)
    assert "airflow-mlops" in out.stdout


def test_connection_types_are_registered_with_ui_behaviour() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    hooks = manager.hooks
    assert hooks["mlflow"].hook_class_name == "airflow_mlops.hooks.mlflow.MLflowHook"
    assert hooks["feast"].hook_class_name == "airflow_mlops.hooks.feast.FeastHook"
    assert hooks["mlops_serving"].hook_class_name == "airflow_mlops.hooks.serving.ServingHook"
    behaviours = manager.field_behaviours
    assert "mlflow" in behaviours and "feast" in behaviours and "mlops_serving" in behaviours
