"""Fairness across groups (spec `evaluation.fairness`): fairlearn's metrics on the held-out rows.

Computed for the challenger and, when there is one, the champion on the same rows, per group column. A
challenger breach blocks promotion like a threshold does (absolute, whatever the champion scores); the
champion's values are reported beside it so a reviewer sees whether the new version is fairer or less fair.

Metric names:
* binary: fairlearn's named metrics - `demographic_parity_difference`, `equalized_odds_difference`,
  `equal_opportunity_difference`, `false_positive_rate_difference`, `true_positive_rate_difference`,
  `selection_rate_difference` and their `_ratio` forms (on hard predictions at the decision threshold);
* any task: `<metric>_difference` for a task metric computed per group with fairlearn's `MetricFrame`
  (`accuracy_difference`, `f1_macro_difference`, `mae_difference`, `rmse_difference`...): the largest
  difference between two groups (metrics that need probabilities, such as roc_auc, are not offered: the
  fairness metrics judge the decisions a model makes).
A `_difference` breaches when it is above `max`; a `_ratio` (1 = equal) when it is below `min_ratio`.
Groups with fewer than `min_group_rows` rows are left out of the comparison (one row can make any gap) and
listed as such in the result: a deliberate, reported choice rather than a silent one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FAIRLEARN_BINARY = (
    "demographic_parity", "equalized_odds", "equal_opportunity", "false_positive_rate", "true_positive_rate",
    "selection_rate",
)
# Task metrics with a per-group form on hard predictions (`_task_metric`); roc_auc, average_precision, log_loss
# and brier need probabilities, so they have no `_difference` here.
PER_GROUP_METRICS = ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "f1_macro", "f1_weighted", "mae",
                     "rmse", "r2", "mape")
GROUP_TABLE_ROWS = 50  # groups shown per column in the report; the verdict uses all of them


def fairness_metric_names(task: str) -> tuple[str, ...]:
    """Every metric name `evaluation.fairness.metrics` takes for a task."""
    from airflow_mlops.core.tasks import METRICS_BY_TASK

    own = tuple(f"{m}_difference" for m in METRICS_BY_TASK[task] if m in PER_GROUP_METRICS)
    if task != "binary":
        return own
    return tuple(f"{base}_{kind}" for base in FAIRLEARN_BINARY for kind in ("difference", "ratio")) + own


@dataclass
class FairnessResult:
    groups: list[dict[str, Any]] = field(default_factory=list)  # one per (group column, metric)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per column: rows per group
    skipped_groups: dict[str, list[str]] = field(default_factory=dict)
    breaches: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_fairness(
    config: Mapping[str, Any], *, task: str, y_true: Sequence[Any], challenger_pred: Sequence[Any],
    champion_pred: Sequence[Any] | None, frame: pd.DataFrame,
) -> FairnessResult:
    """The spec's fairness metrics per group column, for both models; breaches name column, metric and bar."""
    import numpy as np
    import pandas as pd

    result = FairnessResult()
    y = np.asarray(y_true)
    for column in config["groups"]:
        if column not in frame.columns:
            raise ValueError(f"evaluation.fairness.groups: column {column!r} is not in the held-out rows "
                             f"{sorted(map(str, frame.columns))}; name a feature or a label-table column "
                             "(features.entity_df.attributes carries one that is no model input)")
        values = frame[column].astype("string").fillna("<missing>").to_numpy()
        sizes = pd.Series(values).value_counts()
        kept = set(sizes[sizes >= config.get("min_group_rows", 30)].index)
        result.skipped_groups[column] = sorted(str(g) for g in sizes.index if g not in kept)
        mask = np.isin(values, list(kept))
        if len(kept) < 2:
            result.breaches.append(f"fairness {column}: fewer than 2 groups with >= {config.get('min_group_rows', 30)} "
                                   "rows, so no comparison is possible; lower min_group_rows or evaluate on more rows")
            continue
        models = {"challenger": np.asarray(challenger_pred)[mask]}
        if champion_pred is not None:
            models["champion"] = np.asarray(champion_pred)[mask]
        for metric in config["metrics"]:
            entry = {"column": column, "metric": metric, **{
                name: _score(metric, task, y[mask], pred, values[mask]) for name, pred in models.items()}}
            entry.update(_bar(metric, config))
            entry["breached"] = _breached(entry["challenger"], entry)
            if entry["breached"]:
                bound = f"max {entry['max']}" if "max" in entry else f"min_ratio {entry['min_ratio']}"
                result.breaches.append(f"fairness {column}: challenger {metric} {entry['challenger']:.4g} breaks "
                                       f"evaluation.fairness.{bound}")
            result.groups.append(entry)
        result.tables[column] = _group_table(task, y[mask], models, values[mask])
    return result


