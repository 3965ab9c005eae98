"""The real preload list is safe to fork from (plugin/preload.py, issue 20 item 4).

The scheduler imports these modules and then forks its LocalExecutor workers, which fork every task process.
A fork copies one thread only: a library that started a thread (or opened a connection) during its import
would leave the children with a lock nobody releases or a socket shared by many. One fresh interpreter
does what the scheduler does (`on_starting` as Job.__init__ calls it, the setting on, LocalExecutor), then
reports: modules not loaded, threads, new sockets or event loops, changed environment variables, and
whether a forked child can use the libraries. Slow part: the imports themselves (pandas, scikit-learn,
MLflow, Feast, GX), once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCHEDULER_START = Path(__file__).resolve().parents[1] / "support" / "programs" / "scheduler_preload_probe.py"


def test_the_scheduler_preload_imports_every_library_and_leaves_nothing_running(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "AIRFLOW__MLOPS__PRELOAD_LIBRARIES": "True", "MLOPS_HOME": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, str(SCHEDULER_START)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["missing"] == [], done.stderr[-4000:]
    # No Python thread (a lock it holds would be held forever in every fork). Native pools exist (OpenBLAS,
    # duckdb): they handle fork themselves, which the child below exercises.
    assert report["python_threads"] == ["MainThread"]
    # no socket or event loop that every task process would share with the scheduler (why evidently is left out)
    assert report["new_sockets_or_pollers"] == []
    # Our telemetry switches were set around the imports only; what the libraries set themselves at import
    # (scikit-learn's KMP_*, Feast's PROMETHEUS_MULTIPROC_DIR, ...) stays, as in any process importing them.
    from airflow_mlops.privacy import TELEMETRY_OFF

    assert not set(report["env_changed"]) & set(TELEMETRY_OFF), report["env_changed"]
    assert report["child_status"] == 0, "a forked child hung or failed using the preloaded libraries"
