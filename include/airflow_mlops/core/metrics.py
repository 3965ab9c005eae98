"""Metrics per task (binary, multiclass, regression) and what a model predicts for them.

One place for the numbers training, evaluation, slices and the delayed-label performance check compare:
- binary: `predictions` are positive-class probabilities (1-D); label metrics cut them at 0.5;
- multiclass: `predictions` are class probabilities (rows x classes), columns in `classes` order (the
  estimator's `classes_`); the predicted class is the most probable one; per-class recall is reported
  beside the metrics (a table, not one number to compare on);
- regression: `predictions` are the predicted values (1-D).
Metric names and their direction are `core.tasks` (METRICS_BY_TASK, LOWER_IS_BETTER). numpy and
scikit-learn are imported inside functions: this module is imported at DAG parse time through
`core.training`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.tasks import METRICS_BY_TASK

if TYPE_CHECKING:
    import numpy as np

# Label-based binary metrics turn probabilities into classes at this cut-off.
DECISION_THRESHOLD = 0.5


def compute_metrics(
    y_true: Sequence[Any] | np.ndarray,
    predictions: Sequence[Any] | np.ndarray,
    names: Iterable[str] | None = None,
    *,
    task: str = "binary",
    classes: Sequence[Any] | None = None,
) -> dict[str, float]:
    """The task's metrics (all of them when `names` is None); NaN where undefined on these rows.

    `classes` (multiclass only): the label of each probability column, the estimator's `classes_`.
    """
    allowed = METRICS_BY_TASK.get(task)
    if allowed is None:
        raise ValueError(f"unknown task {task!r}; allowed: {list(METRICS_BY_TASK)}")
    wanted = list(names) if names is not None else list(allowed)
    unknown = sorted(set(wanted) - set(allowed))
    if unknown:
        raise ValueError(f"unknown metrics {unknown} for task {task}; allowed: {list(allowed)}")
    if task == "binary":
        compute = _binary(y_true, predictions)
    elif task == "multiclass":
        if classes is None:
            raise ValueError("multiclass metrics need `classes`: the label of each probability column")
        compute = _multiclass(y_true, predictions, classes)
    else:
        compute = _regression(y_true, predictions)
    return {name: float(compute[name]()) for name in wanted}


def _binary(y_true: Any, proba: Any) -> dict[str, Callable[[], float]]:
    import numpy as np
    from sklearn import metrics as m

    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(proba, dtype=float), 0.0, 1.0)
    pred = (p >= DECISION_THRESHOLD).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": lambda: m.roc_auc_score(y, p) if both else float("nan"),
        "average_precision": lambda: m.average_precision_score(y, p) if both else float("nan"),
        "accuracy": lambda: m.accuracy_score(y, pred),
        "f1": lambda: m.f1_score(y, pred, zero_division=0),
        "precision": lambda: m.precision_score(y, pred, zero_division=0),
        "recall": lambda: m.recall_score(y, pred, zero_division=0),
        "log_loss": lambda: m.log_loss(y, p, labels=[0, 1]),
        "brier": lambda: m.brier_score_loss(y, p, pos_label=1),
    }


def _multiclass(y_true: Any, proba: Any, classes: Sequence[Any]) -> dict[str, Callable[[], float]]:
    import numpy as np
    from sklearn import metrics as m

    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=float)
    labels = list(classes)
    pred = predicted_classes(p, labels)
    return {
        "f1_macro": lambda: m.f1_score(y, pred, labels=labels, average="macro", zero_division=0),
        "f1_weighted": lambda: m.f1_score(y, pred, labels=labels, average="weighted", zero_division=0),
        "accuracy": lambda: m.accuracy_score(y, pred),
        "balanced_accuracy": lambda: _balanced_accuracy(y, pred),
        "log_loss": lambda: _log_loss(y, p, labels),
    }


def _log_loss(y: Any, p: Any, labels: list[Any]) -> float:
    """sklearn's log_loss reads the probability columns in sorted label order (its LabelBinarizer's), whatever
    order `labels` lists: put the columns in that order first (estimators' `classes_` already are)."""
    from sklearn import metrics as m

    order = sorted(range(len(labels)), key=lambda i: labels[i])
    return float(m.log_loss(y, p[:, order], labels=[labels[i] for i in order]))


def _balanced_accuracy(y: Any, pred: Any) -> float:
    """sklearn's balanced accuracy, without its warning for a class predicted but absent from `y`."""
    import warnings

    from sklearn import metrics as m

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(m.balanced_accuracy_score(y, pred))


def _regression(y_true: Any, values: Any) -> dict[str, Callable[[], float]]:
    import numpy as np
    from sklearn import metrics as m

    y = np.asarray(y_true, dtype=float)
    v = np.asarray(values, dtype=float)
    constant = len(np.unique(y)) < 2  # r2 is undefined without spread in the truth
    return {
        "rmse": lambda: m.root_mean_squared_error(y, v),
        "mae": lambda: m.mean_absolute_error(y, v),
        "r2": lambda: float("nan") if constant else m.r2_score(y, v),
        "mape": lambda: m.mean_absolute_percentage_error(y, v),
    }


def predicted_classes(proba: Any, classes: Sequence[Any]) -> Any:
    """The most probable class per row (ties: the first column, as the estimators' own `predict`)."""
    import numpy as np

    return np.asarray(list(classes), dtype=object)[np.asarray(proba, dtype=float).argmax(axis=1)]


def per_class_recall(y_true: Any, proba: Any, classes: Sequence[Any]) -> dict[str, float | None]:
    """Recall of each class (str(label) -> share of its rows predicted as it); None for a class without rows."""
    import numpy as np

    y = np.asarray(y_true, dtype=object)
    pred = predicted_classes(proba, classes)
    out: dict[str, float | None] = {}
    for label in classes:
        rows = y == label
        out[str(label)] = float((pred[rows] == label).mean()) if rows.any() else None
    return out


def confusion(y_true: Any, proba: Any, classes: Sequence[Any]) -> list[list[int]]:
    """Confusion matrix (rows: true class, columns: predicted class, both in `classes` order)."""
    from sklearn.metrics import confusion_matrix

    labels = list(classes)
    return [[int(v) for v in row] for row in confusion_matrix(y_true, predicted_classes(proba, labels),
                                                             labels=labels).tolist()]


def plain_labels(classes: Iterable[Any]) -> list[Any]:
    """numpy scalars -> Python ones, so class labels are JSON (tags, reports) as a user wrote them."""
    out = []
    for label in classes:
        item = getattr(label, "item", None)
        out.append(item() if callable(item) else label)
    return out


def align_proba(proba: Any, model_classes: Sequence[Any], classes: Sequence[Any]) -> Any:
    """Probabilities of a model with `model_classes` columns re-ordered to `classes` (a class the model never
    saw gets 0): a champion trained before a class appeared is scored on the challenger's columns."""
    import numpy as np

    p = np.asarray(proba, dtype=float)
    position = {str(label): i for i, label in enumerate(model_classes)}
    out = np.zeros((p.shape[0], len(classes)), dtype=float)
    for j, label in enumerate(classes):
        i = position.get(str(label))
        if i is not None:
            out[:, j] = p[:, i]
    return out
