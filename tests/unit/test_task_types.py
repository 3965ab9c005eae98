"""How a spec's task is decided (spec > label contract > metrics > binary) and that metrics must fit it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from airflow_mlops.core.spec import parse_spec, spec_problems, spec_sha256
from airflow_mlops.core.tasks import METRICS_BY_TASK, decide_task, label_contract_task, tasks_of
from support.spec_edits import read_with_fields

pytestmark = pytest.mark.unit

DEMO_SPEC = Path(__file__).resolve().parents[2] / "include" / "models" / "ride_completion.yaml"


def _suite(tmp_path: Path, *expectations: dict, label: str | None = "y") -> Path:
    meta = {"airflow_mlops": {"dataset": "t", "label_column": label}} if label else {}
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"name": "t", "meta": meta, "expectations": list(expectations)}), encoding="utf-8")
    return path


def _in_set(*values: object, column: str = "y") -> dict:
    return {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": column, "value_set": list(values)}}


@pytest.mark.parametrize(
    ("expectations", "task"),
    [
        ([_in_set(0, 1)], "binary"),
        ([_in_set("cash", "card", "wallet")], "multiclass"),
        ([{"type": "expect_column_type_to_be", "kwargs": {"column": "y", "type_": "float64"}}], "regression"),
        ([{"type": "expect_column_values_to_be_between", "kwargs": {"column": "y", "min_value": 0}}], "regression"),
        # the 0.x key name of an expectation's type
        ([{"expectation_type": "expect_column_values_to_be_in_set", "kwargs": {"column": "y", "value_set": [1, 2, 3]}}],
         "multiclass"),
    ],
)
def test_label_contract_states_the_task(tmp_path: Path, expectations: list[dict], task: str) -> None:
    decision = label_contract_task(_suite(tmp_path, *expectations))
    assert decision is not None and decision.task == task
    assert "t.json" in decision.source and "'y'" in decision.source


@pytest.mark.parametrize(
    "expectations",
    [[], [_in_set(0, 1, column="other")], [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "y"}}]],
)
def test_a_contract_that_says_nothing_of_the_label_decides_nothing(tmp_path: Path, expectations: list[dict]) -> None:
    assert label_contract_task(_suite(tmp_path, *expectations)) is None
    assert label_contract_task(_suite(tmp_path, _in_set(0, 1), label=None)) is None
    assert label_contract_task(tmp_path / "absent.json") is None


def test_order_spec_then_contract_then_metrics_then_binary(tmp_path: Path) -> None:
    suite = _suite(tmp_path, _in_set(0, 1, 2))
    assert decide_task("regression", ["roc_auc"], suite).task == "regression"
    assert decide_task(None, ["rmse"], suite).task == "multiclass"
    assert decide_task(None, ["rmse"], None).task == "regression"
    assert decide_task(None, ["f1_macro", "accuracy"], None).task == "multiclass"
    assert decide_task(None, ["accuracy", "log_loss"], None).task == "binary"  # shared metrics keep the default
    default = decide_task(None, [], None)
    assert default.task == "binary" and default.source.startswith("default")


def test_every_metric_belongs_to_a_task() -> None:
    for names in METRICS_BY_TASK.values():
        assert all(tasks_of(name) for name in names)
    assert tasks_of("accuracy") == ("binary", "multiclass")


def test_demo_spec_is_binary_from_its_label_contract_and_keeps_its_hash() -> None:
    spec = parse_spec(DEMO_SPEC.read_text(encoding="utf-8"), str(DEMO_SPEC))
    assert spec.task == "binary" and "ride_completion_training.json" in spec.task_source
    explicit = parse_spec(yaml.safe_dump(read_with_fields(DEMO_SPEC, task="binary")), str(DEMO_SPEC))
    assert spec_sha256(explicit) == spec_sha256(spec)  # binary was the only task: it does not enter the hash


def test_metric_defaults_follow_the_task() -> None:
    data = read_with_fields(DEMO_SPEC, task="regression", validation={},
                            evaluation={"thresholds": {"r2": {"min": 0.1}}})
    spec = parse_spec(yaml.safe_dump(data), str(DEMO_SPEC))
    assert spec.evaluation.primary_metric == "rmse"
    assert spec.evaluation.metrics == ("rmse", "mae", "r2", "mape")
    assert spec.task_source == "spec: task"


def test_a_metric_of_another_task_is_named_with_the_task_and_the_allowed_ones() -> None:
    data = read_with_fields(DEMO_SPEC, task="regression")  # the demo names roc_auc, accuracy, f1, log_loss
    (problem,) = spec_problems(yaml.safe_dump(data), "/specs/ride_completion.yaml")
    assert "evaluation.primary_metric: ['roc_auc'] are not regression metrics" in problem
    assert "evaluation.thresholds: ['roc_auc']" in problem
    assert "allowed: ['rmse', 'mae', 'r2', 'mape']" in problem


def test_task_source_and_unknown_task_are_refused() -> None:
    reserved = spec_problems(yaml.safe_dump(read_with_fields(DEMO_SPEC, task_source="x")), "/s/a.yaml")
    assert "reserved field" in reserved[0]
    problems = spec_problems(yaml.safe_dump(read_with_fields(DEMO_SPEC, task="classification")),
                             "/specs/ride_completion.yaml")
    assert any("task: got 'classification'" in p and "'multiclass'" in p for p in problems)
