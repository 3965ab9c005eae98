"""Training and evaluation per task (multiclass, regression) on generated data, with scikit-learn's estimators and
with hand-written ones that only implement the scikit-learn API (tests/support/plain_estimators.py).

Binary training and evaluation keep their own tests (test_training_core.py, test_evaluation.py).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator

from airflow_mlops.core import metrics, training
from airflow_mlops.core.evaluation import evaluate, paired_bootstrap
from airflow_mlops.core.search import SCORERS, metric_value
from airflow_mlops.core.tasks import METRICS_BY_TASK
from airflow_mlops.exceptions import TrainingFailed
from support import plain_estimators

pytestmark = pytest.mark.unit

HGB_CLASSIFIER = "sklearn.ensemble.HistGradientBoostingClassifier"
HGB_REGRESSOR = "sklearn.ensemble.HistGradientBoostingRegressor"
PLAIN = "support.plain_estimators"
CLASSES = ["economy", "comfort", "premium"]


def frame(task: str, rows: int = 900, seed: int = 3) -> pd.DataFrame:
    """Three features, one timestamp; a label that depends on the first two (learnable), per task."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    data = pd.DataFrame(x, columns=["f1", "f2", "f3"])
    data["event_timestamp"] = pd.date_range("2026-01-01", periods=rows, freq="min", tz="UTC")
    score = 1.5 * x[:, 0] - x[:, 1] + rng.normal(0, 0.3, rows)
    if task == "regression":
        data["label"] = 10.0 + 3.0 * score
    else:
        data["label"] = np.asarray(CLASSES, dtype=object)[np.digitize(score, [-0.8, 0.8])]
    return data


def fit(task: str, estimator: str, **kwargs: object) -> training.TrainResult:
    params = {"max_iter": 20} if estimator.startswith("sklearn.ensemble") else {}
    options = {"params": params, **kwargs}
    return training.train(frame(task), label="label", estimator=estimator, task=task, **options)  # type: ignore[arg-type]


def test_multiclass_trains_with_its_metrics_and_the_estimators_class_order() -> None:
    result = fit("multiclass", HGB_CLASSIFIER)
    assert result.task == "multiclass"
    assert result.classes == list(result.pipeline.classes_) == sorted(CLASSES)
    assert set(result.metrics) == set(METRICS_BY_TASK["multiclass"])
    assert result.metrics["f1_macro"] > 0.7 and result.metrics["accuracy"] > 0.7
    assert set(result.per_class_recall or {}) == set(CLASSES)
    assert all(0.0 <= value <= 1.0 for value in (result.per_class_recall or {}).values() if value is not None)
    summary = result.summary()
    assert summary["task"] == "multiclass" and summary["classes"] == result.classes


def test_regression_trains_with_its_metrics() -> None:
    result = fit("regression", HGB_REGRESSOR)
    assert result.task == "regression" and result.classes is None
    assert set(result.metrics) == set(METRICS_BY_TASK["regression"])
    assert result.metrics["r2"] > 0.8
    assert result.metrics["rmse"] >= result.metrics["mae"] > 0


@pytest.mark.parametrize(("task", "estimator", "wanted"), [
    ("regression", HGB_CLASSIFIER, "is a classifier, but the spec's task is regression, which needs a regressor"),
    ("multiclass", HGB_REGRESSOR, "is a regressor, but the spec's task is multiclass, which needs a classifier"),
    ("multiclass", f"{PLAIN}.UntaggedClassifier", "has no scikit-learn estimator tags"),
])
def test_an_estimator_of_another_kind_names_the_field_and_the_task(task: str, estimator: str, wanted: str) -> None:
    with pytest.raises(TrainingFailed, match="training.estimator") as caught:
        fit(task, estimator)
    assert wanted in str(caught.value)


@pytest.mark.parametrize(("task", "label", "wanted"), [
    ("binary", "regression", "set task: regression"),
    ("binary", "multiclass", "set task: multiclass"),
    ("regression", "multiclass", "task regression needs numbers"),
])
def test_a_label_that_does_not_fit_the_task_says_which_task_does(task: str, label: str, wanted: str) -> None:
    with pytest.raises(TrainingFailed, match="features.label: 'label'") as caught:
        training.train(frame(label), label="label", estimator=HGB_REGRESSOR if task == "regression" else HGB_CLASSIFIER,
                       task=task)
    assert wanted in str(caught.value)


