"""Import the heavy libraries once, in the process Airflow forks task processes from (opt-in).

Why: on Linux a LocalExecutor task process is forked, never exec'd: the scheduler forks its worker
processes when it starts its executor, and each worker's task supervisor forks the task process. Without
this, every task imports pandas, scikit-learn, MLflow, Feast, ... afresh; measured under `airflow-mlops up`
that is most of a light task's cost (docs/benchmarks.md, "Training DAG under a real scheduler"). What the
scheduler has imported before its executor starts, every worker and task process inherits: no import.

How (documented Airflow and Celery mechanisms only):
- LocalExecutor: `on_starting`, Airflow's lifecycle listener hook, registered by our plugin
  (`MLOpsPlugin.listeners`). `Job.__init__` calls it in the scheduler (`airflow scheduler`) before the
  executors start; it preloads there only, when `[mlops] preload_libraries` is true (AIRFLOW__MLOPS__PRELOAD_LIBRARIES),
  a LocalExecutor is configured and workers are forked (multiprocessing start method `fork`).
  Other components (dag-processor, triggerer, task runner) and other executors are left alone.
- CeleryExecutor: `[celery] celery_config_options = airflow_mlops.plugin.preload.CELERY_CONFIG`
  (Airflow's defaults, unchanged) connects Celery's `worker_init` signal: the worker's main process
  preloads before it forks its pool, whose processes fork the task processes.

What is imported: `PRELOAD_MODULES` (what our tasks import: the libraries and our own hooks, core
and job modules) plus `[mlops] preload_extra_modules` (comma-separated, e.g. a user's own libraries).
Imports only: nothing is connected or started by us, and no Python thread exists to be copied into a fork (the
integration test checks: no Python thread, socket or event loop, and a forked child uses the libraries).
Native thread pools (OpenBLAS, duckdb) exist after import and handle fork themselves. Evidently is
left out: its import creates an event loop. Our telemetry switches (privacy.TELEMETRY_OFF) are set only
around the imports, for libraries that read them at import, then removed again. What the libraries
set themselves when imported stays, as in any process that imports them, and every task of the
scheduler inherits it: scikit-learn's KMP_DUPLICATE_LIB_OK / KMP_INIT_AT_FORK, Feast's
PROMETHEUS_MULTIPROC_DIR, MLflow's telemetry session id. A module that cannot be imported is skipped
(the task imports it, or fails, as it would without preload).
Cost: the scheduler starts slower by the import time and holds the libraries' memory, shared
copy-on-write with its workers.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

SECTION = "mlops"
PRELOAD_MODULES: tuple[str, ...] = (
    # libraries, with the submodules our tasks import that cost more than ~0.1 s (the timing probe of
    # benchmarks/training_dag.py --mode scheduler lists every import a task makes)
    "numpy", "pandas", "pyarrow", "pyarrow.parquet", "pyarrow.dataset", "pyarrow.compute", "duckdb", "scipy.stats",
    "sklearn.ensemble", "sklearn.linear_model", "sklearn.metrics", "sklearn.model_selection", "sklearn.pipeline",
    "sklearn.impute", "sklearn.preprocessing", "narwhals", "git", "jinja2.ext",
    "mlflow", "mlflow.sklearn", "mlflow.pyfunc", "mlflow.entities", "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.store.tracking.rest_store", "mlflow.tracing.processor.base_mlflow",
    # Feast's stores by module name, not by import statement (the feast-internals contract is about code
    # depending on them; a module a Feast upgrade removes is only skipped here)
    "feast", "feast.infra.offline_stores.duckdb", "feast.infra.online_stores.sqlite",
    "feast.infra.online_stores.redis", "great_expectations",
    # Not evidently: its import creates an asyncio event loop (evidently/legacy/utils/sync.py), whose epoll
    # instance and socket pair every forked task would share. Only the monitoring tasks import it.
    # our modules the operators import inside execute()
    "airflow_mlops.hooks.mlflow", "airflow_mlops.hooks.mlflow_registry", "airflow_mlops.hooks.feast",
    "airflow_mlops.hooks.gx", "airflow_mlops.jobs.training", "airflow_mlops.core.training",
    "airflow_mlops.core.training_set", "airflow_mlops.core.evaluation", "airflow_mlops.core.evaluation_report",
    "airflow_mlops.core.model_card", "airflow_mlops.core.gate", "airflow_mlops.core.drift",
    "airflow_mlops.core.batch_inference", "airflow_mlops.dags",
)


def preload(modules: Iterable[str] = PRELOAD_MODULES) -> dict[str, Any]:
    """Import `modules` (those not loaded yet); returns {"imported": [...], "failed": {name: error}, "seconds"}."""
    started = time.perf_counter()
    imported: list[str] = []
    failed: dict[str, str] = {}
    with _telemetry_off():
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - a missing optional library only means the task imports it
                failed[name] = f"{type(exc).__name__}: {exc}"
                continue
            imported.append(name)
    return {"imported": imported, "failed": failed, "seconds": time.perf_counter() - started}


@contextmanager
def _telemetry_off() -> Iterator[None]:
    from airflow_mlops.privacy import TELEMETRY_OFF

    added = [name for name in TELEMETRY_OFF if name not in os.environ]
    os.environ.update({name: TELEMETRY_OFF[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def configured_modules() -> list[str] | None:
    """The modules to preload per `[mlops]`, or None when `preload_libraries` is off."""
    from airflow.sdk.configuration import conf

    if not conf.getboolean(SECTION, "preload_libraries", fallback=False):
        return None
    extra = str(conf.get(SECTION, "preload_extra_modules", fallback="") or "")
    return [*PRELOAD_MODULES, *(name.strip() for name in extra.split(",") if name.strip())]


def forks_local_workers() -> bool:
    """A LocalExecutor is configured and its workers are forked from this process (start method fork)."""
    import multiprocessing

    from airflow.sdk.configuration import conf

    executors = str(conf.get("core", "executor", fallback="") or "")
    # allow_none: asking must not fix the start method (the scheduler command sets it from its config)
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    return "LocalExecutor" in executors and method == "fork"


def _report(where: str, result: dict[str, Any]) -> None:
    log.info("airflow-mlops: preloaded %d modules in %.1f s in the %s (%s)", len(result["imported"]),
             result["seconds"], where, "[mlops] preload_libraries")
    if result["failed"]:
        log.info("airflow-mlops: not preloaded (tasks import them themselves): %s", result["failed"])


def is_scheduler(component: Any) -> bool:
    """`component` is the scheduler's Job. Airflow 3.3 calls on_starting from `Job.__init__`, before the
    SchedulerJobRunner sets `job_type`, so the command that runs is asked too (`airflow scheduler`)."""
    if not hasattr(component, "job_type"):  # the task runner's marker, a listener test's object
        return False
    import sys

    return component.job_type == "SchedulerJob" or (component.job_type is None and sys.argv[1:2] == ["scheduler"])


@hookimpl
def on_starting(component: Any) -> None:
    """Airflow's lifecycle hook: preload in the scheduler, before it forks its LocalExecutor workers."""
    if not is_scheduler(component):
        return
    modules = configured_modules()
    if modules is None:
        return
    if not forks_local_workers():
        log.info("airflow-mlops: [mlops] preload_libraries is on, but this scheduler forks no LocalExecutor "
                 "workers; nothing preloaded here (Celery workers: see airflow_mlops.plugin.preload)")
        return
    _report("scheduler", preload(modules))


def _celery_worker_init(**_: Any) -> None:
    modules = configured_modules()
    if modules is not None:
        _report("Celery worker", preload(modules))


def _celery_config() -> dict[str, Any]:
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
    from celery.signals import worker_init

    worker_init.connect(_celery_worker_init, weak=False)
    return dict(DEFAULT_CELERY_CONFIG)


def __getattr__(name: str) -> Any:
    """`CELERY_CONFIG` is built on first access only: the listener above must not import Celery."""
    if name == "CELERY_CONFIG":
        value = _celery_config()
        globals()[name] = value
        return value
    raise AttributeError(name)
