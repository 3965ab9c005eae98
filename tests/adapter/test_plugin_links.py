"""The operators' extra links (plugin/links.py) read their XCom only for a task that succeeded."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.adapter


def test_links_of_a_task_that_did_not_succeed_ask_for_no_xcom(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each missing-XCom lookup is an error-level "XCom not found" line in the task output."""
    from types import SimpleNamespace

    from airflow.sdk.execution_time.xcom import XCom

    from airflow_mlops.plugin.links import ModelPageLink, ModelVersionLink

    asked: list[str] = []
    monkeypatch.setattr(XCom, "get_value", classmethod(lambda cls, *, ti_key, key: asked.append(key) or {
        "run_id": "r1", "name": "m", "version": "3"}))
    operator = SimpleNamespace(model_name="m")
    for state in ("failed", "skipped", "up_for_retry"):
        ti = SimpleNamespace(state=state, task_id="t", dag_id="d", run_id="x", map_index=-1)
        assert ModelPageLink().get_link(operator, ti_key=ti) == ""  # type: ignore[arg-type]
    assert asked == []
    done = SimpleNamespace(state="success", task_id="t", dag_id="d", run_id="x", map_index=-1)
    assert "mlflow_run=r1" in ModelPageLink().get_link(operator, ti_key=done)  # type: ignore[arg-type]
    assert "version=3" in ModelVersionLink().get_link(operator, ti_key=done)  # type: ignore[arg-type]
    assert asked == ["return_value", "return_value"]
