"""The import contracts of `make lint` hold on the tree, and they do catch a violation.

lint-imports runs on a temporary copy of the package (first on PYTHONPATH, so it shadows the
editable install) with one module added that breaks a contract; ~5 s per run (feast's own import graph
is built too, for the feast-internals contract).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache", str(PROJECT / "pyproject.toml")],
                          cwd=package_parent, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(PROJECT / "include" / "airflow_mlops", tmp_path / "airflow_mlops",
                    ignore=shutil.ignore_patterns("__pycache__", "static"))
    return tmp_path / "airflow_mlops"


def test_the_tree_keeps_every_contract(package_copy: Path) -> None:
    done = _lint_imports(package_copy.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


def test_core_importing_airflow_even_lazily_breaks_the_no_airflow_contract(package_copy: Path) -> None:
    (package_copy / "core" / "sneaky.py").write_text(
        "def when_called():\n    from airflow.sdk import Variable\n\n    return Variable\n")
    done = _lint_imports(package_copy.parent)
    assert done.returncode != 0
    assert "core, serving, exceptions, config, profile, privacy import no airflow BROKEN" in done.stdout
    assert "airflow_mlops.core.sneaky -> airflow (l.2)" in done.stdout, done.stdout


def test_core_importing_a_hook_breaks_the_layers(package_copy: Path) -> None:
    (package_copy / "core" / "upward.py").write_text("from airflow_mlops.hooks.mlflow_registry import ModelRegistry\n")
    done = _lint_imports(package_copy.parent)
    assert done.returncode != 0
    assert "layers: core -> hooks -> operators/sensors/triggers -> dags, plugin BROKEN" in done.stdout
    assert "airflow_mlops.core.upward -> airflow_mlops.hooks.mlflow_registry" in done.stdout, done.stdout


def test_serving_reaching_airflow_through_a_hook_breaks_the_no_airflow_contract(package_copy: Path) -> None:
    (package_copy / "serving" / "via_hook.py").write_text(
        "def client():\n    from airflow_mlops.hooks.mlflow import MLflowHook\n\n    return MLflowHook().get_conn()\n")
    done = _lint_imports(package_copy.parent)
    assert done.returncode != 0
    assert "core, serving, exceptions, config, profile, privacy import no airflow BROKEN" in done.stdout
    assert "airflow_mlops.serving.via_hook -> airflow_mlops.hooks.mlflow" in done.stdout, done.stdout


def test_an_operator_importing_the_dag_layer_breaks_the_layers(package_copy: Path) -> None:
    """Asset objects live in operators/assets.py, extra links in operators/links.py: nothing excuses this now."""
    (package_copy / "operators" / "upward.py").write_text(
        "def outlet():\n    from airflow_mlops.dags.assets import champion_asset\n\n    return champion_asset('m')\n")
    done = _lint_imports(package_copy.parent)
    assert done.returncode != 0
    assert "layers: core -> hooks -> operators/sensors/triggers -> dags, plugin BROKEN" in done.stdout
    assert "airflow_mlops.operators.upward -> airflow_mlops.dags.assets" in done.stdout, done.stdout


def test_a_feast_internal_import_outside_the_named_module_breaks_its_contract(package_copy: Path) -> None:
    (package_copy / "serving" / "internal.py").write_text(
        "def fmt():\n    from feast.infra.offline_stores.file_source import ParquetFormat\n\n"
        "    return ParquetFormat\n")
    done = _lint_imports(package_copy.parent)
    assert done.returncode != 0
    assert "only in airflow_mlops.core.feast_internals BROKEN" in " ".join(done.stdout.split()), done.stdout
    assert "airflow_mlops.serving.internal" in done.stdout and "feast.infra" in done.stdout, done.stdout
