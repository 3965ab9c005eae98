"""The `SCHEDULER_START` program of tests/integration/test_preload_libraries.py: the scheduler's preload, then a fork.

Run as `python scheduler_preload_probe.py` in a fresh interpreter with the scheduler's environment (the preload
setting on, LocalExecutor): does what `Job.__init__` does in the scheduler (`on_starting`), then prints as its
last line one JSON object: modules not loaded, Python threads, new sockets or event loops, changed environment
variables, and the exit status of a forked child that uses the preloaded libraries.
"""

import json
import os
import sys
import threading
from types import SimpleNamespace

from airflow_mlops.plugin import preload


def descriptors() -> dict[str, str]:
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return found


def use_in_a_fork() -> int:
    """What tasks do first with the inherited libraries, in a forked child that must not hang (alarm: killed)."""
    pid = os.fork()
    if pid == 0:
        import signal

        signal.alarm(120)
        import duckdb
        import numpy as np
        import pandas as pd
        import pyarrow as pa
        import scipy.stats
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
