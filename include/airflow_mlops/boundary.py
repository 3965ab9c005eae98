"""Where Airflow runs our code: privacy defaults on, domain errors raised as Airflow's exception types.

Domain errors (`airflow_mlops.exceptions`) are plain Python exceptions that carry `retry`; Airflow
decides a task's retry by the exception's type (AirflowFailException: fail at once; AirflowException
or anything else: retry when retries are left; in a sensor with `soft_fail` an AirflowFailException
from `poke` or an AirflowException from `execute_complete` becomes a skip). This module is the one
place that translates, so core and serving never import Airflow (ARCHITECTURE.md §3).

`TaskBoundary` is a mixin of every operator and sensor class of ours; its `__init_subclass__` wraps
the methods Airflow calls (`execute`, `poke`, `execute_complete`) where a class defines them, so
execute bodies stay as they are. `TriggerBoundary` does the same for a trigger's `run` (the
triggerer turns a failed trigger into a task failure itself: privacy defaults only).

The error is re-typed in place, not wrapped: the raised object becomes an instance of a subclass of
both its own class and Airflow's, with the same module and name. Callers that catch the domain type
still catch it, the task log shows the same `DataValidationFailed: ...` line with one traceback, and
Airflow's task runner sees its own type.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_mlops import privacy
from airflow_mlops.exceptions import MLOpsError

_AIRFLOW_TYPES: dict[tuple[type[MLOpsError], type[AirflowException]], type[MLOpsError]] = {}


def airflow_error(exc: MLOpsError) -> MLOpsError:
    """`exc` re-typed in place as AirflowFailException (`exc.retry` False) or AirflowException."""
    airflow_type = AirflowException if exc.retry else AirflowFailException
    if isinstance(exc, airflow_type):
        return exc
    domain_type = type(exc)
    key = (domain_type, airflow_type)
    if key not in _AIRFLOW_TYPES:
        _AIRFLOW_TYPES[key] = type(domain_type.__name__, (domain_type, airflow_type), {
            "__module__": domain_type.__module__, "__qualname__": domain_type.__qualname__,
            "__doc__": domain_type.__doc__})
    exc.__class__ = _AIRFLOW_TYPES[key]
    return exc


@contextmanager
def airflow_boundary() -> Iterator[None]:
    """Apply the privacy defaults, run the block, raise a domain error as Airflow's exception type."""
    privacy.disable_telemetry()
    try:
        yield
    except MLOpsError as exc:
        raise airflow_error(exc)  # noqa: B904 - the same object, re-typed: no second traceback


def _task_method(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def at_boundary(self: Any, *args: Any, **kwargs: Any) -> Any:
        with airflow_boundary():
            return method(self, *args, **kwargs)

    at_boundary.__mlops_boundary__ = True  # type: ignore[attr-defined]
    return at_boundary


def _trigger_run(run: Callable[..., Any]) -> Callable[..., Any]:
    # Returns run's own async generator (no proxy generator), so cancellation and aclose() reach it directly.
    @functools.wraps(run)
    def at_boundary(self: Any, *args: Any, **kwargs: Any) -> Any:
        privacy.disable_telemetry()
        return run(self, *args, **kwargs)

    at_boundary.__mlops_boundary__ = True  # type: ignore[attr-defined]
    return at_boundary


def _wrap_own(cls: type, names: tuple[str, ...], wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    for name in names:
        method = cls.__dict__.get(name)
        if callable(method) and not getattr(method, "__mlops_boundary__", False):
            setattr(cls, name, wrap(method))


class TaskBoundary:
    """Mixin (first base) of our operators and sensors: their Airflow entry points run at the boundary."""

    BOUNDARY_METHODS: ClassVar[tuple[str, ...]] = ("execute", "poke", "execute_complete")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _wrap_own(cls, cls.BOUNDARY_METHODS, _task_method)


class TriggerBoundary:
    """Mixin (first base) of our triggers: `run` starts with the privacy defaults applied."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _wrap_own(cls, ("run",), _trigger_run)
