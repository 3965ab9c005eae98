"""Task types (binary, multiclass, regression): the metrics each one takes and how a spec's task is decided.

Imported at DAG parse time through `core.spec`: only the standard library here (a suite is JSON read with
`json`, not Great Expectations).

How the task is decided, first match wins (`decide_task`):
1. the spec's `task`, when written;
2. the label contract: the validation suite's `meta.airflow_mlops.label_column` and the expectations on that
   column: a value set of 2 values is binary, of 3 or more multiclass; a float type, or a range
   (`expect_column_values_to_be_between`) without a value set, is regression;
3. the metrics the spec names (evaluation.primary_metric / metrics / thresholds): they belong to one task;
4. binary, the only task before this field existed (so every older spec keeps its meaning and its hash).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

TaskType = Literal["binary", "multiclass", "regression"]
TASKS: tuple[TaskType, ...] = ("binary", "multiclass", "regression")

METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "binary": ("roc_auc", "accuracy", "f1", "precision", "recall", "log_loss", "average_precision", "brier"),
    # per-class recall is always reported for multiclass (a table, not one number to compare on)
    "multiclass": ("f1_macro", "f1_weighted", "accuracy", "balanced_accuracy", "log_loss"),
    "regression": ("rmse", "mae", "r2", "mape"),
}
ALL_METRICS: tuple[str, ...] = tuple(dict.fromkeys(m for names in METRICS_BY_TASK.values() for m in names))
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "brier", "rmse", "mae", "mape"})
DEFAULT_PRIMARY: dict[str, str] = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"}
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("roc_auc", "accuracy", "f1", "log_loss"),
    "multiclass": ("f1_macro", "f1_weighted", "accuracy", "log_loss"),
    "regression": ("rmse", "mae", "r2", "mape"),
}
_FLOAT_TYPES = ("float", "double", "decimal", "numeric", "real")


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def tasks_of(metric: str) -> tuple[str, ...]:
    """The tasks a metric belongs to (accuracy and log_loss belong to binary and multiclass)."""
    return tuple(task for task, names in METRICS_BY_TASK.items() if metric in names)


@dataclass(frozen=True)
class TaskDecision:
    task: TaskType
    source: str  # how it was decided, in words `airflow-mlops check` prints

    def __str__(self) -> str:
        return f"{self.task} ({self.source})"


def decide_task(explicit: str | None, metrics: Iterable[str], suite_path: Path | None) -> TaskDecision:
    """The spec's task, or the one its label contract or metrics state (module docstring)."""
    if explicit is not None:
        return TaskDecision(explicit, "spec: task")  # type: ignore[arg-type]  # validated by the spec model
    stated = label_contract_task(suite_path) if suite_path is not None else None
    if stated is not None:
        return stated
    named = [m for m in dict.fromkeys(metrics) if m in ALL_METRICS]
    common = set(TASKS).intersection(*(set(tasks_of(m)) for m in named)) if named else set()
    for task in TASKS:  # binary first: accuracy/log_loss alone keep the historical default
        if task in common:
            return TaskDecision(task, f"from the metrics the spec names ({', '.join(named)})")
    return TaskDecision("binary", "default: neither the spec, its label contract nor its metrics state a task")


def label_contract_task(suite_path: Path) -> TaskDecision | None:
    """The task a suite's label contract states, or None (no file, no label column, no telling expectation)."""
    suite = _read_suite(suite_path)
    contract = (suite.get("meta") or {}).get("airflow_mlops") or {}
    label = contract.get("label_column") if isinstance(contract, Mapping) else None
    if not label:
        return None
    found = _label_expectations(suite.get("expectations") or [], str(label))
    where = f"label contract {suite_path.name}: column {label!r}"
    values = found.get("expect_column_values_to_be_in_set", {}).get("value_set")
    if isinstance(values, list) and len(set(map(str, values))) >= 2:
        task: TaskType = "binary" if len(set(map(str, values))) == 2 else "multiclass"
        return TaskDecision(task, f"{where} takes {len(set(map(str, values)))} values")
    type_ = str(found.get("expect_column_type_to_be", {}).get("type_") or "").lower()
    if any(word in type_ for word in _FLOAT_TYPES):
        return TaskDecision("regression", f"{where} has type {type_}")
    if "expect_column_values_to_be_between" in found:
        return TaskDecision("regression", f"{where} is a numeric range, not a value set")
    return None


def _read_suite(path: Path) -> Mapping[str, Any]:
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a missing or broken suite is reported by `check` and the validation task, not here
    return suite if isinstance(suite, Mapping) else {}


def _label_expectations(expectations: list[Any], label: str) -> dict[str, dict[str, Any]]:
    """expectation type -> kwargs, for the expectations on the label column."""
    found: dict[str, dict[str, Any]] = {}
    for item in expectations:
        if not isinstance(item, Mapping):
            continue
        kwargs = item.get("kwargs") or {}
        kind = item.get("type") or item.get("expectation_type")  # GX 1.x, and the 0.x key
        if isinstance(kwargs, Mapping) and kwargs.get("column") == label and kind:
            found[str(kind)] = dict(kwargs)
    return found
