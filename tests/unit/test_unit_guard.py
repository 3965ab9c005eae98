"""support/unit_guard.py fails a run of only `unit` tests that loaded an `airflow` module, and only such a run.

Each case is a real child pytest session on a two-file project (a conftest registering the guard, one test
module). The "Airflow" a test loads is an empty module put in `sys.modules` under that name: the guard looks
at module names, and importing the real Airflow would cost the child ~5 s for the same verdict.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SUPPORT_ROOT = Path(__file__).resolve().parents[1]  # tests/, where `support` is importable from
CONFTEST = """
from support.unit_guard import UnitGuard


def pytest_configure(config):
    config.pluginmanager.register(UnitGuard(), "unit-guard")
"""
TESTS = """
import sys
import types

import pytest


@pytest.mark.unit
def test_pure():
    assert True


@pytest.mark.{marker}
def test_that_loads_airflow():
    if {loads}:
        sys.modules.setdefault("airflow", types.ModuleType("airflow"))
"""


def _session(tmp_path: Path, marker: str, loads: bool, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_layer.py").write_text(TESTS.format(marker=marker, loads=loads))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SUPPORT_ROOT), os.environ.get("PYTHONPATH", "")]),
           # no installed pytest plugins (playwright, anyio, ...): ~1 s less per child, and none is needed here
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", *args,
                           str(tmp_path)], check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_unit_run_that_loads_airflow_fails_naming_the_test(tmp_path: Path) -> None:
    done = _session(tmp_path, "unit", True)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    assert "2 passed" in done.stdout and "unit layer loaded Airflow" in done.stdout, done.stdout
    assert "first seen after test_layer.py::test_that_loads_airflow" in done.stdout, done.stdout


def test_a_run_that_selected_other_layers_may_load_airflow(tmp_path: Path) -> None:
    done = _session(tmp_path, "adapter", True)
    assert done.returncode == pytest.ExitCode.OK, done.stdout + done.stderr
    # the same tests with only the unit ones selected: the adapter test does not run, nothing loads Airflow
    only_unit = _session(tmp_path, "adapter", True, "-m", "unit")
    assert only_unit.returncode == pytest.ExitCode.OK and "1 passed" in only_unit.stdout, only_unit.stdout
    assert "unit layer loaded Airflow" not in only_unit.stdout