def test_multiclass_needs_three_classes() -> None:
    data = frame("multiclass")
    data["label"] = data["label"].replace({"premium": "comfort"})
    with pytest.raises(TrainingFailed, match="task multiclass needs at least 3 classes"):
        training.train(data, label="label", estimator=HGB_CLASSIFIER, task="multiclass")


def test_a_class_only_in_the_validation_rows_is_refused_by_name() -> None:
    data = frame("multiclass")
    data.loc[data.index[-20:], "label"] = "business"  # newest rows: the time split puts them in validation only
    with pytest.raises(TrainingFailed, match=r"classes \['business'\] occur in the validation rows"):
        training.train(data, label="label", estimator=HGB_CLASSIFIER, task="multiclass")


@pytest.mark.parametrize(("task", "name"), [("multiclass", "GaussianClassifier"), ("regression", "RidgeRegressor")])
def test_an_estimator_that_only_implements_the_sklearn_api_trains(task: str, name: str) -> None:
    cls = getattr(plain_estimators, name)
    assert not issubclass(cls, BaseEstimator)
    result = fit(task, f"{PLAIN}.{name}")
    assert result.pipeline.named_steps["estimator"].__class__ is cls
    key = "f1_macro" if task == "multiclass" else "r2"
    assert result.metrics[key] > 0.7


@pytest.mark.parametrize(("task", "estimator", "metric"), [
    ("multiclass", f"{PLAIN}.GaussianClassifier", "f1_macro"),
    ("regression", HGB_REGRESSOR, "rmse"),
    ("regression", f"{PLAIN}.RidgeRegressor", "mae"),
])
def test_search_scores_the_tasks_metric(task: str, estimator: str, metric: str) -> None:
    space = {"smoothing": [1e-4, 1e-1]} if "Gaussian" in estimator else (
        {"alpha": [0.1, 100.0]} if "Ridge" in estimator else {"learning_rate": [0.05, 0.2]})
    search = {"method": "grid", "space": space, "cv": "kfold", "folds": 3, "n_iter": 2, "metric": metric,
              "max_seconds": None}
    result = fit(task, estimator, search=search)
    assert result.search is not None and result.search.metric == metric and len(result.search.candidates) == 2
    best = metric_value(result.search.best_score, metric)
    assert best > 0 and (SCORERS[metric].startswith("neg_") == (metric in ("rmse", "mae")))


