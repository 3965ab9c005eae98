"""Run one DAG in this process and show its outcome: `airflow-mlops run <dag_id>` and the demo's steps.

`dag.test()` on the embedded state (the metadata DB under MLOPS_HOME), one line per task as it ends,
then the run's state. Library noise is kept out of that output (`quiet_library_warnings`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

# A first-time user cannot act on a library's deprecation, and Airflow prints each one as a warning
# line among the task output. Ours (airflow_mlops.*) stay visible.
_LIBRARY_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning)
# Airflow's in-process Execution API (what dag.test() talks to) imports starlette's TestClient.
_STARLETTE_TESTCLIENT = r"Using `httpx` with `starlette\.testclient` is deprecated"
# mlflow.store.db.utils announces every table creation/upgrade of the SQLite tracking store at INFO.
_CHATTY_LOGGERS = ("mlflow.store.db.utils", "alembic.runtime.migration")


def quiet_library_warnings() -> None:
    """Ignore libraries' deprecation warnings in this process (ours stay shown); re-callable.

    Feast installs `simplefilter("once", DeprecationWarning)` when it is imported, in front of any
    filter set before; calling this again (the task runner does before every task) puts ours back in front.
    """
    for category in _LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("default", category=category, module=r"airflow_mlops(\.|$)")
    warnings.filterwarnings("ignore", message=_STARLETTE_TESTCLIENT)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def find_dag(dag_id: str) -> Any:
    """The DAG `dag_id`: one the project's factory builds, else one from the dags folder."""
    from airflow_mlops.dags import build_dags
    from airflow_mlops.exceptions import MLOpsError

    dags = build_dags()
    if dag_id in dags:
        return dags[dag_id]
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()  # the configured dags folder (examples are off in our environment)
    if dag_id in bag.dags:
        return bag.dags[dag_id]
    known = sorted(set(dags) | set(bag.dags))
    raise MLOpsError(f"no DAG {dag_id!r}; known DAGs: {', '.join(known)}")


def parse_conf(text: str | None) -> dict[str, Any] | None:
    """`--conf` JSON: an object, or nothing."""
    from airflow_mlops.exceptions import MLOpsError

    if not text:
        return None
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MLOpsError(f"--conf is not valid JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise MLOpsError(f"--conf must be a JSON object, got {type(conf).__name__}")
    return conf


def _label(ti: Any) -> str:
    map_index = getattr(ti, "map_index", -1)
    return ti.task_id if map_index is None or map_index < 0 else f"{ti.task_id}[{map_index}]"


def _state(value: Any) -> str:
    return str(getattr(value, "value", value) or "none")


@contextlib.contextmanager
def _each_task(before: Callable[[], None], after: Callable[[Any, float], None]) -> Iterator[None]:
    """Call `before()` ahead of every task dag.test() runs, `after(ti, seconds)` when it has ended.

    dag.test() runs each task through the module function `_run_task` (Airflow 3.3); wrapped here
    for the duration of the block. Without it (another Airflow), the lines come after the run.
    """
    from airflow.sdk.definitions import dag as dag_module

    original = getattr(dag_module, "_run_task", None)
    if original is None:
        yield
        return

    def run_task(*, ti: Any, task: Any, **kwargs: Any) -> Any:
        before()
        started = time.monotonic()
        try:
            return original(ti=ti, task=task, **kwargs)
        finally:
            after(ti, time.monotonic() - started)

    dag_module._run_task = run_task
    try:
        yield
    finally:
        dag_module._run_task = original


def _task_states(dag_id: str, run_id: str) -> list[tuple[str, str]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()
    return [(task_id if map_index < 0 else f"{task_id}[{map_index}]", _state(state))
            for task_id, map_index, state in rows]


def run_dag(dag: Any, conf: Mapping[str, Any] | None = None, quiet: bool = True, indent: str = "    ") -> Any:
    """`dag.test()` with one line per task as it ends and the run's state; returns the DagRun."""
    order = {task.task_id: n for n, task in enumerate(dag.topological_sort())}
    shown: set[str] = set()
    width = max((len(t) for t in order), default=10)

    def before() -> None:
        if quiet:
            quiet_library_warnings()

    def after(ti: Any, seconds: float) -> None:
        label = _label(ti)
        print(f"{indent}{label:<{width}}  {_state(ti.state):<15} {seconds:6.1f}s", flush=True)
        if _state(ti.state) not in ("up_for_retry", "up_for_reschedule", "deferred", "scheduled", "queued"):
            shown.add(label)

    before()
    started = time.monotonic()
    with _each_task(before, after):
        run = dag.test(run_conf=dict(conf) if conf else None)
    # Tasks that never ran (skipped by a branch or short-circuit, upstream_failed) get their line now.
    for label, state in sorted(_task_states(dag.dag_id, run.run_id),
                               key=lambda item: order.get(item[0].split("[")[0], len(order))):
        if label not in shown:
            print(f"{indent}{label:<{width}}  {state:<15}", flush=True)
    print(f"{indent}{dag.dag_id}: {_state(run.state)} in {time.monotonic() - started:.1f}s (run {run.run_id})",
          flush=True)
    return run


def succeeded(run: Any) -> bool:
    return _state(getattr(run, "state", None)) == "success"
