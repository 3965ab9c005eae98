"""core.evaluation and core.evaluation_report with real numpy/sklearn data; no MLflow, no Airflow runtime."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core import evaluation_report
from airflow_mlops.core.evaluation import evaluate, paired_bootstrap
from airflow_mlops.core.spec import Evaluation

pytestmark = pytest.mark.unit

ROWS = 2000
METRICS = ["roc_auc", "accuracy", "log_loss"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """Labels and two models on the same rows: `good` sees the signal through less noise than `worse`."""
    rng = np.random.default_rng(42)
    y = (rng.random(ROWS) < 0.4).astype(int)
    signal = 2.0 * y - 1.0
    return {
        "y": y,
        "good": _sigmoid(1.5 * signal + rng.normal(0, 1.0, ROWS)),
        "worse": _sigmoid(0.6 * signal + rng.normal(0, 1.5, ROWS)),
    }


def run(data: dict, challenger: str, champion: str | None = None, **kwargs):
    options = {"metrics": METRICS, "primary_metric": "roc_auc", "bootstrap_samples": 300, **kwargs}
    return evaluate(data["y"], data[challenger], data[champion] if champion else None, **options)


def test_no_champion_is_judged_on_thresholds_alone(data) -> None:
    result = run(data, "good", thresholds={"roc_auc": {"min": 0.7}}, challenger_version="1")
    assert result.champion is None and result.comparison is None
    assert result.verdict["beats_champion"] is None
    assert result.verdict["passed_thresholds"] is True and result.promote is True
    assert "no champion yet: judged on thresholds alone" in result.verdict["reasons"]
    assert result.curves["champion"] is None
    assert set(result.challenger["metrics"]) == set(METRICS)


def test_a_clearly_better_challenger_is_promoted(data) -> None:
    result = run(data, "good", "worse", champion_version="3", challenger_version="4")
    c = result.comparison
    assert c["metric"] == "roc_auc" and c["higher_is_better"] is True
    assert c["gain"] == pytest.approx(c["challenger"] - c["champion"])
    assert 0 < c["ci_low"] <= c["gain"] <= c["ci_high"]
    assert c["samples_used"] == 300 and c["confidence"] == 0.95
    assert result.verdict == {**result.verdict, "beats_champion": True, "promote": True}
    assert any("beats the champion" in r for r in result.verdict["reasons"])
    assert "PROMOTE" in result.summary() and "Champion 3" in result.summary()


def test_identical_models_do_not_churn_the_champion_but_pass_non_regression(data) -> None:
    same = run(data, "good", "good")
    c = same.comparison
    assert (c["gain"], c["ci_low"], c["ci_high"]) == (0.0, 0.0, 0.0)
    assert same.verdict["beats_champion"] is False and same.promote is False
    [reason] = [r for r in same.verdict["reasons"] if "gain" in r]
    assert reason == (
        "roc_auc gain +0.0000 (95% CI [+0.0000, +0.0000]) is not above 0; rule improvement needs the CI's "
        "lower bound > 0 and gain >= 0.0 (evaluation.min_improvement)"
    )
    lenient = run(data, "good", "good", rule="non_regression")
    assert lenient.verdict["beats_champion"] is True and lenient.promote is True


def test_a_worse_challenger_is_refused_with_its_reason(data) -> None:
    result = run(data, "worse", "good")
    assert result.comparison["gain"] < 0 and result.comparison["ci_high"] < 0
    assert result.verdict["passed_thresholds"] is True
    assert result.verdict["beats_champion"] is False and result.promote is False
    assert any(r.startswith("roc_auc gain -") and "is not above 0" in r for r in result.verdict["reasons"])
    regression = run(data, "worse", "good", rule="non_regression", max_regression=0.01)
    assert regression.promote is False
    assert any("shows a regression" in r and "evaluation.max_regression" in r for r in regression.verdict["reasons"])


def test_min_improvement_is_required_on_top_of_a_positive_ci(data) -> None:
    gain = run(data, "good", "worse").comparison["gain"]
    result = run(data, "good", "worse", min_improvement=round(gain + 0.05, 2))
    assert result.comparison["ci_low"] > 0 and result.promote is False
    assert any("below the minimum improvement" in r for r in result.verdict["reasons"])


def test_threshold_failures_name_the_spec_field(data) -> None:
    result = run(data, "worse", thresholds={"roc_auc": {"min": 0.99}, "log_loss": {"max": 0.1}, "accuracy": {}})
    auc, loss, accuracy = result.thresholds
    assert auc["passed"] is False and auc["min"] == 0.99 and auc["max"] is None
    assert auc["reason"] == (
        f"roc_auc {auc['value']:.4g} is below the minimum 0.99 (evaluation.thresholds.roc_auc.min; higher is better)"
    )
    assert loss["passed"] is False and loss["reason"].endswith("(evaluation.thresholds.log_loss.max; lower is better)")
    assert accuracy["passed"] is True
    assert result.verdict["passed_thresholds"] is False and result.promote is False
    assert result.verdict["reasons"][:2] == [auc["reason"], loss["reason"]]


def test_an_undefined_metric_fails_its_threshold_and_says_so() -> None:
    y = np.zeros(60, dtype=int)
    result = evaluate(
        y, np.linspace(0, 1, 60), metrics=["roc_auc"], primary_metric="roc_auc", thresholds={"roc_auc": {"min": 0.5}}
    )
    [check] = result.thresholds
    assert check["passed"] is False and math.isnan(check["value"])
    assert "NaN" in check["reason"] and "evaluation.thresholds.roc_auc" in check["reason"]
    assert result.to_dict()["thresholds"][0]["value"] is None
    assert result.curves["challenger"] is None


def test_lower_is_better_metric_gain_is_positive_when_the_challenger_is_better(data) -> None:
    better = run(data, "good", "worse", primary_metric="log_loss", bootstrap_samples=60)
    c = better.comparison
    assert c["higher_is_better"] is False and c["challenger"] < c["champion"]
    assert c["gain"] == pytest.approx(c["champion"] - c["challenger"]) and c["gain"] > 0
    assert c["ci_low"] > 0 and better.promote is True
    worse = run(data, "worse", "good", primary_metric="log_loss", bootstrap_samples=60)
    assert worse.comparison["gain"] < 0 and worse.promote is False


def test_bootstrap_is_deterministic_for_a_seed(data) -> None:
    first = paired_bootstrap(data["y"], data["good"], data["worse"], "roc_auc", samples=200, seed=11)
    again = paired_bootstrap(data["y"], data["good"], data["worse"], "roc_auc", samples=200, seed=11)
    other = paired_bootstrap(data["y"], data["good"], data["worse"], "roc_auc", samples=200, seed=12)
    assert first == again
    assert (first["ci_low"], first["ci_high"]) != (other["ci_low"], other["ci_high"])


def test_fast_bootstrap_auc_equals_sklearn_on_the_same_resamples(data) -> None:
    """The rank-based AUC must match roc_auc_score exactly, ties included (probabilities rounded)."""
    from sklearn.metrics import roc_auc_score  # here, not at the top: collection stays fast

    y, a, b = data["y"], np.round(data["good"], 2), np.round(data["worse"], 2)
    got = paired_bootstrap(y, a, b, "roc_auc", samples=40, seed=5, confidence=0.9)
    rng = np.random.default_rng(5)
    gains = []
    for _ in range(40):
        idx = rng.integers(0, len(y), len(y))
        gains.append(roc_auc_score(y[idx], a[idx]) - roc_auc_score(y[idx], b[idx]))
    low, high = np.percentile(gains, [5, 95])
    assert got["ci_low"] == pytest.approx(low, abs=1e-12) and got["ci_high"] == pytest.approx(high, abs=1e-12)


def test_resamples_with_one_class_are_skipped_and_counted() -> None:
    y = np.zeros(30, dtype=int)
    y[0] = 1  # most resamples of 30 rows miss the only positive
    p = np.linspace(0.1, 0.9, 30)
    got = paired_bootstrap(y, p, p[::-1], "roc_auc", samples=100, seed=1)
    assert 0 < got["samples_used"] < got["samples_requested"] == 100


@pytest.fixture(scope="module")
def sliced(data) -> tuple[pd.DataFrame, object]:
    rng = np.random.default_rng(3)
    hours = rng.uniform(-3, 27, ROWS)
    hours[:40] = np.nan
    hours[40:45] = [0, 6, 24, -0.5, 23.999]
    frame = pd.DataFrame(
        {
            "hour": hours,
            "city": np.where(np.arange(ROWS) < 30, "tiny", rng.choice(["north", "south"], ROWS)).astype(object),
            "distance": rng.random(ROWS),
            "driver": [f"d{i}" for i in range(ROWS)],
        }
    )
    frame.loc[25:29, "city"] = None  # .loc is inclusive: rows 25-29
    slices = [
        {"column": "hour", "bins": [0, 6, 12, 18, 24]},
        {"column": "city", "bins": None},
        {"column": "distance"},
        {"column": "pickup_zone"},
        {"column": "driver"},
        {"column": "city", "bins": [0, 1]},
    ]
    result = run(data, "good", "worse", slices=slices, slice_frame=frame, min_slice_rows=50)
    return frame, result


def test_slices_with_bins_have_open_ends_and_a_missing_group(sliced) -> None:
    frame, result = sliced
    hour = result.slices[0]
    assert hour["column"] == "hour" and hour["bins"] == [0, 6, 12, 18, 24] and "error" not in hour
    names = [g["group"] for g in hour["groups"]]
    assert names == ["< 0", "[0, 6)", "[6, 12)", "[12, 18)", "[18, 24)", ">= 24", "missing"]
    counts = {g["group"]: g["rows"] for g in hour["groups"]}
    values = frame["hour"]
    assert counts["< 0"] == (values < 0).sum() and counts[">= 24"] == (values >= 24).sum()
    assert counts["[0, 6)"] == ((values >= 0) & (values < 6)).sum()
    assert counts["missing"] == 40 and sum(counts.values()) == ROWS
    group = hour["groups"][1]
    assert set(group["challenger"]) == set(METRICS) and set(group["champion"]) == set(METRICS)
    assert group["positives"] == int(result_labels(result, frame, (values >= 0) & (values < 6)))


def result_labels(result, frame, mask) -> int:
    """Positives in `mask`, recomputed from the fixture's labels (same seed, same rows)."""
    rng = np.random.default_rng(42)
    y = (rng.random(ROWS) < 0.4).astype(int)
    return y[np.asarray(mask)].sum()


