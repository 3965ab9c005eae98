"""Online experiments (A/B tests, bandits) as plain data: the spec's rules, per-row metric values, the record.

The **record** is the one piece of shared state: a registered-model tag `airflow_mlops.experiment` holding JSON
{id, type, champion, candidate, arms {version: share}, started_at, max_duration, status, ...}. It is written
only under the registry lease (core/model_registry.py), like alias moves, with an audit entry; every serving
worker reads it in the poll that follows the champion alias (serving/models.py) and routes sticky entity-key
buckets by its shares (serving/routing.py). So all workers and replicas share the weights with no new store.

**Per-row metric values** are what the readout compares between arms: a metric that is a mean of per-row
values (accuracy: correct, log_loss, brier; regression: squared error for rmse, absolute error for mae,
absolute percentage error for mape) goes to the always-valid mSPRT interval; any other metric (roc_auc,
average_precision, f1, r2, ...) is computed on whole (bootstrap-resampled) arms with alpha spending
(core/experiment_stats.py). rmse is compared as mean squared error: the same order, so the same decision,
and `max_regression` is then in squared units. One function per task below; multiclass is refused at spec
parse until the prediction log holds class probabilities. No Airflow, numpy imported inside functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.lineage import TAG_PREFIX
from airflow_mlops.core.tasks import METRICS_BY_TASK, higher_is_better

if TYPE_CHECKING:
    import numpy as np

    from airflow_mlops.core.spec import Experiment

TAG = f"{TAG_PREFIX}experiment"
RUNNING, PROMOTED, ROLLED_BACK, SUPERSEDED, STOPPED = "running", "promoted", "rolled_back", "superseded", "stopped"
ROUTE_PREFIX = "experiment:"  # prediction-log route label of every row an experiment routed
# Per-row metrics per task: the metric is the mean of these values over rows (lower_is_better from core/tasks.py).
PER_ROW: dict[str, frozenset[str]] = {
    "binary": frozenset({"accuracy", "log_loss", "brier"}),
    "regression": frozenset({"rmse", "mae", "mape"}),
}
BANDIT_DEFAULT = {"binary": "accuracy", "regression": "rmse"}
SUPPORTED_TASKS = tuple(PER_ROW)
_EPS = 1e-15


# ------------------------------------------------------------------------------------------ spec rules
def experiment_metric(experiment: Experiment, task: str, primary_metric: str) -> str:
    """The metric an experiment compares: its own, else the primary metric (a bandit: a per-row one)."""
    if experiment.metric:
        return str(experiment.metric)
    if experiment.type == "bandit" and primary_metric not in PER_ROW.get(task, ()):
        return BANDIT_DEFAULT.get(task, primary_metric)
    return primary_metric


def experiment_problems(experiment: Experiment, task: str, primary_metric: str, *, canary: bool,
                        target: str) -> list[str]:
    """What makes `promotion.experiment` unusable in this spec, each with its fix (empty: fine)."""
    where = "promotion.experiment"
    problems = []
    if canary:
        problems.append(f"{where} and promotion.canary both decide how a new version meets traffic; keep one")
    if target != "local":
        problems.append(f"{where} needs serving.target 'local' (got {target!r}): the arms are routed inside the "
                        "serving app that follows the registry; set serving.target: local or remove the experiment")
    if task not in SUPPORTED_TASKS:
        problems.append(f"{where}: {task} models are not supported yet (the prediction log holds one number per row, "
                        f"not class probabilities); experiments support {', '.join(SUPPORTED_TASKS)}")
        return problems
    metric = experiment_metric(experiment, task, primary_metric)
    if metric not in METRICS_BY_TASK[task]:
        problems.append(f"{where}.metric: {metric!r} is not a {task} metric; allowed: {list(METRICS_BY_TASK[task])}")
    elif experiment.type == "bandit" and metric not in PER_ROW[task]:
        problems.append(f"{where}.metric: a bandit's reward is per labelled prediction, and {metric!r} is not a mean "
                        f"of per-row values; use one of {sorted(PER_ROW[task])}")
    if experiment.type == "bandit":
        arms = experiment.arms if isinstance(experiment.arms, int) else len(experiment.arms) + 2
        if experiment.min_share * arms > 1.0:
            problems.append(f"{where}.min_share {experiment.min_share} x up to {arms} arms exceeds all the traffic; "
                            f"lower it to at most {1.0 / arms:.3g}")
    return problems


# ------------------------------------------------------------------------------------ per-row values
def is_per_row(task: str, metric: str) -> bool:
    return metric in PER_ROW.get(task, frozenset())


def row_values(task: str, metric: str, labels: Any, predictions: Any) -> np.ndarray:
    """The per-row values whose mean is `metric` (module docstring); ValueError for a whole-sample metric."""
    import numpy as np

    y = np.asarray(labels, dtype=float)
    p = np.asarray(predictions, dtype=float)
    rows = {"binary": _binary_rows, "regression": _regression_rows}.get(task)
    values = rows(metric, y, p) if rows is not None else None
    if values is None:
        raise ValueError(f"{metric} of a {task} model is not a mean of per-row values; use whole_sample_metric")
    return np.asarray(values, dtype=float)


def _binary_rows(metric: str, y: np.ndarray, p: np.ndarray) -> Any:
    """y in {0, 1}, p = probability of 1."""
    import numpy as np

    if metric == "accuracy":
        return ((p >= 0.5) == (y == 1)).astype(float)
    if metric == "log_loss":
        q = np.clip(p, _EPS, 1 - _EPS)
        return -(y * np.log(q) + (1 - y) * np.log(1 - q))
    if metric == "brier":
        return (p - y) ** 2
    return None


def _regression_rows(metric: str, y: np.ndarray, p: np.ndarray) -> Any:
    import numpy as np

    if metric == "rmse":
        return (p - y) ** 2
    if metric == "mae":
        return np.abs(p - y)
    if metric == "mape":
        return np.abs(p - y) / np.maximum(np.abs(y), _EPS)
    return None


def whole_sample_metric(task: str, metric: str) -> Callable[[Any], float]:
    """metric(rows) for an (n, 2) array of [label, prediction] rows (what the bootstrap resamples)."""
    if task == "binary" and metric == "roc_auc":
        return rank_auc
    if task == "binary":
        from airflow_mlops.core.training import compute_metrics

        return lambda rows: compute_metrics(rows[:, 0], rows[:, 1], [metric])[metric]
    if task == "regression" and metric == "r2":
        from sklearn.metrics import r2_score

        return lambda rows: float(r2_score(rows[:, 0], rows[:, 1]))
    raise ValueError(f"{metric} of a {task} model has no whole-sample function here; experiments support "
                     f"{', '.join(SUPPORTED_TASKS)} metrics")


def rank_auc(rows: Any) -> float:
    """ROC AUC of [label, score] rows by the rank-sum (Mann-Whitney) formula, ties averaged: equal to
    sklearn's roc_auc_score, ~10x faster on the bootstrap's thousand resamples (no input validation)."""
    import numpy as np
    from scipy.stats import rankdata

    positive = rows[:, 0] == 1
    n_pos = int(positive.sum())
    n_neg = len(rows) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(rows[:, 1])
    return float((np.sum(ranks[positive]) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ---------------------------------------------------------------------------------------- the record
@dataclass(frozen=True)
class ExperimentRecord:
    """The shared state of one experiment (the registered-model tag `TAG`); see the module docstring."""

    id: str
    type: str  # ab | bandit
    champion: str  # the version holding `champion` when it started
    candidate: str  # the new version
    arms: dict[str, float]  # version -> share of entity keys (sums to 1)
    started_at: str
    max_duration: str
    metric: str
    task: str = "binary"
    alpha: float = 0.05
    min_labels: int = 200
    rule: str = "improvement"
    max_regression: float = 0.0
    policy: str = "thompson"
    min_share: float = 0.05
    status: str = RUNNING
    looks: int = 0
    spent_alpha: float = 0.0
    interval: dict[str, Any] | None = None  # running intersection {estimate, low, high, method, p_value}
    last: dict[str, Any] | None = None  # the last look: {at, labels, values, decision, reason}
    decision: str | None = None
    reason: str | None = None
    ended_at: str | None = None
    run_id: str | None = None  # MLflow run holding the history of looks (metrics by step)
    started_by: dict[str, Any] = field(default_factory=dict)  # {dag_id, run_id}
    ended_by: dict[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def route(self) -> str:
        return f"{ROUTE_PREFIX}{self.id}"

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    def started(self) -> datetime:
        return _utc(datetime.fromisoformat(self.started_at))

    def deadline(self) -> datetime:
        from airflow_mlops.core.spec import duration_seconds

        return self.started() + timedelta(seconds=duration_seconds(self.max_duration))

    def information(self, now: datetime) -> float:
        """Elapsed share of max_duration (the alpha-spending clock), in (0, 1]."""
        total = (self.deadline() - self.started()).total_seconds()
        return min(1.0, max((_utc(now) - self.started()).total_seconds() / total, 1e-9))

    def ended(self, status: str, decision: str, reason: str, at: datetime, by: Mapping[str, Any]) -> ExperimentRecord:
        return replace(self, status=status, decision=decision, reason=reason, ended_at=_iso(at), ended_by=dict(by))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> ExperimentRecord:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def read_record(tags: Mapping[str, str]) -> ExperimentRecord | None:
    """The record among a registered model's tags; None when there is none or it cannot be read."""
    raw = tags.get(TAG)
    if not raw:
        return None
    try:
        return ExperimentRecord.from_json(raw)
    except (ValueError, TypeError):
        return None  # a hand-edited tag: no experiment, and the next start replaces it


