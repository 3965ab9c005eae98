"""Hyperparameter search (spec `training.search`) with scikit-learn's own search classes.

The search sees only the training part of the split: the validation part stays untouched for the final
scoring and for the challenger-vs-champion evaluation. Candidates are scored by cross-validation:
- `cv: time`: scikit-learn's `TimeSeriesSplit` on the time-ordered rows, each cut moved back to the first
  row of its timestamp so that rows of one instant never sit on both sides of a fold (no same-instant leakage,
  as in `core.training.split`);
- `cv: kfold`: `StratifiedKFold` for classifiers, `KFold` for regression, shuffled with the spec seed.

`GridSearchCV`, `RandomizedSearchCV`, `HalvingGridSearchCV` and `HalvingRandomSearchCV` do the work. With
`max_seconds`, a grid or random search runs its candidates (the same `ParameterGrid`/`ParameterSampler`
sequence the classes use) one `GridSearchCV` at a time and stops starting new ones once the budget is spent;
`tests/unit/test_search.py` proves that path scores exactly what one search object scores. Pure functions,
no Airflow or MLflow: the training job logs the candidates as MLflow child runs.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import TrainingFailed

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)

# Spec metric -> scikit-learn scorer; losses are negated by scikit-learn so that greater is always better.
SCORERS = {
    "roc_auc": "roc_auc",
    "average_precision": "average_precision",
    "accuracy": "accuracy",
    "f1": "f1",
    "precision": "precision",
    "recall": "recall",
    "log_loss": "neg_log_loss",
    "brier": "neg_brier_score",
    # multiclass (accuracy and log_loss as above)
    "f1_macro": "f1_macro",
    "f1_weighted": "f1_weighted",
    "balanced_accuracy": "balanced_accuracy",
    # regression
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
    "mape": "neg_mean_absolute_percentage_error",
}
ESTIMATOR_STEP = "estimator"  # the pipeline step the space's arguments belong to (core.training.build_pipeline)


def metric_value(score: float, metric: str) -> float:
    """A scorer's value (greater is better) as the metric itself: losses (log_loss, brier, rmse, ...) un-negated."""
    return -score if SCORERS[metric].startswith("neg_") else score


@dataclass
class Candidate:
    """One evaluated point of the space: its arguments and cross-validated scorer values (greater is better)."""

    params: dict[str, Any]
    mean_score: float
    std_score: float
    fold_scores: list[float]
    fit_seconds: float
    rank: int = 0


@dataclass
class SearchOutcome:
    """What the search found; `best_params` go to the final fit, the rest is logged."""

    method: str
    metric: str
    cv: str
    folds: int
    best_params: dict[str, Any]
    best_score: float
    candidates: list[Candidate] = field(default_factory=list)
    planned: int | None = None  # candidates the space defines (None: halving decides per round)
    stopped_by_budget: bool = False
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method, "metric": self.metric, "cv": self.cv, "folds": self.folds,
            "best_params": self.best_params, "best_score": metric_value(self.best_score, self.metric),
            "planned": self.planned,
            "evaluated": len(self.candidates), "stopped_by_budget": self.stopped_by_budget,
            "seconds": round(self.seconds, 3),
            "candidates": [
                {"params": c.params, "mean_score": metric_value(c.mean_score, self.metric), "std_score": c.std_score,
                 "rank": c.rank,
                 "fit_seconds": round(c.fit_seconds, 4)} for c in self.candidates
            ],
        }


def check_space(estimator_class: type, space: Mapping[str, Any], estimator_path: str) -> None:
    """Every searched name is a constructor argument of the estimator; the error names the others."""
    accepted = _constructor_arguments(estimator_class)
    unknown = sorted(set(space) - accepted)
    if unknown:
        raise TrainingFailed(
            f"training.search.space: {unknown} are not parameters of {estimator_path}; "
            f"its parameters are {sorted(accepted)}"
        )


def _constructor_arguments(estimator_class: type) -> set[str]:
    get_param_names = getattr(estimator_class, "_get_param_names", None)
    if callable(get_param_names):  # scikit-learn's own list (what get_params/set_params accept)
        return set(get_param_names())
    signature = inspect.signature(estimator_class)  # the constructor's parameters, without self
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {name for name, p in signature.parameters.items() if p.kind not in kinds}


