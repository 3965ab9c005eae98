"""The adapter boundary: domain errors become Airflow's types where Airflow calls us, privacy defaults apply there."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import traceback
from typing import Any

import pytest
from airflow.sdk import BaseOperator, BaseSensorOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from airflow.triggers.base import BaseTrigger

import airflow_mlops
from airflow_mlops.boundary import TaskBoundary, TriggerBoundary, airflow_error
from airflow_mlops.exceptions import DataValidationFailed, MLOpsError, SpecError, StoreUnavailable
from airflow_mlops.privacy import TELEMETRY_OFF

pytestmark = pytest.mark.adapter


class _Failing(TaskBoundary, BaseOperator):
    def __init__(self, error: Exception, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def execute(self, context: Any) -> None:
        raise self.error


class _StaleSensor(TaskBoundary, BaseSensorOperator):
    def poke(self, context: Any) -> bool:
        raise DataValidationFailed("features are 3 h old, allowed 1 h; run the feature DAG")


def _raised(operator: BaseOperator) -> BaseException:
    with pytest.raises(BaseException) as caught:
        operator.execute({})
    return caught.value


def test_a_no_retry_domain_error_leaves_execute_as_airflow_fail_exception_same_object_and_message() -> None:
    error = DataValidationFailed("batch b1: column fare is null in 12 rows; fix the producer")
    raised = _raised(_Failing(error=error, task_id="t"))
    assert raised is error and isinstance(raised, AirflowFailException) and isinstance(raised, DataValidationFailed)
    assert str(raised) == "batch b1: column fare is null in 12 rows; fix the producer"
    # the task log line reads as before: module, class name, message; one traceback, no "direct cause" chain
    last = traceback.format_exception(raised)[-1]
    assert last == "airflow_mlops.exceptions.DataValidationFailed: batch b1: column fare is null in 12 rows; " \
                   "fix the producer\n"
    assert raised.__cause__ is None


def test_a_retryable_domain_error_becomes_airflow_exception_but_not_fail_fast() -> None:
    error = StoreUnavailable("MLflow", "http://u:secret@mlflow:5000", "timed out after 3 s", "Check the server.")
    raised = _raised(_Failing(error=error, task_id="t"))
    assert isinstance(raised, AirflowException) and not isinstance(raised, AirflowFailException)
    assert "u:***@mlflow" in str(raised) and raised.url == "http://u:***@mlflow:5000"


def test_errors_that_are_not_ours_pass_unchanged() -> None:
    raised = _raised(_Failing(error=ValueError("not ours"), task_id="t"))
    assert type(raised) is ValueError


def test_domain_errors_themselves_are_plain_python() -> None:
    assert not issubclass(MLOpsError, AirflowException)
    spec_error = SpecError(["models/a.yaml: training.estimator: unknown 'Foo'"])
    assert airflow_error(spec_error) is spec_error and spec_error.problems == [
        "models/a.yaml: training.estimator: unknown 'Foo'"]


def test_a_soft_fail_sensor_still_skips_on_a_no_retry_error_from_poke() -> None:
    # BaseSensorOperator turns an AirflowFailException from poke into a skip when soft_fail is set:
    # poke itself is at the boundary, so that still happens.
    with pytest.raises(AirflowSkipException):
        _StaleSensor(task_id="s", soft_fail=True, timeout=5, poke_interval=1).execute({})
    with pytest.raises(AirflowFailException, match="features are 3 h old"):
        _StaleSensor(task_id="s", timeout=5, poke_interval=1).execute({})


def test_execute_applies_the_privacy_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TELEMETRY_OFF:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "false")  # the user's choice wins
    _raised(_Failing(error=ValueError("x"), task_id="t"))
    import os

    assert os.environ["DO_NOT_TRACK"] == "false"
    assert {name: os.environ.get(name) for name in TELEMETRY_OFF if name != "DO_NOT_TRACK"} == {
        name: value for name, value in TELEMETRY_OFF.items() if name != "DO_NOT_TRACK"}


def _our_classes(base: type) -> list[type]:
    found = []
    for package in ("operators", "sensors", "triggers"):
        root = importlib.import_module(f"airflow_mlops.{package}")
        for info in pkgutil.iter_modules(root.__path__):
            module = importlib.import_module(f"{root.__name__}.{info.name}")
            found += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                      if issubclass(cls, base) and cls.__module__.startswith(airflow_mlops.__name__)]
    return found


def test_every_operator_sensor_and_trigger_of_ours_is_at_the_boundary() -> None:
    from airflow_mlops.operators.kubernetes import operator_class

    operators = [*_our_classes(BaseOperator), operator_class()]
    triggers = _our_classes(BaseTrigger)
    assert len(operators) >= 20 and len(triggers) >= 5
    assert [cls.__name__ for cls in operators if not issubclass(cls, TaskBoundary)] == []
    assert [cls.__name__ for cls in triggers if not issubclass(cls, TriggerBoundary)] == []


def test_a_trigger_run_applies_the_privacy_defaults_and_returns_its_own_generator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_mlops.triggers.landing import LandingFileTrigger

    monkeypatch.delenv("FEAST_USAGE", raising=False)
    trigger = LandingFileTrigger(landing_dir="/nonexistent/landing", poll_interval=1)
    run = trigger.run()
    assert inspect.isasyncgen(run) and run.ag_code.co_name == "run"
    import os

    assert os.environ["FEAST_USAGE"] == TELEMETRY_OFF["FEAST_USAGE"]
    run.aclose().close()  # never started: nothing to clean up
