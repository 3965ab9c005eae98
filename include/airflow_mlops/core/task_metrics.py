"""A task's metric on labelled predictions as monitoring reads them back (prediction log joined to labels).

binary: `core.training.compute_metrics` on the positive-class probability (the one evaluation uses).
multiclass: labels and predicted classes compared as text (a label file's 2, 2.0 and "2" are one class;
JSON keys of the logged probabilities are text too): f1_macro, f1_weighted, accuracy and
balanced_accuracy on the predicted class; log_loss on the `proba_<class>` columns, a label outside the
model's classes getting probability 0 (clipped as sklearn clips).
regression: rmse, mae, r2 and mape (sklearn's mean_absolute_percentage_error, a fraction) on the value.
NaN where a metric is undefined (a single class; r2 of fewer than 2 rows).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.predictions import PREDICTED_CLASS, PREDICTION, PROBA_PREFIX, class_text

if TYPE_CHECKING:
    import pandas as pd


def task_metric(task: str, metric: str, labels: Sequence[Any], rows: pd.DataFrame) -> float:
    """`metric` of `task` for `labels` against the joined prediction `rows` (columns: see the module doc)."""
    if task == "binary":
        from airflow_mlops.core.training import compute_metrics

        return float(compute_metrics(list(labels), rows[PREDICTION].to_numpy(dtype=float), [metric])[metric])
    if task == "regression":
        return _regression(metric, labels, rows[PREDICTION].to_numpy(dtype=float))
    return _multiclass(metric, labels, rows)


def _regression(metric: str, labels: Sequence[Any], values: Any) -> float:
    import numpy as np
    from sklearn import metrics as m

    y = np.asarray(labels, dtype=float)
    compute: dict[str, Callable[[], float]] = {
        "rmse": lambda: math.sqrt(m.mean_squared_error(y, values)),
        "mae": lambda: m.mean_absolute_error(y, values),
        "r2": lambda: m.r2_score(y, values) if len(y) >= 2 else float("nan"),
        "mape": lambda: m.mean_absolute_percentage_error(y, values)}
    if metric not in compute:
        raise ValueError(f"{metric!r} is not a regression metric; allowed: {sorted(compute)}")
    return float(compute[metric]())


def _multiclass(metric: str, labels: Sequence[Any], rows: pd.DataFrame) -> float:
    import numpy as np
    from sklearn import metrics as m

    y = [class_text(v) for v in labels]
    predicted = [class_text(v) for v in rows[PREDICTED_CLASS]]
    compute: dict[str, Callable[[], float]] = {
        "f1_macro": lambda: m.f1_score(y, predicted, average="macro", zero_division=0),
        "f1_weighted": lambda: m.f1_score(y, predicted, average="weighted", zero_division=0),
        "accuracy": lambda: m.accuracy_score(y, predicted),
        "balanced_accuracy": lambda: _balanced(y, predicted)}
    if metric in compute:
        return float(compute[metric]())
    if metric != "log_loss":
        raise ValueError(f"{metric!r} is not a multiclass metric; allowed: {[*compute, 'log_loss']}")
    columns = {str(c)[len(PROBA_PREFIX):]: c for c in rows.columns if str(c).startswith(PROBA_PREFIX)}
    # sklearn reads the probability columns in sorted label order; a class the model never saw gets probability 0
    classes = sorted(set(columns) | set(y))
    zero = np.zeros(len(rows))
    proba = np.column_stack([rows[columns[c]].to_numpy(dtype=float) if c in columns else zero for c in classes])
    return float(m.log_loss(y, proba, labels=classes))


def _balanced(y: list[str], predicted: list[str]) -> float:
    import warnings

    from sklearn import metrics as m

    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": the score is still defined
        warnings.simplefilter("ignore", UserWarning)
        return float(m.balanced_accuracy_score(y, predicted))
