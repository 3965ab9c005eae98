"""support/unit_guard.py fails a run of only `unit` tests that loaded an `airflow` module, and only such a run.

Each case is a real child pytest session on a two-file project (a conftest registering the guard, one test
module). The "Airflow" a test loads is an empty module put in `sys.modules` under that name: the guard looks
at module names, and importing the real Airflow would cost the child ~5 s for the same verdict.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SUPPORT_ROOT = Path(__file__).resolve().parents[1]  # tests/, where `support` is importable from
PROJECT = SUPPORT_ROOT / "support" / "unit_guard_project"  # the child project's two files, as modules


def _session(tmp_path: Path, marker: str, loads: bool, *args: str) -> subprocess.CompletedProcess[str]:
    shutil.copyfile(PROJECT / "guard_conftest.py", tmp_path / "conftest.py")
    shutil.copyfile(PROJECT / "guard_tests.py", tmp_path / "test_layer.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SUPPORT_ROOT), os.environ.get("PYTHONPATH", "")]),
           # no installed pytest plugins (playwright, anyio, ...): ~1 s less per child, and none is needed here
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
           "UNIT_GUARD_MARKER": marker, "UNIT_GUARD_LOADS": str(loads)}
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
