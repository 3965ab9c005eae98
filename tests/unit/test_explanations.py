"""Explanations: permutation importance ranks the informative feature first, deterministically; local
attributions are exact for a linear model and cost one predict call; ranking drift names what moved."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression

from airflow_mlops.core.explanations import (
    global_importance,
    held_out_importance,
    local_attributions,
    profile_baseline,
    ranking_drift,
)

pytestmark = pytest.mark.unit


def _data(rows: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"signal": rng.normal(size=rows), "weak": rng.normal(size=rows), "noise": rng.normal(size=rows)})
    y = (2 * x["signal"] + 0.5 * x["weak"] + rng.normal(0, 0.5, rows) > 0).astype(int).to_numpy()
    return x, y


@pytest.fixture(scope="module")
def classifier() -> tuple[HistGradientBoostingClassifier, pd.DataFrame, np.ndarray]:
    x, y = _data()
    return HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y), *_data(seed=1)


def test_permutation_importance_ranks_by_reliance_and_is_deterministic_for_a_seed(classifier: tuple) -> None:
    model, x, y = classifier
    first = global_importance(model, x, y, metric="roc_auc", seed=7, repeats=3)
    assert [f["feature"] for f in first["features"]] == ["signal", "weak", "noise"]
    assert first["scoring"] == "roc_auc" and [f["rank"] for f in first["features"]] == [1, 2, 3]
    assert global_importance(model, x, y, metric="roc_auc", seed=7, repeats=3) == first


def test_lower_is_better_metrics_use_the_negated_scorer(classifier: tuple) -> None:
    model, x, y = classifier
    found = global_importance(model, x, y, metric="log_loss", seed=7, repeats=2)
    assert found["scoring"] == "neg_log_loss" and found["features"][0]["feature"] == "signal"


def test_shap_without_the_package_names_the_fix(classifier: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = classifier
    monkeypatch.setitem(sys.modules, "shap", None)  # import shap raises ImportError, installed or not
    with pytest.raises(ValueError, match="pip install shap"):
        global_importance(model, x, y, metric="roc_auc", seed=7, method="shap")


def test_local_attributions_are_exact_for_a_linear_model_in_one_predict_call() -> None:
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    model = LinearRegression().fit(x, 3 * x["a"] - 2 * x["b"] + 1)
    calls: list[int] = []

    def predict(frame: pd.DataFrame) -> np.ndarray:
        calls.append(len(frame))
        return np.asarray(model.predict(frame))

    row = pd.DataFrame({"a": [2.0], "b": [1.0]})
    found = local_attributions(predict, row, {"a": 0.5, "b": 0.0})
    assert calls == [4]  # the row, one substitution per feature, the baseline: one call
    by_feature = {a["feature"]: a["contribution"] for a in found["attributions"]}
    assert by_feature == pytest.approx({"a": 3 * 1.5, "b": -2 * 1.0})
    assert [a["feature"] for a in found["attributions"]] == ["a", "b"]  # largest |contribution| first
    assert found["method"] == "baseline_substitution" and found["output"] == pytest.approx(5.0)
    assert found["baseline_output"] == pytest.approx(3 * 0.5 + 1)
    assert sum(by_feature.values()) == pytest.approx(found["output"] - found["baseline_output"])  # no interaction
    with pytest.raises(ValueError, match=r"no training-set baseline for feature\(s\) \['b'\]"):
        local_attributions(predict, row, {"a": 0.5})


def test_ranking_drift_names_what_entered_and_left_the_top() -> None:
    before = [{"feature": f, "rank": r} for r, f in enumerate(["a", "b", "c", "d"], start=1)]
    after = [{"feature": f, "rank": r} for r, f in enumerate(["d", "c", "b", "a"], start=1)]
    drift = ranking_drift(before, after, top_k=2)
    assert drift["kendall_tau"] == pytest.approx(-1.0)
    assert drift["entered_top"] == ["d", "c"] and drift["left_top"] == ["a", "b"]
    assert ranking_drift(before, before)["kendall_tau"] == pytest.approx(1.0)


def test_held_out_importance_samples_seeded_rows_and_reports_how_many() -> None:
    x, y = _data(rows=900, seed=4)
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y)
    first = held_out_importance(model, x, pd.Series(y), metric="roc_auc", seed=11, max_rows=300, repeats=2)
    assert first["rows"] == 300 and first["held_out_rows"] == 900 and first["metric"] == "roc_auc"
    assert held_out_importance(model, x, pd.Series(y), metric="roc_auc", seed=11, max_rows=300, repeats=2) == first
    assert held_out_importance(model, x, y, metric="roc_auc", seed=12, max_rows=300, repeats=2) != first


def test_profile_baseline_is_the_medians_or_none_for_an_older_profile() -> None:
    profile = {"rows": 3, "columns": {"a": {"min": 0.0, "max": 2.0, "median": 1.0, "missing": 0},
                                      "b": {"min": 1.0, "max": 5.0, "median": 4, "missing": 1}}}
    assert profile_baseline(profile) == {"a": 1.0, "b": 4.0}
    older = {"rows": 3, "columns": {"a": {"min": 0.0, "max": 2.0, "missing": 0}}}
    assert profile_baseline(older) is None and profile_baseline(None) is None
