"""A stand-in task instance for calling an operator's execute() directly: it keeps XComs as strict JSON."""

from __future__ import annotations

import json
from typing import Any

from airflow_mlops.exceptions import DataValidationFailed


class FakeTI:
    dag_id, run_id, task_id = "mlops_features", "manual__2026-11-01T00:00:00+00:00", "validate_raw_batches"

    def __init__(self, run_id: str | None = None, task_id: str | None = None) -> None:
        self.xcom: dict[str, Any] = {}
        self.run_id = run_id or self.run_id
        self.task_id = task_id or self.task_id

    def xcom_push(self, key: str, value: Any) -> None:
        # allow_nan=False: what every JSON reader (the Airflow UI, the REST API) accepts
        self.xcom[key] = json.loads(json.dumps(value, allow_nan=False))


def run_operator(operator: Any, run_id: str | None = None) -> tuple[FakeTI, Any]:
    """(ti, result), or (ti, the DataValidationFailed raised) — the run id separates runs (retries share one)."""
    ti = FakeTI(run_id, operator.task_id)
    try:
        return ti, operator.execute({"ti": ti})
    except DataValidationFailed as exc:
        return ti, exc