def test_slices_by_value_flag_small_groups_and_missing(sliced) -> None:
    _, result = sliced
    city = {g["group"]: g for g in result.slices[1]["groups"]}
    assert list(city) == ["north", "south", "tiny", "missing"]
    assert city["tiny"]["rows"] == 25 and city["tiny"]["small"] is True
    assert city["missing"]["rows"] == 5 and city["missing"]["small"] is True
    assert city["north"]["small"] is False


def test_too_many_values_fall_back_to_quartiles_with_a_note(sliced) -> None:
    _, result = sliced
    distance = result.slices[2]
    assert "quartile bins" in distance["note"] and "evaluation.slices[].bins" in distance["note"]
    assert len(distance["groups"]) == 4 and {g["rows"] for g in distance["groups"]} <= {499, 500, 501}
    assert distance["groups"][0]["group"].startswith("< 0.")
    text = result.slices[4]
    assert "2000 distinct values" in text["error"] and "not numeric" in text["error"]


def test_a_missing_or_unusable_slice_column_is_reported_not_raised(sliced) -> None:
    _, result = sliced
    missing = result.slices[3]
    assert missing["column"] == "pickup_zone" and "groups" not in missing
    assert "'pickup_zone' is not in the evaluation rows" in missing["error"]
    assert "['city', 'distance', 'driver', 'hour']" in missing["error"]
    assert "bins need numbers" in result.slices[5]["error"]


