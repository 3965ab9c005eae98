"""`astro dev parse` runs `pytest .astro/test_dag_integrity_default.py` in the image, from /usr/local/airflow.
Run it the same way here (the pytest script, the project as working directory, state dirs of its own) so a
file the CLI would fail on fails `make test` first."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dags

PROJECT = Path(__file__).resolve().parents[2]
ASTRO_TEST = ".astro/test_dag_integrity_default.py"
SUITE = PROJECT / "tests" / "dags" / "test_dag_integrity.py"


def test_astro_parse_file_runs_the_projects_dag_integrity_suite(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "MLOPS_", "AIRFLOW_"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), MLOPS_HOME=str(tmp_path / "home"),
               MLOPS_PROJECT_DIR=str(PROJECT), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    pytest_script = Path(sys.executable).with_name("pytest")
    run = subprocess.run([str(pytest_script), "-p", "no:cacheprovider", ASTRO_TEST], cwd=PROJECT, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    suite_tests = len(re.findall(r"^def test_", SUITE.read_text(), re.MULTILINE))
    assert passed >= suite_tests + 1, f"{summary}: expected the {suite_tests} tests of {SUITE.name} plus its own"
    assert not re.search(r"skipped|xfail|deselected|error", summary), summary
