"""Every module and class named in the provider info exists (a typo would hide it from Airflow silently)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import airflow_mlops
from airflow_mlops.provider import get_provider_info

pytestmark = pytest.mark.adapter
SECTIONS = ("hooks", "operators", "sensors", "triggers")


def _declared_modules() -> set[str]:
    info = get_provider_info()
    return {module for section in SECTIONS for entry in info[section] for module in entry["python-modules"]}


@pytest.mark.parametrize("module", sorted(_declared_modules()))
def test_declared_module_imports(module: str) -> None:
    importlib.import_module(module)


@pytest.mark.parametrize("path", get_provider_info()["extra-links"])
def test_declared_extra_link_resolves(path: str) -> None:
    module, _, name = path.rpartition(".")
    assert hasattr(importlib.import_module(module), name), path


def test_every_operator_sensor_trigger_and_hook_module_is_declared() -> None:
    declared = _declared_modules()
    package = airflow_mlops.__path__
    found = {info.name for info in pkgutil.walk_packages(package, "airflow_mlops.")
             if info.name.split(".")[1] in SECTIONS and not info.ispkg}
    assert {"airflow_mlops.operators.evidently", "airflow_mlops.triggers.labels"} <= found  # the walk sees modules
    assert found - declared == set(), "add these modules to provider.get_provider_info()"


def test_the_version_has_one_source() -> None:
    """provider.VERSION is the only version: the installed distribution (pyproject reads it through hatch),
    `airflow_mlops.__version__` and the provider info all say the same, and pyproject states none itself."""
    import importlib.metadata
    import tomllib
    from pathlib import Path

    from airflow_mlops.provider import VERSION

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "include/airflow_mlops/provider.py"
    assert importlib.metadata.version("airflow-mlops") == airflow_mlops.__version__ == VERSION
    assert get_provider_info()["versions"] == [VERSION]