def distributions(space: Mapping[str, Any]) -> dict[str, Any]:
    """Spec space -> scikit-learn's: lists stay lists; {distribution, low, high} become scipy.stats objects."""
    from scipy import stats

    converted: dict[str, Any] = {}
    for name, values in space.items():
        if isinstance(values, Mapping):
            low, high = float(values["low"]), float(values["high"])
            kind = values["distribution"]
            if kind == "uniform":
                converted[name] = stats.uniform(loc=low, scale=high - low)
            elif kind == "loguniform":
                converted[name] = stats.loguniform(low, high)
            else:
                converted[name] = stats.randint(int(low), int(high))
        else:
            converted[name] = list(values)
    return converted


def time_folds(timestamps: Sequence[Any] | np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """TimeSeriesSplit over time-ordered rows, each cut moved back to its timestamp's first row."""
    import numpy as np
    from sklearn.model_selection import TimeSeriesSplit

    ts = np.asarray(timestamps)
    if len(ts) and not bool((ts[1:] >= ts[:-1]).all()):
        raise ValueError("time folds need rows in time order")
    result = []
    for _train_idx, test_idx in TimeSeriesSplit(n_splits=folds).split(ts):
        cut = int(np.searchsorted(ts, ts[test_idx[0]], side="left"))
        if cut == 0:
            raise TrainingFailed(
                f"training.search.folds: {folds} time-ordered folds leave a fold without earlier rows (all rows "
                f"of its first timestamp {ts[test_idx[0]]} start the data); use fewer folds or cv: kfold"
            )
        result.append((np.arange(cut), np.arange(cut, int(test_idx[-1]) + 1)))
    return result


def splitter(cv: str, folds: int, seed: int, timestamps: Any, task: str = "binary") -> Any:
    from sklearn.model_selection import KFold, StratifiedKFold

    if cv == "time":
        return time_folds(timestamps, folds)
    if task == "regression":  # no classes to stratify on
        return KFold(n_splits=folds, shuffle=True, random_state=seed)
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def run_search(
    pipeline: Pipeline,
    x: pd.DataFrame,
    y: pd.Series,
    timestamps: Any,
    config: Mapping[str, Any],
    *,
    seed: int,
    estimator_path: str,
    clock: Callable[[], float] = time.perf_counter,
    task: str = "binary",
) -> SearchOutcome:
    """Search `config` (a resolved `ModelSpec.search_config()`) over the pipeline's estimator step."""
    check_space(type(pipeline.named_steps[ESTIMATOR_STEP]), config["space"], estimator_path)
    method, metric, cv, folds = config["method"], config["metric"], config["cv"], int(config["folds"])
    if cv == "time" and timestamps is None:
        raise TrainingFailed("training.search.cv: time folds need the event timestamp column; use cv: kfold")
    space = {f"{ESTIMATOR_STEP}__{name}": values for name, values in distributions(config["space"]).items()}
    folds_of = splitter(cv, folds, seed, timestamps, task)
    started = clock()
    common = {"scoring": SCORERS[metric], "cv": folds_of, "refit": False, "error_score": "raise", "n_jobs": 1}
    if method == "halving":
        candidates, planned, stopped = _halving(pipeline, x, y, space, config, seed, common), None, False
    elif config.get("max_seconds"):
        candidates, planned, stopped = _budgeted(pipeline, x, y, space, config, seed, common, clock, started)
    else:
        search = _search_object(pipeline, space, method, int(config["n_iter"]), seed, common)
        _fit(search, x, y)
        candidates = _candidates(search.cv_results_)
        planned, stopped = len(candidates), False
    _rank(candidates)
    best = min(candidates, key=lambda c: c.rank)
    return SearchOutcome(
        method=method, metric=metric, cv=cv, folds=folds, best_params=best.params, best_score=best.mean_score,
        candidates=candidates, planned=planned, stopped_by_budget=stopped, seconds=clock() - started,
    )


def _search_object(pipeline: Pipeline, space: dict[str, Any], method: str, n_iter: int, seed: int,
                   common: dict[str, Any]) -> Any:
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    if method == "grid":
        return GridSearchCV(pipeline, space, **common)
    return RandomizedSearchCV(pipeline, space, n_iter=n_iter, random_state=seed, **common)


def candidate_points(space: dict[str, Any], method: str, n_iter: int, seed: int) -> Iterator[dict[str, Any]]:
    """The candidates GridSearchCV / RandomizedSearchCV evaluate, in their order."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    if method == "grid":
        return iter(ParameterGrid(space))
    return iter(ParameterSampler(space, n_iter=n_iter, random_state=seed))


def _budgeted(pipeline: Pipeline, x: Any, y: Any, space: dict[str, Any], config: Mapping[str, Any], seed: int,
              common: dict[str, Any], clock: Callable[[], float], started: float
              ) -> tuple[list[Candidate], int, bool]:
    from sklearn.model_selection import GridSearchCV

    points = list(candidate_points(space, config["method"], int(config["n_iter"]), seed))
    budget = float(config["max_seconds"])
    found: list[Candidate] = []
    for point in points:
        if found and clock() - started >= budget:
            log.warning("training.search.max_seconds=%s spent after %s of %s candidates; the best of those wins",
                        config["max_seconds"], len(found), len(points))
            return found, len(points), True
        one = GridSearchCV(pipeline, {name: [value] for name, value in point.items()}, **common)
        _fit(one, x, y)
        found.extend(_candidates(one.cv_results_))
    return found, len(points), False


def _halving(pipeline: Pipeline, x: Any, y: Any, space: dict[str, Any], config: Mapping[str, Any], seed: int,
             common: dict[str, Any]) -> list[Candidate]:
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (registers the classes below)
    from sklearn.model_selection import HalvingGridSearchCV, HalvingRandomSearchCV

    drawn = any(not isinstance(values, list) for values in space.values())
    if drawn:
        search = HalvingRandomSearchCV(pipeline, space, n_candidates=int(config["n_iter"]), random_state=seed,
                                       **common)
    else:
        search = HalvingGridSearchCV(pipeline, space, random_state=seed, **common)
    _fit(search, x, y)
    results = search.cv_results_
    # Only the last round's scores compare candidates on the same resources: the earlier rounds' candidates
    # are kept (logged) but ranked below every survivor.
    last = int(max(results["iter"]))
    candidates = _candidates(results)
    for candidate, rung in zip(candidates, results["iter"], strict=True):
        candidate.rank = 0 if int(rung) == last else 1
    return candidates


def _fit(search: Any, x: Any, y: Any) -> None:
    """Fit a search object; a candidate the estimator rejects (e.g. C: -1) names the spec field, not sklearn's
    internals (error_score="raise": a failing candidate fails the search instead of silently scoring NaN)."""
    try:
        search.fit(x, y)
    except ValueError as exc:  # InvalidParameterError is a ValueError
        raise TrainingFailed(
            f"training.search: a candidate failed to fit ({exc}); check the values and bounds in "
            "training.search.space against the estimator's allowed ranges"
        ) from exc


def _candidates(results: Mapping[str, Any]) -> list[Candidate]:
    import numpy as np

    split_keys = sorted((k for k in results if k.startswith("split") and k.endswith("_test_score")),
                        key=lambda k: int(k[len("split"):-len("_test_score")]))
    found = []
    for i, params in enumerate(results["params"]):
        fold_scores = [float(results[k][i]) for k in split_keys]
        found.append(Candidate(
            params={name.removeprefix(f"{ESTIMATOR_STEP}__"): _plain(value) for name, value in params.items()},
            mean_score=float(np.mean(fold_scores)), std_score=float(np.std(fold_scores)), fold_scores=fold_scores,
            fit_seconds=float(results["mean_fit_time"][i]) * len(fold_scores),
        ))
    return found


def _rank(candidates: list[Candidate]) -> None:
    """Rank 1 = best mean score; ties keep the earlier candidate. Halving's earlier rounds rank below survivors."""
    import math

    order = sorted(range(len(candidates)),
                   key=lambda i: (candidates[i].rank,
                                  -candidates[i].mean_score if not math.isnan(candidates[i].mean_score) else math.inf,
                                  i))
    for position, index in enumerate(order, start=1):
        candidates[index].rank = position


def _plain(value: Any) -> Any:
    """numpy scalars -> Python ones, so params are JSON and MLflow params as a user wrote them."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value
