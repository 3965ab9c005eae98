"""Regression and multiclass through the whole training DAG (`dag.test()`): train, evaluate, register, promote; a
second run compared with the champion by the paired bootstrap; reproduce.

One program (tests/support/programs/task_training_runner.py) on the session's trained demo state, whose feature DAG
already landed the demo's `trips` (the shipped regression example ride_duration's label table) and materialized
the driver features: two runs of `ride_duration__train`, then the test model tests/support/task_specs/ride_tier.yaml
(multiclass; its estimator is a hand-written class with only the scikit-learn API, no scikit-learn base class) on
a label table derived from the demo rides, two runs of `ride_tier__train`. The binary model is the demo state's own
(tests/integration/test_training_dag.py and the rest).
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

import pytest

from airflow_mlops.core.tasks import METRICS_BY_TASK
from support.dag_runs import program
from support.demo_state import PROJECT, checkout_trained_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

TIERS = ["comfort", "economy", "premium"]  # the estimator's classes_: sorted


@pytest.fixture(scope="module")
def outcome() -> dict[str, Any]:
    demo = checkout_trained_demo()
    with tempfile.TemporaryDirectory(prefix="task-training-") as work:
        result, _ = demo.run(program("task_training_runner"), str(PROJECT / "tests"), work, timeout=1100)
    timings = {f"{task} {step}": result[task][step]["seconds"] for task in ("regression", "multiclass")
               for step in ("first", "second", "reproduced")}
    print(f"task training runs, seconds: {timings}")  # the CI cost of this module (docs/testing.md)
    return result


def promoted(run: dict[str, Any]) -> bool:
    return run["state"] == "success" and run["tasks"]["promote"] == "success"


def test_regression_trains_evaluates_registers_and_promotes(outcome: dict[str, Any]) -> None:
    first = outcome["regression"]["first"]
    assert promoted(first), first["tasks"]
    report = first["report"]
    assert report["task"] == "regression" and "positives" not in report and report["comparison"] is None
    assert set(report["challenger"]["metrics"]) == set(METRICS_BY_TASK["regression"])
    assert report["challenger"]["metrics"]["r2"] > 0.5  # the demo's duration depends on distance, hour, surge
    assert report["html_headings"] == ["Predicted vs actual", "Residuals"]
    assert report["curves"]["challenger"]["residuals"]["counts"]
    assert [check["metric"] for check in report["thresholds"]] == ["r2", "mape"]
    assert all("positives" not in group for entry in report["slices"] for group in entry["groups"])


def test_regression_second_run_is_compared_with_the_champion_lower_rmse_is_better(outcome: dict[str, Any]) -> None:
    second = outcome["regression"]["second"]
    assert second["state"] == "success", second["tasks"]
    comparison = second["report"]["comparison"]
    assert comparison["metric"] == "rmse" and comparison["higher_is_better"] is False
    assert comparison["samples_used"] == 500 and comparison["ci_low"] <= comparison["gain"] <= comparison["ci_high"]
    # the gain is signed so that positive is better: the champion's rmse minus the challenger's
    assert comparison["gain"] == pytest.approx(comparison["champion"] - comparison["challenger"])
    registry = outcome["regression"]["registry"]
    assert registry["aliases"]["champion"] == ("2" if second["tasks"]["promote"] == "success" else "1")
    assert set(registry["versions"]) == {"1", "2"}


def test_regression_versions_carry_the_task_and_a_double_signature(outcome: dict[str, Any]) -> None:
    registry = outcome["regression"]["registry"]
    for tags in registry["versions"].values():
        assert tags["airflow_mlops.task"] == "regression" and "airflow_mlops.classes" not in tags
    assert registry["predict_fn"] == "predict" and registry["metadata"]["task"] == "regression"
    [output] = json.loads(registry["signature"]["outputs"])
    assert output["type"] == "tensor" and output["tensor-spec"]["dtype"] == "float64"


def test_multiclass_trains_evaluates_registers_and_promotes(outcome: dict[str, Any]) -> None:
    multiclass = outcome["multiclass"]
    assert multiclass["landed"] > 1000
    first = multiclass["first"]
    assert promoted(first), first["tasks"]
    report = first["report"]
    assert report["task"] == "multiclass" and "positives" not in report
    assert set(report["challenger"]["metrics"]) == set(METRICS_BY_TASK["multiclass"])
    assert report["challenger"]["metrics"]["f1_macro"] > 0.4
    table = report["classes"]
    assert table["labels"] == TIERS and sum(table["counts"].values()) == report["rows"]
    matrix = table["confusion"]["challenger"]
    assert len(matrix) == 3 and sum(map(sum, matrix)) == report["rows"]
    assert set(table["recall"]["challenger"]) == set(TIERS)
    assert report["html_headings"] == ["Confusion matrix", "Per-class recall"]


def test_multiclass_second_run_is_compared_with_the_champion(outcome: dict[str, Any]) -> None:
    second = outcome["multiclass"]["second"]
    assert second["state"] == "success", second["tasks"]
    report = second["report"]
    comparison = report["comparison"]
    assert comparison["metric"] == "f1_macro" and comparison["higher_is_better"] is True
    assert comparison["samples_used"] > 0 and comparison["ci_low"] <= comparison["ci_high"]
    assert comparison["gain"] == pytest.approx(comparison["challenger"] - comparison["champion"])
    assert report["classes"]["confusion"]["champion"] is not None
    assert report["champion"]["version"] == "1"


def test_an_estimator_with_only_the_sklearn_api_registers_with_its_classes(outcome: dict[str, Any]) -> None:
    registry = outcome["multiclass"]["registry"]
    tags = registry["versions"]["1"]
    assert tags["airflow_mlops.task"] == "multiclass" and json.loads(tags["airflow_mlops.classes"]) == TIERS
    assert registry["predict_fn"] == "predict_proba" and registry["metadata"]["classes"] == TIERS
    outputs = json.loads(registry["signature"]["outputs"])
    assert [(o["name"], o["type"]) for o in outputs] == [(tier, "double") for tier in TIERS]


def test_reproduce_rebuilds_both_v1s_bitwise(outcome: dict[str, Any]) -> None:
    for task in ("regression", "multiclass"):
        reproduced = outcome[task]["reproduced"]
        assert reproduced["status"] == "identical", (task, reproduced)
        assert reproduced["rows"] > 100 and reproduced["max_abs_diff"] == 0.0



@pytest.mark.parametrize(("task", "scoring"), [("regression", "neg_root_mean_squared_error"),
                                               ("multiclass", "f1_macro")])
def test_every_version_is_explained_and_its_card_shows_the_drift_against_the_champion(
        outcome: dict[str, Any], task: str, scoring: str) -> None:
    first, second = outcome[task]["first"]["report"], outcome[task]["second"]["report"]
    for report in (first, second):
        importance = report["importance"]
        assert importance["scoring"] == scoring and importance["seed"] == 7, importance
        assert [f["rank"] for f in importance["features"]] == list(range(1, len(importance["features"]) + 1))
    assert first["card_explanations"]["top"][0] == first["importance"]["features"][0]
    assert "drift" not in first["card_explanations"]  # v1: nothing earlier to compare with
    drift = second["card_explanations"]["drift"]
    assert drift["against"] == "champion v1" and -1.0 <= drift["kendall_tau"] <= 1.0
    assert drift["top_previous"] == [f["feature"] for f in first["importance"]["features"][:5]]
