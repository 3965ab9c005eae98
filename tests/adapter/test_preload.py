"""The scheduler's library preload (plugin/preload.py, issue 20 item 4): where it acts and where it does not.

In-process and cheap: the list of heavy modules is swapped for one sentinel module written to tmp_path,
so each case shows whether a preload happened without importing pandas & co. into the test process.
The real list (thread-free, environment unchanged) is checked in tests/integration/test_preload_libraries.py;
a real scheduler's task inheriting the libraries in tests/e2e/test_headless_up.py.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_mlops.plugin import preload
from airflow_mlops.plugin.airflow_plugin import MLOpsPlugin

pytestmark = pytest.mark.adapter

# Airflow 3.3 calls on_starting from Job.__init__, before the runner sets job_type: the command tells
SCHEDULER = SimpleNamespace(job_type=None)


@pytest.fixture
def sentinel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module that only a preload imports; preload on, LocalExecutor, the real list replaced by it."""
    name = f"mlops_preload_sentinel_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(preload, "PRELOAD_MODULES", ())
    monkeypatch.setenv("AIRFLOW__MLOPS__PRELOAD_LIBRARIES", "True")
    monkeypatch.setenv("AIRFLOW__MLOPS__PRELOAD_EXTRA_MODULES", f" {name} , ")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    monkeypatch.setattr(sys, "argv", ["airflow", "scheduler"])
    yield name
    sys.modules.pop(name, None)


def test_the_plugin_registers_the_preload_listener_with_airflow() -> None:
    from airflow.listeners.listener import get_listener_manager

    assert preload in MLOpsPlugin.listeners
    assert get_listener_manager().pm.is_registered(preload)


def test_the_scheduler_preloads_before_it_forks_its_local_executor_workers(sentinel: str) -> None:
    preload.on_starting(SCHEDULER)
    assert sentinel in sys.modules


def test_a_scheduler_job_that_says_so_preloads_whatever_the_command(sentinel: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["python", "-c", "run my scheduler"])
    preload.on_starting(SimpleNamespace(job_type="SchedulerJob"))
    assert sentinel in sys.modules


@pytest.mark.parametrize(("command", "component"), [
    ("dag-processor", SimpleNamespace(job_type=None)), ("triggerer", SimpleNamespace(job_type=None)),
    ("scheduler", SimpleNamespace(job_type="DagProcessorJob")), ("scheduler", object())],
    ids=["dag-processor", "triggerer", "another job", "task runner"])
def test_no_other_component_preloads(sentinel: str, command: str, component: object,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["airflow", command])
    preload.on_starting(component)
    assert sentinel not in sys.modules


def test_nothing_is_preloaded_unless_the_setting_is_on(sentinel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__MLOPS__PRELOAD_LIBRARIES")
    preload.on_starting(SCHEDULER)
    assert sentinel not in sys.modules
    monkeypatch.setenv("AIRFLOW__MLOPS__PRELOAD_LIBRARIES", "False")
    preload.on_starting(SCHEDULER)
    assert sentinel not in sys.modules


def test_a_scheduler_whose_executor_runs_no_task_here_preloads_nothing(
        sentinel: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with caplog.at_level("INFO", logger=preload.__name__):
        preload.on_starting(SCHEDULER)
    assert sentinel not in sys.modules
    assert "forks no LocalExecutor workers" in caplog.text


def test_a_module_that_cannot_be_imported_is_skipped_and_named(sentinel: str) -> None:
    result = preload.preload(["mlops_no_such_module_anywhere", sentinel])
    assert result["imported"] == [sentinel]
    assert list(result["failed"]) == ["mlops_no_such_module_anywhere"]
    assert "ModuleNotFoundError" in result["failed"]["mlops_no_such_module_anywhere"]


def test_celery_workers_preload_through_celery_config_options(sentinel: str) -> None:
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
    from celery.signals import worker_init

    # `[celery] celery_config_options = airflow_mlops.plugin.preload.CELERY_CONFIG`: Airflow's defaults unchanged
    assert preload.CELERY_CONFIG == DEFAULT_CELERY_CONFIG
    assert sentinel not in sys.modules  # building the config imports nothing: only the worker's start does
    try:
        worker_init.send(sender=None)
        assert sentinel in sys.modules
    finally:
        worker_init.disconnect(preload._celery_worker_init)
        vars(preload).pop("CELERY_CONFIG", None)
