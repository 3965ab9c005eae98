"""core.model_card from a real EvaluationResult; no MLflow, no Airflow runtime."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.evaluation import evaluate
from airflow_mlops.core.model_card import build_model_card, render_html, render_markdown

pytestmark = pytest.mark.unit

ROWS = 1500
MODEL = {
    "name": "ride_completion",
    "description": "Predicts ride completion <script>alert('x')</script>",
    "owner": "ml-team",
    "intended_use": "Rank ride requests by completion odds.",
    "limitations": "Trained on city A | B only.",
    "tags": ["demo", "rides"],
}
TRAINING = {
    "estimator": "sklearn.linear_model.LogisticRegression",
    "params": {"max_iter": 200},
    "preprocessing": {"impute": "median", "scale": False},
    "split": {"method": "time", "test_size": 0.2},
    "seed": 7,
    "feature_columns": ["conv_rate", "acc_rate", "trip_distance_km"],
}
VALIDATION = {
    "suite": "rides_training",
    "dataset": "training_set",
    "success": False,
    "rows": 12000,
    "statistics": {"evaluated_rules": 12, "successful_rules": 11, "unsuccessful_rules": 1, "success_percent": 91.67},
    "failures": [
        {
            "rule": "expect_column_values_to_not_be_null",
            "column": "acc_rate",
            "kwargs": {},
            "unexpected_count": 340,
            "unexpected_percent": 2.8,
            "sample": [],
            "detail": "",
        },
    ],
    "failure_count": 1,
}
LINEAGE = {
    "path": "/state/training_sets/ride_completion/abc.parquet",
    "sha256": "ab" * 32,
    "rows": 12000,
    "start": "2026-01-01T00:00:00+00:00",
    "end": "2026-01-31T00:00:00+00:00",
    "feature_service": "ride_completion_v1",
    "feature_views": {"driver_hourly_stats": {"version": 2, "spec_sha256": "5f1c0a", "features": ["conv_rate"]}},
    "missing": {"acc_rate": 340, "conv_rate": 0},
    "validation": VALIDATION,
}


@pytest.fixture(scope="module")
def result() -> dict:
    rng = np.random.default_rng(8)
    y = (rng.random(ROWS) < 0.5).astype(int)
    signal = 2.0 * y - 1.0
    good = 1 / (1 + np.exp(-(1.5 * signal + rng.normal(0, 1, ROWS))))
    worse = 1 / (1 + np.exp(-(0.5 * signal + rng.normal(0, 1, ROWS))))
    city = rng.choice(["north", "south"], ROWS).astype(object)
    city[:20] = "harbour"
    frame = pd.DataFrame({"city": city, "hour": rng.uniform(0, 24, ROWS)})
    return evaluate(
        y,
        good,
        worse,
        metrics=["roc_auc", "accuracy"],
        primary_metric="roc_auc",
        thresholds={"roc_auc": {"min": 0.7}},
        bootstrap_samples=100,
        slices=[{"column": "city"}, {"column": "hour", "bins": [6, 18]}, {"column": "zone"}],
        slice_frame=frame,
        champion_version="3",
        challenger_version="4",
    ).to_dict()


@pytest.fixture(scope="module")
def card(result) -> dict:
    return build_model_card(
        model=MODEL, version="4", run_id="r123", lineage=LINEAGE, evaluation=result, training=TRAINING
    )


def test_card_gathers_every_section(card, result) -> None:
    assert card["model"] == {
        **{k: MODEL[k] for k in ("name", "description", "owner")},
        "tags": ["demo", "rides"],
        "version": "4",
        "run_id": "r123",
    }
    assert card["training"]["estimator"] == TRAINING["estimator"]
    assert card["data"]["missing"] == {"acc_rate": 340}  # zero counts dropped
    assert card["data"]["feature_views"][0]["name"] == "driver_hourly_stats"
    assert card["validation"]["suite"] == "rides_training" and card["validation"]["success"] is False
    assert card["validation"]["failures"] == ["column 'acc_rate': expect_column_values_to_not_be_null: 340 unexpected"]
    assert card["comparison"] == result["comparison"] and card["verdict"] == result["verdict"]
    assert [m["metric"] for m in card["evaluation"]["metrics"]] == ["roc_auc", "accuracy"]
    json.dumps(card, allow_nan=False)


def test_worst_slice_skips_small_groups_and_is_called_out(card) -> None:
    city, hour, zone = card["evaluation"]["slices"]
    assert city["small"] == ["harbour"] and city["worst"]["group"] in ("north", "south")
    assert hour["groups"] == 3 and hour["worst"]["group"] in ("< 6", "[6, 18)", ">= 18")
    assert "'zone' is not in the evaluation rows" in zone["error"] and zone["worst"] is None
    worst = card["evaluation"]["worst_slice"]
    candidates = [city["worst"], hour["worst"]]
    assert worst == max(candidates, key=lambda w: w["shortfall"])
    assert worst["overall"] == card["evaluation"]["metrics"][0]["challenger"]
    markdown = render_markdown(card)
    assert f"Worst slice: {worst['column']} = {html.escape(worst['group'])}" in markdown  # "< 6" -> "&lt; 6"


def test_caveats_name_small_slices_missing_features_and_failed_validation(card) -> None:
    caveats = "\n".join(card["caveats"])
    assert "feature acc_rate is missing in 340 training rows (2.8 %); imputed (median)" in caveats
    assert "slice city: group(s) ['harbour'] have fewer than evaluation.min_slice_rows rows" in caveats
    assert "the training set failed data validation (1 failure(s))" in caveats
    assert "slice zone:" in caveats


def test_markdown_has_every_section_and_escapes_markup(card) -> None:
    markdown = render_markdown(card)
    for heading in (
        "Model details",
        "Intended use",
        "Limitations",
        "Training data and lineage",
        "Data validation",
        "Evaluation",
        "Comparison with the champion and verdict",
        "Caveats",
    ):
        assert f"\n## {heading}\n" in markdown
    assert markdown.startswith("# Model card: ride_completion v4\n")
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown
    assert "| driver_hourly_stats | 2 | 5f1c0a | 1 |" in markdown
    assert "- **evaluated rules**: 12" in markdown and "gain +" in markdown and "Verdict: promote." in markdown


def test_html_is_offline_and_escapes_the_description(card) -> None:
    page = render_html(card)
    assert "<script" not in page and "Predicts ride completion &lt;script&gt;" in page
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=""", page, re.I)
    assert "<svg" in page and "Trained on city A | B only." in page
    assert page.count("<h2>") == 9  # ... and Explanations (core/model_card_explanations.py)


