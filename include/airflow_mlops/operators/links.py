"""Operator extra links to the Models pages and reports (the UI plugin's plugin/ui.py serves the targets).

Airflow 3 computes a task's links when the task finishes (the task runner calls `get_link` for each
link the operator class declares and stores the URL as XCom `_link_<ClassName>`), so each operator
declares its links itself: `operator_extra_links = (ModelPageLink(),)`. A link is '' (hidden) when
the task pushed nothing to link to — a failed or skipped task.

Links read the task's return value (XCom `return_value`) and the operator's rendered `model_name`;
the URL goes through `operators.validation.under_base_url` (Airflow behind a sub-path). Imports:
only airflow.sdk, at module level (task processes import this with every operator module).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from airflow_mlops.core.ui_urls import model_url

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def finished_without_result(ti_key: Any) -> bool:
    """True when the task runner computes links for a task that did not succeed: it pushed no result.

    The runner passes the task instance itself, its final state set; asking for the missing XCom would
    still answer None, but the supervisor logs each 404 as an error-level "XCom not found" line.
    """
    state = getattr(ti_key, "state", None)
    return state is not None and str(getattr(state, "value", state)) != "success"


def _result(ti_key: TaskInstanceKey) -> Mapping[str, Any]:
    from airflow.sdk.execution_time.xcom import XCom

    if finished_without_result(ti_key):
        return {}
    value = XCom.get_value(ti_key=ti_key, key="return_value")
    return value if isinstance(value, Mapping) else {}


def _link(url: str) -> str:
    from airflow_mlops.operators.validation import under_base_url

    return under_base_url(url) if url else ""


class ModelPageLink(BaseOperatorLink):
    """Training: the model page, where the version this run becomes appears with its lineage."""

    name = "Model page"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        run_id = _result(ti_key).get("run_id")
        model = getattr(operator, "model_name", None)
        return _link(model_url(model, f"?mlflow_run={quote(str(run_id), safe='')}") if model and run_id else "")


def _challenger_run(operator: BaseOperator) -> str | None:
    """The MLflow run the operator evaluated (its rendered `challenger` argument: a dict or JSON text)."""
    import json

    value = getattr(operator, "challenger", None)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return str(value["run_id"]) if isinstance(value, Mapping) and value.get("run_id") else None


class EvaluationReportLink(BaseOperatorLink):
    """Evaluation: the challenger's evaluation report (HTML artifact of its MLflow run).

    Also when the task failed (a missed threshold raises before returning): the report was logged
    first, and the run id comes from the operator's own `challenger` argument.
    """

    name = "Evaluation report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        run_id = _result(ti_key).get("run_id") or _challenger_run(operator)
        model = getattr(operator, "model_name", None)
        if not (model and run_id):
            return ""
        return _link(model_url(model, f"/runs/{quote(str(run_id), safe='')}/evaluation"))


class ModelVersionLink(BaseOperatorLink):
    """Registration: the model page opened on the registered version (timeline, card, audit)."""

    name = "Model version"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        result = _result(ti_key)
        model = result.get("name") or getattr(operator, "model_name", None)
        version = result.get("version")
        return _link(model_url(str(model), f"?version={quote(str(version), safe='')}") if model and version else "")


class DriftHistoryLink(BaseOperatorLink):
    """Drift check: the model page's drift chart (every check over time, with each report)."""

    name = "Drift history"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        model = getattr(operator, "model_name", None)
        return _link(model_url(model, "#drift") if model and _result(ti_key) else "")


__all__ = ["OPERATOR_LINKS", "DriftHistoryLink", "EvaluationReportLink", "ModelPageLink", "ModelVersionLink",
           "finished_without_result", "model_url"]

OPERATOR_LINKS = (ModelPageLink, EvaluationReportLink, ModelVersionLink, DriftHistoryLink)