def test_slices_without_a_frame_say_so(data) -> None:
    result = run(data, "good", slices=[{"column": "hour", "bins": None}])
    assert "no slice_frame" in result.slices[0]["error"]


def test_to_dict_is_strict_json_and_round_trips(sliced) -> None:
    _, result = sliced
    as_dict = result.to_dict()
    text = json.dumps(as_dict, allow_nan=False)
    assert json.loads(text) == as_dict
    assert set(as_dict) == {
        "rows",
        "positives",
        "primary_metric",
        "challenger",
        "champion",
        "thresholds",
        "comparison",
        "slices",
        "verdict",
        "curves",
    }
    assert type(as_dict["positives"]) is int
    for name in ("challenger", "champion"):
        curve = as_dict["curves"][name]
        assert 2 < len(curve["fpr"]) == len(curve["tpr"]) <= 200
        assert (curve["fpr"][0], curve["tpr"][0], curve["fpr"][-1], curve["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)


def test_spec_objects_are_accepted(data) -> None:
    spec = Evaluation.model_validate(
        {
            "primary_metric": "roc_auc",
            "thresholds": {"roc_auc": {"min": 0.6}},
            "slices": [{"column": "x", "bins": [0.25, 0.75]}],
            "bootstrap_samples": 50,
        }
    )
    frame = pd.DataFrame({"x": np.random.default_rng(0).random(ROWS)})
    result = evaluate(
        data["y"],
        np.column_stack([1 - data["good"], data["good"]]),
        data["worse"],
        metrics=spec.metrics,
        primary_metric=spec.primary_metric,
        thresholds=spec.thresholds,
        rule=spec.rule,
        bootstrap_samples=spec.bootstrap_samples,
        slices=spec.slices,
        slice_frame=frame,
    )
    assert result.thresholds[0]["min"] == 0.6 and result.promote is True
    assert [g["group"] for g in result.slices[0]["groups"]] == ["< 0.25", "[0.25, 0.75)", ">= 0.75"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"challenger_proba": np.zeros(5)}, "challenger_proba has shape (5,) but y_true has 2000 rows"),
        ({"champion_proba": np.zeros(7)}, "champion_proba has shape (7,)"),
        ({"slice_frame": pd.DataFrame({"a": [1]})}, "slice_frame has 1 rows but y_true has 2000"),
        ({"metrics": ["auc"]}, "evaluation.metrics: unknown metric(s) ['auc']"),
        ({"primary_metric": "gini"}, "evaluation.primary_metric: unknown metric(s) ['gini']"),
        ({"thresholds": {"auroc": {"min": 1}}}, "evaluation.thresholds: unknown metric(s) ['auroc']"),
        ({"thresholds": {"roc_auc": {"minimum": 1}}}, "unknown key(s) ['minimum']; allowed: ['min', 'max']"),
        ({"rule": "better"}, "evaluation.rule: got 'better'; allowed: ['improvement', 'non_regression']"),
        ({"challenger_proba": np.full(ROWS, np.nan)}, "challenger_proba holds 2000 NaN/infinite value(s)"),
    ],
)
def test_bad_inputs_raise_a_clear_value_error(data, kwargs: dict, message: str) -> None:
    args = {
        "y_true": data["y"],
        "challenger_proba": data["good"],
        "champion_proba": data["worse"],
        "metrics": METRICS,
        "primary_metric": "roc_auc",
        **kwargs,
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate(**args)


def test_labels_must_be_binary() -> None:
    with pytest.raises(ValueError, match=re.escape("y_true must hold binary 0/1 labels, found ['0', '2']")):
        evaluate([0, 2], [0.1, 0.2], metrics=["roc_auc"], primary_metric="roc_auc")


def test_report_is_offline_escaped_and_has_both_plots(sliced) -> None:
    _, result = sliced
    page = evaluation_report.render_html(result.to_dict(), title="<script>alert('x')</script> report")
    assert "<script" not in page and "&lt;script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", page, re.I)
    assert "http://" not in page and "https://" not in page and "@import" not in page
    assert page.count("<svg") >= 3  # the ROC curves and one bar chart per slice with groups
    assert "ROC curves of challenger and champion" in page and "roc_auc per hour group" in page
    assert "pickup_zone" in page and "small" in page and "beats the champion" in page


def test_report_without_champion_or_slices(data) -> None:
    page = evaluation_report.render_html(run(data, "good").to_dict(), title="first")
    assert "No champion yet" in page and "No slices configured" in page and "No thresholds configured" in page
    assert page.count("<svg") == 1