def test_a_first_model_with_partial_inputs_still_gets_a_card() -> None:
    y = np.array([0, 1] * 50)
    first = evaluate(y, np.linspace(0, 1, 100), metrics=["roc_auc"], primary_metric="roc_auc").to_dict()
    card = build_model_card(
        model={"name": "m"}, version=None, run_id=None, lineage=None, evaluation=first, training=None
    )
    assert card["comparison"] is None and card["validation"] is None and card["evaluation"]["worst_slice"] is None
    caveats = "\n".join(card["caveats"])
    assert "first model (no champion)" in caveats and "data validation of the training set not recorded" in caveats
    assert "training-set lineage not recorded" in caveats
    markdown = render_markdown(card)
    assert "# Model card: m v?" in markdown and "No champion: this is the first model version" in markdown
    assert "Data validation: not recorded." in markdown and "## Intended use\n\nnot recorded" in markdown
    assert "<svg" in render_html(card)


def test_no_evaluation_at_all_is_said_plainly() -> None:
    card = build_model_card(model={"name": "m"}, version="1", run_id=None, lineage={}, evaluation={})
    assert card["caveats"][0].startswith("evaluation not recorded")
    assert "Evaluation: not recorded." in render_markdown(card)
    assert "Verdict: not recorded." in render_html(card)


def test_raw_gx_results_are_summarised_too() -> None:
    raw = {
        "success": False,
        "statistics": {"evaluated_expectations": 2},
        "results": [
            {"success": True, "expectation_config": {"type": "expect_column_to_exist", "kwargs": {"column": "a"}}},
            {
                "success": False,
                "expectation_config": {"type": "expect_column_values_to_be_between", "kwargs": {"column": "b"}},
            },
        ],
    }
    card = build_model_card(model={"name": "m"}, version="1", run_id=None, lineage={"validation": raw}, evaluation={})
    assert card["validation"]["failures"] == ["column 'b': expect_column_values_to_be_between"]
    assert card["validation"]["failure_count"] == 1


def test_lower_is_better_primary_metric_picks_the_highest_loss_as_worst() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(600) < 0.5).astype(int)
    p = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.1, 600), 0.01, 0.99)
    p[:300] = np.clip(p[:300] + rng.normal(0, 0.3, 300), 0.01, 0.99)  # the first half is noisier
    frame = pd.DataFrame({"part": ["noisy"] * 300 + ["clean"] * 300})
    result = evaluate(
        y, p, metrics=["log_loss"], primary_metric="log_loss", slices=[{"column": "part"}], slice_frame=frame
    ).to_dict()
    card = build_model_card(model={"name": "m"}, version="1", run_id=None, lineage={}, evaluation=result)
    worst = card["evaluation"]["worst_slice"]
    assert worst["group"] == "noisy" and worst["value"] > worst["overall"] and worst["shortfall"] > 0
