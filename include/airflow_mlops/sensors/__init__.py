"""Sensors: waits on Feast state (feature freshness) and the MLflow registry (alias moves).

Each sensor runs in poke, reschedule or deferrable mode. In deferrable mode its trigger ends the
wait itself at a deadline and reports a "done" or a "timed out" status; the helpers below are the
plumbing the sensors share for that: defer with the deadline, then turn the trigger's event back
into a result or a sensor timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from airflow.sdk import BaseSensorOperator
    from airflow.triggers.base import BaseTrigger

# The trigger ends the wait itself at the deadline; Airflow's own deferral timeout is only a backstop.
DEFERRAL_GRACE = timedelta(minutes=5)


def defer_until_deadline(sensor: BaseSensorOperator, trigger_for: Callable[[str], BaseTrigger]) -> NoReturn:
    """Defer `sensor` to `trigger_for(deadline)` (ISO time `sensor.timeout` from now), resuming in execute_complete."""
    deadline = datetime.now(UTC) + timedelta(seconds=sensor.timeout)
    sensor.defer(
        trigger=trigger_for(deadline.isoformat()),
        method_name="execute_complete",
        timeout=timedelta(seconds=sensor.timeout) + timedelta(seconds=sensor.poke_interval) + DEFERRAL_GRACE,
    )


def completed_event(sensor: BaseSensorOperator, event: dict[str, Any] | None, *, done: str, timed_out: str,
                    timeout_prefix: str) -> dict[str, Any]:
    """The trigger's event when its status is `done`; a sensor timeout when `timed_out`; else MLOpsError."""
    from airflow.sdk.exceptions import AirflowSensorTimeout

    from airflow_mlops.exceptions import MLOpsError

    status = (event or {}).get("status")
    message = (event or {}).get("message", f"no event from the trigger: {event!r}")
    if status == done and event is not None:
        sensor.log.info("%s", message)
        return event
    if status == timed_out:
        # BaseSensorOperator.resume_execution turns this into a skip when soft_fail is set.
        raise AirflowSensorTimeout(f"{timeout_prefix}{message}")
    raise MLOpsError(message)
