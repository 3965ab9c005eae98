"""Timing probe for `benchmarks/training_dag.py --mode scheduler` (benchmark only, never shipped).

Put on PYTHONPATH of every Airflow component with MLOPS_BENCH_PROBE_DIR set; Python imports it at
interpreter start. The LocalExecutor's workers are forked from the scheduler and each task process is
forked from a worker (the task SDK's supervisor), so the probe installed at the scheduler's start is
inherited by both. It records only in forked processes, one JSON line per event in
`<probe dir>/<pid>.jsonl`, written at once (a task process leaves with os._exit, no atexit):

- fork:    {"ev": "fork", "t", "ppid"}: a process was forked (the start of a task process);
- import:  {"ev": "import", "t", "dur", "name", "heavy"}: an outermost import (not nested in another
           import) of a module not yet loaded; its duration includes everything it imported;
- http:    {"ev": "http", "t", "dur", "method", "path", "status"}: a call of httpx.Client.send (the
           supervisor's calls to the api-server's Execution API);
- execute: {"ev": "execute", "t", "dur", "task_id", "run_id"}: the operator's execute(), timed around the
           task runner's `_run_execute_callable`.
"""

from __future__ import annotations

import json
import os
import sys
import time

_DIR = os.environ.get("MLOPS_BENCH_PROBE_DIR")
HEAVY = frozenset({"pandas", "numpy", "sklearn", "mlflow", "feast", "great_expectations", "pyarrow", "duckdb",
                   "scipy", "evidently"})
_state = {"forked": False, "depth": 0}


def _record(event: dict) -> None:
    if not _state["forked"]:
        return
    with open(os.path.join(_DIR, f"{os.getpid()}.jsonl"), "a", encoding="utf-8") as out:
        out.write(json.dumps(event) + "\n")


def _after_fork() -> None:
    _state["forked"], _state["depth"] = True, 0
    _record({"ev": "fork", "t": time.time(), "ppid": os.getppid()})


class _TimedLoader:
    """Wraps a module's loader: times exec_module when it is the outermost import; hooks task_runner."""

    def __init__(self, inner, name: str) -> None:
        self._inner, self._name = inner, name

    def __getattr__(self, attr: str):
        return getattr(self._inner, attr)

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        outermost = _state["depth"] == 0
        _state["depth"] += 1
        started, began = time.time(), time.perf_counter()
        try:
            self._inner.exec_module(module)
        finally:
            _state["depth"] -= 1
            if outermost:
                _record({"ev": "import", "t": started, "dur": time.perf_counter() - began, "name": self._name,
                         "heavy": self._name.split(".")[0] in HEAVY})
        if self._name == "airflow.sdk.execution_time.task_runner":
            _wrap_execute(module)


class _Finder:
    def find_spec(self, name, path=None, target=None):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _TimedLoader(spec.loader, name)
                return spec
        return None


def _wrap_execute(module) -> None:
    original = module._run_execute_callable

    def timed(context, execute, task, *args, **kwargs):
        started, began = time.time(), time.perf_counter()
        try:
            return original(context, execute, task, *args, **kwargs)
        finally:
            _record({"ev": "execute", "t": started, "dur": time.perf_counter() - began, "task_id": task.task_id,
                     "run_id": os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")})

    module._run_execute_callable = timed


def _wrap_httpx() -> None:
    import httpx

    original = httpx.Client.send

    def send(self, request, *args, **kwargs):
        started, began, status = time.time(), time.perf_counter(), None
        try:
            response = original(self, request, *args, **kwargs)
            status = response.status_code
            return response
        finally:
            _record({"ev": "http", "t": started, "dur": time.perf_counter() - began, "method": request.method,
                     "path": request.url.path, "status": status})

    httpx.Client.send = send


if _DIR:
    os.register_at_fork(after_in_child=_after_fork)
    sys.meta_path.insert(0, _Finder())
    _wrap_httpx()
