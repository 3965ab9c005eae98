"""Compile a fitted linear sklearn pipeline into numpy: the same probabilities without sklearn's per-call cost.

A single-row `Pipeline.predict_proba(DataFrame)` spends ~1 ms in input validation (feature-name
checks, dtype conversion, narwhals dispatch) per step and ~20 us computing. For the pipelines whose
math is a few array operations, this module replays that math on a float64 matrix:

- `SimpleImputer` (mean/median/most_frequent/constant over NaN, no indicator): NaN -> `statistics_`
- `StandardScaler`: (x - mean_) / scale_ (each part only when enabled)
- a binary `LogisticRegression`: expit(x @ coef_ + intercept_), as sklearn's `_predict_proba_lr`

Exact types only (a subclass may change the math). `compile_checked` also compares the compiled
function with the model's own `predict_proba` on seeded rows (with missing values and extremes) and
keeps it only if every probability agrees within 1e-12; anything else keeps the sklearn path.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

TOLERANCE = 1e-12
Step = Callable[["np.ndarray"], "np.ndarray"]


def compile_checked(model: Any, columns: Sequence[str]) -> Callable[[np.ndarray], np.ndarray] | None:
    """The compiled predictor of `model`, or None (not compilable, or not equal to sklearn's answers)."""
    try:
        fast = compile_pipeline(model)
    except (AttributeError, TypeError, ValueError) as exc:  # a fitted attribute missing or odd: stay on sklearn
        log.info("%s not compiled (%s); serving through sklearn", type(model).__name__, exc)
        return None
    if fast is None:
        return None
    try:
        worst = _max_difference(model, fast, columns)
    except Exception as exc:  # noqa: BLE001 - whatever the check trips on, sklearn stays the reference
        log.info("%s not compiled: the equality check failed (%s)", type(model).__name__, exc)
        return None
    if not worst <= TOLERANCE:
        log.warning("compiled %s differs from sklearn by %.3g (> %g); serving through sklearn", type(model).__name__,
                    worst, TOLERANCE)
        return None
    return fast


def compile_pipeline(model: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """numpy steps of a Pipeline of imputers/scalers ending in a binary LogisticRegression, else None."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    steps = [step for _, step in model.steps] if type(model) is Pipeline else [model]
    *prep, last = [step for step in steps if step is not None and step != "passthrough"]
    if type(last) is not LogisticRegression or last.coef_.shape[0] != 1:
        return None
    transforms = [_transform(step) for step in prep]
    if any(t is None for t in transforms):
        return None
    imputes = any(type(step).__name__ == "SimpleImputer" for step in prep)
    return _linear(transforms, last, imputes)  # type: ignore[arg-type]  # None ruled out above


def _transform(step: Any) -> Step | None:
    import numpy as np
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    if type(step) is SimpleImputer:
        fill = np.asarray(step.statistics_, dtype=np.float64)
        missing = step.missing_values
        if step.add_indicator or not (isinstance(missing, float) and math.isnan(missing)) or np.isnan(fill).any():
            return None  # indicator columns, a sentinel value or an all-empty column: sklearn's rules differ

        def impute(x: np.ndarray) -> np.ndarray:
            return np.where(np.isnan(x), fill, x)

        return impute
    if type(step) is StandardScaler:
        mean = np.asarray(step.mean_, dtype=np.float64) if step.with_mean else None
        scale = np.asarray(step.scale_, dtype=np.float64) if step.with_std else None

        def standardize(x: np.ndarray) -> np.ndarray:
            if mean is not None:
                x = x - mean
            return x / scale if scale is not None else x

        return standardize
    return None


def _linear(transforms: list[Step], estimator: Any, imputes: bool) -> Callable[[np.ndarray], np.ndarray]:
    import numpy as np
    from scipy.special import expit

    coef = np.ascontiguousarray(estimator.coef_.T, dtype=np.float64)  # (features, 1), as decision_function
    intercept = np.asarray(estimator.intercept_, dtype=np.float64)

    def predict(matrix: np.ndarray) -> np.ndarray:
        x = np.asarray(matrix, dtype=np.float64)
        # sklearn's input check: infinity never passes; NaN only when an imputer fills it
        bad = np.isinf(x) if imputes else ~np.isfinite(x)
        if bad.any():
            raise ValueError(f"Input X contains {'infinity' if np.isinf(x).any() else 'NaN'}; "
                             f"{type(estimator).__name__} cannot score it")
        for transform in transforms:
            x = transform(x)
        return np.asarray(expit((x @ coef + intercept).ravel()))

    return predict


def _max_difference(model: Any, fast: Callable[[np.ndarray], np.ndarray], columns: Sequence[str]) -> float:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    rows = rng.normal(0.0, 10.0, size=(64, len(columns)))
    rows[0], rows[1] = 0.0, 1e6
    with_nan = rows.copy()
    with_nan[rng.random(rows.shape) < 0.2] = np.nan  # imputation must match too
    try:
        expected = model.predict_proba(pd.DataFrame(with_nan, columns=list(columns)))[:, 1]
        rows = with_nan
    except ValueError:  # no imputer: sklearn refuses NaN, and so does the compiled function
        expected = model.predict_proba(pd.DataFrame(rows, columns=list(columns)))[:, 1]
    got = fast(rows)
    if got.shape != expected.shape:
        return math.inf
    return float(np.max(np.abs(got - expected)))
