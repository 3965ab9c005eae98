"""The import contracts of `make lint` hold on the tree, and they do catch a violation.

lint-imports runs on a temporary copy of the package (first on PYTHONPATH, so it shadows the
editable install) with one module added that breaks a contract; ~1 s per run.
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
    assert "2 kept, 0 broken" in done.stdout


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
