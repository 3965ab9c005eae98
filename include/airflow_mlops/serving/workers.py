"""`airflow-mlops serve --workers N`: N worker processes behind one socket, one set of metrics, one log.

uvicorn's own supervisor (`uvicorn.supervisors.Multiprocess`) binds the socket, starts the workers,
restarts one that dies and stops them all on SIGTERM/SIGINT; the kernel hands each new connection to one
worker. Each worker runs the whole app on its own:

- it loads the champion and follows the alias with its own poller, so after an alias move every worker
  serves the new version within `serving.poll_seconds` (plus its load time);
- it writes its own prediction-log files (parquet parts with unique names, or its own PostgreSQL
  connection), so the one log holds every worker's records, each once;
- it counts in prometheus_client's multiprocess mode (`serving/metrics.py`): PROMETHEUS_MULTIPROC_DIR is a
  fresh directory per server (or the one the user set, wiped of metric files at start); the supervisor
  marks a gone worker dead, so its live gauges (the versions it served) disappear from /metrics.

`/admin/deploy` reaches one worker. What every worker can converge on is the alias: a `full` deploy of
the alias' version is accepted and answered once every live worker serves it; canary, shadow or a version
the alias does not point at would split the server between workers and are refused (409), naming the fix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops.serving.metrics import ServingMetrics
    from airflow_mlops.serving.models import ModelManager

log = logging.getLogger(__name__)

WORKERS_ENV = "MLOPS_SERVING_WORKERS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def workers_from_env() -> int:
    """The number of worker processes of this server (MLOPS_SERVING_WORKERS, set by `serve`; default 1)."""
    raw = os.environ.get(WORKERS_ENV, "").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        from airflow_mlops.exceptions import MLOpsError

        raise MLOpsError(f"{WORKERS_ENV}={raw!r}: must be a whole number >= 1 (`airflow-mlops serve --workers N`)")
    return int(raw)


@contextlib.contextmanager
def metrics_dir(workers: int) -> Iterator[Path | None]:
    """PROMETHEUS_MULTIPROC_DIR for the server's processes (exported here, inherited by the workers).

    One worker and no directory set: None (prometheus_client's ordinary in-process registry). Several: a
    fresh temporary directory, removed when the server stops. A directory the user set (e.g. a tmpfs mount)
    is used at any worker count and wiped of metric files first: files of an earlier run would add its
    counts to this one's."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        yield path
        return
    if workers == 1:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="airflow-mlops-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def supervisor_class(on_stop: Callable[[], None]) -> type[Any]:
    """uvicorn's Multiprocess supervisor, plus: `on_stop()` at the first SIGINT/SIGTERM, and a worker that is
    gone (died and was replaced, or retired by SIGHUP/SIGTTOU) marked dead in the shared metrics."""
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def handle_int(self) -> None:
            on_stop()
            super().handle_int()

        def handle_term(self) -> None:
            on_stop()
            super().handle_term()

        def keep_subprocess_alive(self) -> None:
            self._forgetting_gone(super().keep_subprocess_alive)

        def handle_signals(self) -> None:
            self._forgetting_gone(super().handle_signals)

        def _forgetting_gone(self, step: Callable[[], None]) -> None:
            before = {process.pid for process in self.processes}
            step()
            for pid in before - {process.pid for process in self.processes}:
                mark_dead(pid)

    return Supervisor


def mark_dead(pid: int | None) -> None:
    """Remove a gone worker's live gauges (prometheus_client's mark_process_dead); its counters stay."""
    path = os.environ.get(MULTIPROC_ENV)
    if pid is None or not path:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    log.info("worker %d is gone: its live metrics were removed", pid)


# ---------------------------------------------------------------------------- /admin/deploy with several workers
def split_deploy_refusal(manager: ModelManager, workers: int, version: str | None, mode: str) -> str | None:
    """Why this deploy cannot be done on a server of `workers` processes (it reaches one of them), or None."""
    fix = ("Run canaries and pinned versions on a server started with --workers 1 (scale it with more replicas), "
           "or move the alias: every worker follows it")
    if mode != "full":
        return (f"a {mode} deploy reaches one of this server's {workers} worker processes, and the others would keep "
                f"serving without it. {fix}")
    if manager.follow_alias is None:
        return (f"this server serves a pinned version (--version) with {workers} worker processes; a deploy would "
                f"reach only one of them. Restart it with the version wanted")
    alias_now = manager.alias_version()
    if version is not None and version != alias_now:
        return (f"v{version} is not the version alias {manager.follow_alias!r} points at (v{alias_now}): one of "
                f"this server's {workers} worker processes would serve it and the others the alias' version. {fix}")
    return None


def wait_until_all_serve(metrics: ServingMetrics, version: str, workers: int, timeout: float,
                         poll: float = 0.2) -> tuple[bool, dict[int, dict[str, str]]]:
    """Wait until `workers` live workers serve `version` as primary: (all do, {pid: {slot: version}} last seen).

    Read from the shared metrics files, where every worker writes what it serves at each swap."""
    deadline = time.monotonic() + timeout
    while True:
        served = metrics.workers() or {}
        done = len(served) >= workers and all(slots.get("primary") == version for slots in served.values())
        if done or time.monotonic() >= deadline:
            return done, served
        time.sleep(poll)