def missing_group_columns(config: Mapping[str, Any], rows: pd.DataFrame, *, source: str) -> str | None:
    """Why the held-out rows cannot be grouped as `evaluation.fairness.groups` asks (None when they can): the
    missing column(s), the spec file, the columns there are, and where a group column can come from."""
    missing = [c for c in config["groups"] if c not in rows.columns]
    if not missing:
        return None
    return (f"{source}: evaluation.fairness.groups: column(s) {missing} are not on the held-out rows of the "
            f"training set; available columns: {sorted(map(str, rows.columns))}. A group column must be in the "
            "training set: a feature, an entity key, a request feature (features.entity_df.request_features) or, "
            "for a column of the entity dataset the model must not use as an input (a protected attribute), an "
            "attribute (features.entity_df.attributes); add it there or name one of the available columns")


def _bar(metric: str, config: Mapping[str, Any]) -> dict[str, float]:
    if metric.endswith("_ratio"):
        return {"min_ratio": float(config.get("min_ratio", 0.8))}
    return {"max": float(config["max"])}


def _breached(value: float, entry: Mapping[str, Any]) -> bool:
    if value != value:  # NaN: undefined on these rows (e.g. no positives in a group) is not a pass
        return True
    return bool(value < entry["min_ratio"] if "min_ratio" in entry else value > entry["max"])


def _score(metric: str, task: str, y: Any, pred: Any, groups: Any) -> float:
    from fairlearn import metrics as fm

    base, _, kind = metric.rpartition("_")
    if task == "binary" and base in FAIRLEARN_BINARY:
        return float(getattr(fm, metric)(y, pred, sensitive_features=groups))
    frame = fm.MetricFrame(metrics=_task_metric(base), y_true=y, y_pred=pred, sensitive_features=groups)
    return float(frame.difference(method="between_groups"))


def _task_metric(name: str) -> Any:
    """A task metric as a (y_true, y_pred) function on hard predictions/values."""
    import numpy as np
    from sklearn import metrics as m

    functions = {
        "accuracy": m.accuracy_score, "balanced_accuracy": m.balanced_accuracy_score,
        "f1": lambda y, p: m.f1_score(y, p, zero_division=0),
        "precision": lambda y, p: m.precision_score(y, p, zero_division=0),
        "recall": lambda y, p: m.recall_score(y, p, zero_division=0),
        "f1_macro": lambda y, p: m.f1_score(y, p, average="macro", zero_division=0),
        "f1_weighted": lambda y, p: m.f1_score(y, p, average="weighted", zero_division=0),
        "mae": m.mean_absolute_error, "rmse": lambda y, p: float(np.sqrt(m.mean_squared_error(y, p))),
        "r2": m.r2_score, "mape": m.mean_absolute_percentage_error,
    }
    if name not in functions:
        raise ValueError(f"no per-group form of metric {name!r}")
    return functions[name]


def _group_table(task: str, y: Any, models: Mapping[str, Any], groups: Any) -> list[dict[str, Any]]:
    """Per group: rows and, per model, the selection rate and recall (binary) or the task's error/accuracy."""
    from fairlearn import metrics as fm

    per_group = ({"selection_rate": fm.selection_rate, "true_positive_rate": fm.true_positive_rate}
                 if task == "binary" else {"mae": _task_metric("mae")} if task == "regression"
                 else {"accuracy": _task_metric("accuracy")})
    rows: dict[str, dict[str, Any]] = {}
    for name, pred in models.items():
        frame = fm.MetricFrame(metrics={**per_group, "rows": fm.count}, y_true=y, y_pred=pred,
                               sensitive_features=groups)
        for group, values in frame.by_group.iterrows():
            row = rows.setdefault(str(group), {"group": str(group), "rows": int(values["rows"])})
            row.update({f"{name}_{metric}": float(values[metric]) for metric in per_group})
    return sorted(rows.values(), key=lambda r: -r["rows"])[:GROUP_TABLE_ROWS]
