"""One look of an online experiment: labelled predictions per arm -> a decision, or new bandit shares.

A/B (`ab_look`): fewer than `min_labels` labelled predictions in an arm -> extend (at max_duration: the
champion stays). Otherwise the difference new - champion of the record's metric (positive = the new version
is better) gets an always-valid interval: mSPRT for per-row metrics, the alpha-spending bootstrap for the
others, with the spent alpha and the running intersection carried from look to look in the record
(core/experiment_stats.py). `decide()` turns it into promote / rollback / extend with the reason.

Bandit (`bandit_look`): rewards are the per-row metric values signed so that higher is better (accuracy:
Bernoulli rewards, Beta posteriors; the others a normal approximation); Thompson or UCB1 shares with the
`min_share` floor (core/bandits.py) replace the record's. At max_duration the bandit ends: the arm whose
posterior probability of being best is at least 1 - alpha becomes champion (if it is not already), else the
champion stays. No Airflow; numpy is imported inside functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.experiment_stats import EXTEND, PROMOTE, ROLLBACK, Interval, decide
from airflow_mlops.core.experiments import (
    PROMOTED,
    ROLLED_BACK,
    ExperimentRecord,
    is_per_row,
    row_values,
    whole_sample_metric,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

UPDATE = "update"  # a bandit look that only changed the shares
LABEL = "_label"  # core.performance's name of the joined label column
BOOTSTRAP_SAMPLES = 500  # the standard error from 500 resamples is within ~3 % of its value


@dataclass(frozen=True)
class Look:
    """What one readout saw and decided."""

    at: str
    decision: str  # promote | rollback | extend | update
    reason: str
    final: bool  # max_duration reached
    labels: dict[str, int]  # version -> labelled predictions
    values: dict[str, float | None]  # version -> the metric on its labelled predictions
    interval: Interval | None = None  # A/B: the running interval after this look
    shares: dict[str, float] | None = None  # bandit: the new shares
    winner: str | None = None  # the version to promote
    served: dict[str, int] | None = None  # version -> predictions it answered in the experiment (its pulls)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "decision": self.decision, "reason": self.reason, "final": self.final,
                "labels": dict(self.labels), "values": {v: _finite(x) for v, x in self.values.items()},
                "interval": interval_dict(self.interval), "shares": self.shares, "winner": self.winner,
                "served": self.served}


def take_look(record: ExperimentRecord, joined: pd.DataFrame, now: datetime,
              served: Mapping[str, int] | None = None) -> Look:
    """The look of `record` at `now` on `joined` (model_version, prediction, `_label` rows of this experiment);
    `served`: predictions per arm so far, labelled or not (recorded with the look)."""
    arms = _arms(record, joined)
    look = ab_look(record, arms, now) if record.type == "ab" else bandit_look(record, arms, now)
    return replace(look, served={v: int(served.get(v, 0)) for v in record.arms}) if served is not None else look


def after_look(record: ExperimentRecord, look: Look, by: Mapping[str, Any]) -> ExperimentRecord:
    """The record after `look`: one more look, the running interval and spent alpha, the shares, the end."""
    interval = look.interval
    updated = replace(
        record, looks=record.looks + 1, last=look.to_dict(), arms=look.shares or record.arms,
        interval=interval_dict(interval) if interval is not None else record.interval,
        spent_alpha=interval.alpha_spent if interval is not None and interval.alpha_spent is not None
        else record.spent_alpha)
    if look.decision == PROMOTE:
        return updated.ended(PROMOTED, PROMOTE, look.reason, datetime.fromisoformat(look.at), by)
    if look.decision == ROLLBACK:
        return updated.ended(ROLLED_BACK, ROLLBACK, look.reason, datetime.fromisoformat(look.at), by)
    return updated


# ------------------------------------------------------------------------------------------------ A/B
def ab_look(record: ExperimentRecord, arms: Mapping[str, tuple[np.ndarray, np.ndarray]], now: datetime) -> Look:
    final = now >= record.deadline()
    labels = {v: len(arms[v][0]) for v in record.arms}
    values = {v: arm_value(record, *arms[v]) for v in record.arms}
    base: dict[str, Any] = {"at": _iso(now), "final": final, "labels": labels, "values": values}
    short = [v for v in (record.candidate, record.champion) if labels[v] < record.min_labels]
    if short:
        counts = ", ".join(f"v{v} {labels[v]}" for v in (record.candidate, record.champion))
        reason = f"labelled predictions per arm: {counts}; min_labels {record.min_labels} per arm before a decision"
        if final:
            return Look(decision=ROLLBACK, reason=f"{reason}; max_duration reached: inconclusive, the champion "
                                                  "stays", **base)
        return Look(decision=EXTEND, reason=f"{reason}: the experiment goes on", **base)
    interval = _interval(record, arms[record.candidate], arms[record.champion], now).intersect(previous(record))
    decision, reason = decide(interval, rule=record.rule, max_regression=record.max_regression, final_look=final)
    return Look(decision=decision, reason=f"{record.metric} v{record.candidate} - v{record.champion}: {reason}",
                interval=interval, winner=record.candidate if decision == PROMOTE else None,
                **base)


def _interval(record: ExperimentRecord, new: tuple[np.ndarray, np.ndarray], champion: tuple[np.ndarray, np.ndarray],
              now: datetime) -> Interval:
    import numpy as np

    from airflow_mlops.core.experiment_stats import msprt_difference, spending_bootstrap_difference

    if is_per_row(record.task, record.metric):
        return msprt_difference(row_values(record.task, record.metric, new[0], new[1]).tolist(),
                                row_values(record.task, record.metric, champion[0], champion[1]).tolist(),
                                alpha=record.alpha, higher_is_better=record.higher_is_better)
    return spending_bootstrap_difference(
        whole_sample_metric(record.task, record.metric), np.column_stack(new), np.column_stack(champion),
        information=record.information(now), spent_before=record.spent_alpha, alpha=record.alpha,
        higher_is_better=record.higher_is_better, samples=BOOTSTRAP_SAMPLES, seed=record.looks)


def previous(record: ExperimentRecord) -> Interval | None:
    """The running interval carried in the record (None: no look decided anything yet)."""
    saved = record.interval
    if not saved:
        return None
    low, high = saved.get("low"), saved.get("high")
    return Interval(float(saved["estimate"]), -math.inf if low is None else float(low),
                    math.inf if high is None else float(high), str(saved["method"]), saved.get("p_value"),
                    saved.get("alpha_spent"))


def interval_dict(interval: Interval | None) -> dict[str, Any] | None:
    if interval is None:
        return None
    return {"estimate": _finite(interval.estimate), "low": _finite(interval.low), "high": _finite(interval.high),
            "method": interval.method, "p_value": interval.p_value, "alpha_spent": interval.alpha_spent}


# --------------------------------------------------------------------------------------------- bandit
def bandit_look(record: ExperimentRecord, arms: Mapping[str, tuple[np.ndarray, np.ndarray]], now: datetime) -> Look:
    from airflow_mlops.core.bandits import thompson_shares, ucb_shares

    final = now >= record.deadline()
    stats = _rewards(record, arms)
    bernoulli = record.metric == "accuracy"
    labels = {v: stats[v].pulls for v in record.arms}
    base: dict[str, Any] = {"at": _iso(now), "final": final, "labels": labels,
                            "values": {v: arm_value(record, *arms[v]) for v in record.arms}}
    if record.policy == "ucb":
        shares = ucb_shares(stats, min_share=record.min_share)
    else:
        shares = thompson_shares(stats, min_share=record.min_share, seed=record.looks, bernoulli=bernoulli)
    if not final:
        shown = ", ".join(f"v{v} {shares[v]:.1%}" for v in record.arms)
        return Look(decision=UPDATE, reason=f"{record.policy} shares from {sum(labels.values())} labelled "
                                            f"predictions: {shown}", shares=shares, **base)
    best = thompson_shares(stats, min_share=0.0, seed=record.looks, bernoulli=bernoulli)  # P(arm is best)
    leader = max(best, key=lambda v: best[v])
    decision, reason = _bandit_end(record, labels, leader, best[leader])
    return Look(decision=decision, reason=reason, shares=shares, winner=leader if decision == PROMOTE else None,
                **base)


def _bandit_end(record: ExperimentRecord, labels: Mapping[str, int], leader: str, chance: float) -> tuple[str, str]:
    head = f"max_duration reached: v{leader} is the best arm with probability {chance:.3f}"
    short = [v for v, n in labels.items() if n < record.min_labels]
    if short:
        return ROLLBACK, (f"max_duration reached with fewer than min_labels {record.min_labels} labelled predictions "
                          f"for {', '.join('v' + v for v in short)}: inconclusive, the champion stays")
    if leader == record.champion:
        return ROLLBACK, f"{head}: it is the champion, which stays"
    if chance >= 1.0 - record.alpha:
        return PROMOTE, f"{head} (>= 1 - alpha = {1.0 - record.alpha:g}): it becomes champion"
    return ROLLBACK, f"{head} (< 1 - alpha = {1.0 - record.alpha:g}): inconclusive, the champion stays"


def _rewards(record: ExperimentRecord, arms: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    from airflow_mlops.core.bandits import ArmStats

    sign = 1.0 if record.higher_is_better else -1.0
    return {v: ArmStats.of((sign * row_values(record.task, record.metric, *arms[v])).tolist()) for v in record.arms}


# -------------------------------------------------------------------------------------------- helpers
def arm_value(record: ExperimentRecord, labels: np.ndarray, predictions: np.ndarray) -> float | None:
    """The metric on one arm's labelled predictions, in its own units (None: no rows, or undefined)."""
    import numpy as np

    if len(labels) == 0:
        return None
    if is_per_row(record.task, record.metric):
        mean = float(np.mean(row_values(record.task, record.metric, labels, predictions)))
        value = math.sqrt(mean) if record.metric == "rmse" else mean
    else:
        value = whole_sample_metric(record.task, record.metric)(np.column_stack([labels, predictions]))
    return _finite(float(value))


def _arms(record: ExperimentRecord, joined: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(labels, predictions) of each arm's joined rows."""
    versions = joined["model_version"].astype(str).to_numpy()
    labels, predictions = joined[LABEL].to_numpy(dtype=float), joined["prediction"].to_numpy(dtype=float)
    return {v: (labels[versions == v], predictions[versions == v]) for v in record.arms}


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _iso(value: datetime) -> str:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat(timespec="seconds")
