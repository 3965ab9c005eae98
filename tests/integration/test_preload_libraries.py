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

SCHEDULER_START = r"""
import json, os, sys, threading
from types import SimpleNamespace

from airflow_mlops.plugin import preload


def descriptors():
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return found


def use_in_a_fork():
    # what tasks do first with the inherited libraries, in a forked child that must not hang (alarm: killed)
    pid = os.fork()
    if pid == 0:
        import signal
        signal.alarm(120)
        import duckdb, numpy as np, pandas as pd, pyarrow as pa, scipy.stats
        from sklearn.ensemble import HistGradientBoostingClassifier
        x = np.random.default_rng(0).random((400, 4))
        HistGradientBoostingClassifier(max_iter=5).fit(x, x[:, 0] > 0.5)
        pd.DataFrame(x).groupby(x[:, 1] > 0.5).sum()
        duckdb.sql("select 42").fetchall()
        pa.table({"a": [1, 2]})
        scipy.stats.norm.cdf(x @ x.T)
        os._exit(0)
    return os.waitpid(pid, 0)[1]


env_before, fds_before = dict(os.environ), descriptors()
preload.on_starting(SimpleNamespace(job_type="SchedulerJob"))  # what Job.__init__ does in the scheduler
fds_after = descriptors()
print(json.dumps({
    "missing": [name for name in preload.PRELOAD_MODULES if name not in sys.modules],
    "python_threads": [t.name for t in threading.enumerate()],
    "new_sockets_or_pollers": sorted(v for k, v in fds_after.items() if fds_before.get(k) != v
                                     and ("socket:" in v or "eventpoll" in v)),
    "env_changed": sorted(k for k in set(env_before) | set(os.environ) if env_before.get(k) != os.environ.get(k)),
    "child_status": use_in_a_fork(),
}))
"""


def test_the_scheduler_preload_imports_every_library_and_leaves_nothing_running(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "AIRFLOW__MLOPS__PRELOAD_LIBRARIES": "True", "MLOPS_HOME": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-c", SCHEDULER_START], env=env, cwd=tmp_path, capture_output=True,
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