def experiment_id(candidate: str, at: datetime) -> str:
    """Short, readable and unique per model: the new version and the start time (route label, metrics)."""
    return f"v{candidate}-{_utc(at):%Y%m%dT%H%M%S}"


def ab_arms(champion: str, candidate: str, traffic: float) -> dict[str, float]:
    return {champion: round(1.0 - traffic, 12), candidate: round(traffic, 12)}


def equal_arms(versions: list[str]) -> dict[str, float]:
    return {version: 1.0 / len(versions) for version in versions}


def new_record(spec: Experiment, *, task: str, primary_metric: str, champion: str, candidate: str,
               arms: list[str], at: datetime, started_by: Mapping[str, Any], run_id: str | None = None
               ) -> ExperimentRecord:
    """The record an experiment starts with: A/B at `traffic`, a bandit with equal shares."""
    shares = ab_arms(champion, candidate, spec.traffic) if spec.type == "ab" else equal_arms(arms)
    return ExperimentRecord(
        id=experiment_id(candidate, at), type=spec.type, champion=champion, candidate=candidate,
        arms=dict(sorted(shares.items(), key=lambda item: int(item[0]))),
        started_at=_iso(at), max_duration=spec.max_duration, metric=experiment_metric(spec, task, primary_metric),
        task=task, alpha=spec.alpha, min_labels=spec.min_labels, rule=spec.rule, max_regression=spec.max_regression,
        policy=spec.policy, min_share=spec.min_share, run_id=run_id, started_by=dict(started_by))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return _utc(value).isoformat(timespec="seconds")
