"""training.search: the spec rules, and core.search scoring exactly what scikit-learn's search classes score."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, StratifiedKFold, TimeSeriesSplit

from airflow_mlops.core import search as core_search
from airflow_mlops.core import training
from airflow_mlops.core.spec import ModelSpec, spec_problems
from airflow_mlops.exceptions import TrainingFailed

pytestmark = pytest.mark.unit

LOGREG = "sklearn.linear_model.LogisticRegression"


def spec_yaml(search: str, params: str = "{}", split: str = "time") -> str:
    return f"""
name: mm
features:
  feature_service: svc
  feature_views: [view]
  entity_keys: [driver_id]
  entity_df: {{dataset: rides}}
  label: y
training:
  estimator: {LOGREG}
  params: {params}
  split: {{method: {split}}}
  search: {search}
evaluation: {{primary_metric: average_precision}}
"""


def problems(search: str, **kwargs: str) -> list[str]:
    return spec_problems(spec_yaml(search, **kwargs), "mm.yaml")


def test_a_valid_search_resolves_cv_from_the_split_and_metric_from_the_evaluation() -> None:
    import yaml

    text = spec_yaml("{method: grid, space: {C: [0.1, 1.0]}}")
    spec = ModelSpec.model_validate(yaml.safe_load(text))
    config = spec.search_config()
    assert config is not None
    resolved = (config["method"], config["cv"], config["metric"], config["folds"])
    assert resolved == ("grid", "time", "average_precision", 3)
    random_split = ModelSpec.model_validate(yaml.safe_load(spec_yaml("{space: {C: [1.0]}}", split="random")))
    assert random_split.search_config()["cv"] == "kfold"  # type: ignore[index]


@pytest.mark.parametrize(("search", "expected"), [
    ("{method: grid, space: {C: {distribution: loguniform, low: 0.01, high: 10}}}",
     "['C'] are distributions, which a grid cannot enumerate"),
    ("{method: halving, max_seconds: 30, space: {C: [1.0]}}", "a halving search is bounded by its rounds"),
    ("{space: {C: {distribution: loguniform, low: 0, high: 1}}}", "loguniform needs low > 0"),
    ("{space: {max_iter: {distribution: randint, low: 1.5, high: 9}}}", "randint needs integer bounds"),
    ("{space: {C: {distribution: uniform, low: 2, high: 1}}}", "high must be above low"),
    ("{space: {C: []}}", "C: empty list of values"),
    ("{space: {}}", "training.search.space"),
    ("{method: bayes, space: {C: [1.0]}}", "training.search.method"),
    ("{space: {C: [1.0]}, cv: stratified}", "training.search.cv"),
    ("{space: {C: [1.0]}, metric: rmse}", "training.search.metric"),
    ("{space: {C: [1.0]}, folds: 1}", "training.search.folds"),
    ("{space: {C: [1.0]}, budget: 3}", "training.search.budget: unknown field"),
])
def test_a_bad_search_names_the_field_and_the_rule(search: str, expected: str) -> None:
    found = problems(search)
    assert found and expected in " ".join(found), found
    assert all(line.startswith("mm.yaml: ") for line in found)


def test_a_parameter_both_fixed_and_searched_is_refused() -> None:
    found = problems("{space: {C: [0.1, 1.0]}}", params="{C: 1.0, max_iter: 50}")
    assert found == ["mm.yaml: training: ['C'] are both fixed in training.params and searched in "
                     "training.search.space; remove them from one of the two"]


def test_unknown_estimator_parameters_are_named_with_the_accepted_ones() -> None:
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(TrainingFailed) as caught:
        core_search.check_space(LogisticRegression, {"C": [1.0], "depth": [2], "alpha": [1]}, LOGREG)
    message = str(caught.value)
    assert "training.search.space: ['alpha', 'depth'] are not parameters of " + LOGREG in message
    assert "'max_iter'" in message  # the accepted ones are listed


def data(rows: int = 240, seed: int = 3) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows), "c": rng.normal(size=rows)})
    y = pd.Series((x["a"] + 0.5 * rng.normal(size=rows) > 0).astype("int64"))
    # every timestamp repeats 4 times: the folds must never cut inside one instant
    timestamps = np.repeat(np.arange(rows // 4), 4).astype("datetime64[s]")
    return x, y, timestamps


def pipeline(estimator: str = LOGREG, params: dict[str, Any] | None = None) -> Any:
    return training.build_pipeline(estimator, params or {"max_iter": 200}, {"impute": "median", "scale": True}, 7)


def config(**overrides: Any) -> dict[str, Any]:
    return {"method": "grid", "space": {"C": [0.01, 0.1, 1.0, 10.0]}, "cv": "kfold", "folds": 3, "n_iter": 4,
            "metric": "roc_auc", "max_seconds": None, **overrides}


def test_time_folds_never_split_an_instant_and_otherwise_equal_time_series_split() -> None:
    _, _, timestamps = data()
    for train_idx, test_idx in core_search.time_folds(timestamps, 4):
        assert timestamps[train_idx].max() < timestamps[test_idx].min()
        assert list(train_idx) == list(range(len(train_idx)))
    unique = np.arange(100).astype("datetime64[s]")
    ours = core_search.time_folds(unique, 3)
    theirs = list(TimeSeriesSplit(n_splits=3).split(unique))
    assert all((a == c).all() and (b == d).all() for (a, b), (c, d) in zip(ours, theirs, strict=True))


def test_time_folds_refuse_a_fold_without_earlier_rows() -> None:
    same_instant = np.zeros(30).astype("datetime64[s]")
    with pytest.raises(TrainingFailed, match="training.search.folds: 3 time-ordered folds leave a fold"):
        core_search.time_folds(same_instant, 3)


def test_grid_search_scores_exactly_what_grid_search_cv_scores() -> None:
    x, y, _ = data()
    outcome = core_search.run_search(pipeline(), x, y, None, config(), seed=7, estimator_path=LOGREG)
    reference = GridSearchCV(pipeline(), {"estimator__C": [0.01, 0.1, 1.0, 10.0]}, scoring="roc_auc",
                             cv=StratifiedKFold(3, shuffle=True, random_state=7)).fit(x, y)
    assert [c.params for c in outcome.candidates] == [{"C": v} for v in (0.01, 0.1, 1.0, 10.0)]
    assert [c.mean_score for c in outcome.candidates] == pytest.approx(list(reference.cv_results_["mean_test_score"]),
                                                                          abs=1e-12)
    assert [c.rank for c in outcome.candidates] == list(reference.cv_results_["rank_test_score"])
    assert outcome.best_params == {"C": reference.best_params_["estimator__C"]}
    assert (outcome.planned, outcome.stopped_by_budget) == (4, False)


def test_the_budgeted_path_scores_the_same_candidates_as_one_search_object() -> None:
    x, y, timestamps = data()
    space = {"C": {"distribution": "loguniform", "low": 0.001, "high": 10.0},
             "fit_intercept": [True, False]}
    common = config(method="random", space=space, cv="time", n_iter=5)
    whole = core_search.run_search(pipeline(), x, y, timestamps, common, seed=11, estimator_path=LOGREG)
    budgeted = core_search.run_search(pipeline(), x, y, timestamps, {**common, "max_seconds": 3600}, seed=11,
                                      estimator_path=LOGREG)
    assert [c.params for c in whole.candidates] == [c.params for c in budgeted.candidates]
    assert [c.fold_scores for c in whole.candidates] == [c.fold_scores for c in budgeted.candidates]
    assert whole.best_params == budgeted.best_params
    reference = RandomizedSearchCV(pipeline(), core_search.distributions(
        {f"estimator__{k}": v for k, v in space.items()}), n_iter=5, random_state=11, scoring="roc_auc",
        cv=core_search.time_folds(timestamps, 3)).fit(x, y)
    assert whole.best_params == {k.removeprefix("estimator__"): v for k, v in reference.best_params_.items()}


def test_max_seconds_stops_between_candidates_and_says_so() -> None:
    x, y, _ = data()
    ticks = itertools.count()
    # each clock reading is one "second": start, then one check before each candidate
    outcome = core_search.run_search(pipeline(), x, y, None, config(max_seconds=2), seed=7, estimator_path=LOGREG,
                                     clock=lambda: float(next(ticks)))
    assert (len(outcome.candidates), outcome.planned, outcome.stopped_by_budget) == (2, 4, True)
    assert outcome.best_params in [c.params for c in outcome.candidates]
    assert outcome.summary()["evaluated"] == 2


def test_a_halving_search_picks_a_survivor_of_the_last_round() -> None:
    x, y, _ = data(rows=400)
    outcome = core_search.run_search(
        pipeline(), x, y, None,
        config(method="halving", space={"C": [0.001, 0.01, 0.1, 1.0], "fit_intercept": [True, False]}),
        seed=7, estimator_path=LOGREG)
    assert len(outcome.candidates) > 8  # the first round's 8 plus the later rounds' survivors
    best = min(outcome.candidates, key=lambda c: c.rank)
    assert best.rank == 1 and best.params == outcome.best_params
    assert outcome.planned is None


def test_a_loss_metric_is_reported_as_the_loss() -> None:
    x, y, _ = data()
    outcome = core_search.run_search(pipeline(), x, y, None, config(metric="log_loss"), seed=7,
                                     estimator_path=LOGREG)
    summary = outcome.summary()
    assert summary["best_score"] > 0  # log loss itself, not scikit-learn's negated scorer
    assert summary["best_score"] == min(c["mean_score"] for c in summary["candidates"])


def test_train_with_a_search_fits_the_best_candidate_on_the_training_part_only() -> None:
    x, y, timestamps = data(rows=400)
    frame = x.assign(label=y, event_timestamp=pd.to_datetime(timestamps))
    plain = training.train(frame, label="label", estimator=LOGREG, params={"max_iter": 200}, seed=7)
    searched = training.train(frame, label="label", estimator=LOGREG, params={"max_iter": 200}, seed=7,
                              search=config(space={"C": [0.001, 1.0]}, cv="time"))
    assert searched.search is not None
    assert searched.params == {"max_iter": 200, **searched.search.best_params}
    assert searched.pipeline.named_steps["estimator"].C == searched.search.best_params["C"]
    assert (searched.train_rows, searched.validation_rows) == (plain.train_rows, plain.validation_rows)
    summary = searched.summary()
    assert summary["search"]["evaluated"] == 2 and summary["params"] == searched.params


def test_train_refuses_an_unknown_searched_parameter_before_fitting() -> None:
    x, y, timestamps = data()
    frame = x.assign(label=y, event_timestamp=pd.to_datetime(timestamps))
    with pytest.raises(TrainingFailed, match=r"\['depth'\] are not parameters of " + LOGREG):
        training.train(frame, label="label", estimator=LOGREG, search=config(space={"depth": [1, 2]}))


def test_a_value_the_estimator_rejects_names_the_search_space() -> None:
    x, y, _ = data()
    with pytest.raises(TrainingFailed, match=r"training.search: a candidate failed to fit .*training.search.space"):
        core_search.run_search(pipeline(), x, y, None, config(space={"C": [1.0, -1.0]}), seed=7,
                               estimator_path=LOGREG)