def regression_rows(seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.normal(20, 5, 600)
    return truth, truth + rng.normal(0, 1, 600), truth + rng.normal(0, 3, 600)


def test_regression_evaluation_signs_the_gain_so_positive_is_better() -> None:
    truth, good, bad = regression_rows()
    result = evaluate(truth, good, bad, metrics=["rmse", "mae", "r2", "mape"], primary_metric="rmse",
                      thresholds={"rmse": {"max": 2.0}}, bootstrap_samples=200, task="regression")
    comparison = result.comparison or {}
    assert comparison["challenger"] < comparison["champion"]  # rmse: lower is better
    assert comparison["gain"] > 0 and comparison["ci_low"] > 0 and comparison["higher_is_better"] is False
    assert result.promote and result.thresholds[0]["passed"]
    report = result.to_dict()
    assert report["task"] == "regression" and "positives" not in report and "classes" not in report
    chart = report["curves"]["challenger"]
    assert len(chart["actual"]) == len(chart["predicted"]) <= 200
    assert sum(chart["residuals"]["counts"]) == len(truth)
    backwards = evaluate(truth, bad, good, metrics=["rmse"], primary_metric="rmse", bootstrap_samples=200,
                         task="regression", thresholds={"rmse": {"max": 2.0}})
    assert (backwards.comparison or {})["gain"] < 0 and not backwards.promote
    assert "rmse.max; lower is better" in backwards.thresholds[0]["reason"]


def multiclass_rows(seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two probability matrices (columns in CLASSES order): a sharp model and a vague one."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, 600)
    sharp = np.full((600, 3), 0.1)
    sharp[np.arange(600), np.where(rng.uniform(size=600) < 0.85, truth, (truth + 1) % 3)] = 0.8
    vague = np.full((600, 3), 0.3)
    vague[np.arange(600), np.where(rng.uniform(size=600) < 0.55, truth, (truth + 1) % 3)] = 0.4
    return np.asarray(CLASSES, dtype=object)[truth], sharp, vague


def test_multiclass_evaluation_has_class_counts_recall_and_confusion() -> None:
    truth, sharp, vague = multiclass_rows()
    result = evaluate(truth, sharp, vague, metrics=["f1_macro", "accuracy", "log_loss"], primary_metric="log_loss",
                      bootstrap_samples=100, task="multiclass", classes=CLASSES,
                      slices=[{"column": "group", "bins": None}],
                      slice_frame=pd.DataFrame({"group": np.arange(600) % 2}))
    report = result.to_dict()
    assert report["task"] == "multiclass" and "positives" not in report
    table = report["classes"]
    assert table["labels"] == CLASSES and sum(table["counts"].values()) == 600
    matrix = np.asarray(table["confusion"]["challenger"])
    assert matrix.shape == (3, 3) and matrix.sum() == 600 and np.trace(matrix) > 0.8 * 600
    assert table["recall"]["challenger"]["economy"] > table["recall"]["champion"]["economy"]
    assert (result.comparison or {})["gain"] > 0  # log_loss fell
    groups = report["slices"][0]["groups"]
    assert [g["rows"] for g in groups] == [300, 300] and "positives" not in groups[0]
    assert "3 classes" in result.summary()


def test_champion_probabilities_are_aligned_to_the_challengers_classes() -> None:
    proba = np.array([[0.2, 0.8], [0.6, 0.4]])
    aligned = metrics.align_proba(proba, ["premium", "economy"], CLASSES)
    assert aligned.tolist() == [[0.8, 0.0, 0.2], [0.4, 0.0, 0.6]]


def test_bootstrap_of_an_undefined_r2_is_counted_out() -> None:
    truth = np.full(50, 3.0)
    out = paired_bootstrap(truth, truth + 0.1, truth + 0.2, "r2", samples=20, task="regression")
    assert out["samples_used"] == 0 and math.isnan(out["ci_low"])


def test_reports_and_model_cards_read_per_task() -> None:
    from airflow_mlops.core.evaluation_report import render_html
    from airflow_mlops.core.model_card import build_model_card, render_markdown
    from airflow_mlops.core.model_card import render_html as card_html

    truth, good, bad = regression_rows()
    regression = evaluate(truth, good, bad, metrics=["rmse", "r2"], primary_metric="rmse", bootstrap_samples=20,
                          task="regression").to_dict()
    labels, sharp, vague = multiclass_rows()
    multiclass = evaluate(labels, sharp, vague, metrics=["f1_macro"], primary_metric="f1_macro", bootstrap_samples=20,
                          task="multiclass", classes=CLASSES).to_dict()
    pages = {"regression": render_html(regression, title="r"), "multiclass": render_html(multiclass, title="m")}
    assert "Predicted vs actual" in pages["regression"] and "Residuals" in pages["regression"]
    assert "Confusion matrix" in pages["multiclass"] and "Per-class recall" in pages["multiclass"]
    assert "3 classes" in pages["multiclass"]
    for page in pages.values():
        assert "ROC" not in page and "positives" not in page
    for task, report in (("regression", regression), ("multiclass", multiclass)):
        card = build_model_card(model={"name": "m", "task": task}, version="1", run_id="r", lineage={},
                                evaluation=report)
        html, markdown = card_html(card), render_markdown(card)
        assert card["task"] == task and f"task {task}" in markdown and "positives" not in html + markdown
        assert "ROC" not in html and "<svg" in html and "<svg" not in markdown
    assert "economy" in card_html(build_model_card(model={"name": "m"}, version="1", run_id="r", lineage={},
                                                   evaluation=multiclass))
