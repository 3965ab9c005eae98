"""Multi-armed bandit routing weights over 2..N registered versions, from their labelled outcomes.

The serving app routes a share of requests to each arm; a scheduled task recomputes the shares from the
outcomes joined so far and publishes them. Shares, not a per-request choice: every serving worker applies the
same weights (sticky by entity key), and the weights change only at the task's schedule.

* **Thompson sampling** (default): the share of an arm is the posterior probability that it is the best arm,
  estimated from `draws` seeded posterior samples. Rewards in [0, 1] (e.g. "prediction was right") use a
  Beta(1 + successes, 1 + failures) posterior per arm; other rewards (e.g. minus the squared error) a normal
  approximation N(mean, var / n).
* **UCB1**: the arm with the highest upper confidence bound mean + sqrt(2 ln N / n) gets the traffic.

A guard keeps `min_share` of the traffic on every arm (an arm never starves, so its estimate keeps improving
and a change in the world can still be seen): share_i = min_share + (1 - K min_share) p_i.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ArmStats:
    """Labelled outcomes of one arm so far: count, sum and sum of squares of its rewards."""

    pulls: int = 0
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0

    @classmethod
    def of(cls, rewards: Sequence[float]) -> ArmStats:
        return cls(len(rewards), float(sum(rewards)), float(sum(r * r for r in rewards)))

    def plus(self, other: ArmStats) -> ArmStats:
        return ArmStats(self.pulls + other.pulls, self.reward_sum + other.reward_sum,
                        self.reward_sq_sum + other.reward_sq_sum)

    @property
    def mean(self) -> float:
        return self.reward_sum / self.pulls if self.pulls else 0.0


def with_floor(probabilities: Mapping[str, float], min_share: float) -> dict[str, float]:
    """share_i = min_share + (1 - K min_share) p_i; K min_share must stay <= 1."""
    arms = len(probabilities)
    if arms == 0:
        raise ValueError("a bandit needs at least one arm")
    if min_share * arms > 1.0 + 1e-12:
        raise ValueError(f"min_share {min_share} x {arms} arms exceeds all the traffic; lower min_share "
                         f"to at most {1.0 / arms:.4g}")
    total = sum(probabilities.values())
    spread = 1.0 - arms * min_share
    return {arm: min_share + spread * (p / total if total > 0 else 1.0 / arms) for arm, p in probabilities.items()}


def thompson_shares(stats: Mapping[str, ArmStats], *, min_share: float = 0.05, draws: int = 10_000,
                    seed: int = 0, bernoulli: bool = True) -> dict[str, float]:
    """Share per arm = P(arm is best | outcomes), floored at min_share (module docstring)."""
    import numpy as np

    arms = list(stats)
    rng = np.random.default_rng(seed)
    samples = np.empty((draws, len(arms)))
    for column, arm in enumerate(arms):
        s = stats[arm]
        if bernoulli:
            samples[:, column] = rng.beta(1.0 + s.reward_sum, 1.0 + s.pulls - s.reward_sum, draws)
        else:
            var = (s.reward_sq_sum / s.pulls - s.mean**2) if s.pulls > 1 else 1.0
            samples[:, column] = rng.normal(s.mean, math.sqrt(max(var, 1e-12) / max(s.pulls, 1)), draws)
    best = np.bincount(samples.argmax(axis=1), minlength=len(arms)) / draws
    return with_floor(dict(zip(arms, best.tolist(), strict=True)), min_share)


def ucb_shares(stats: Mapping[str, ArmStats], *, min_share: float = 0.05) -> dict[str, float]:
    """All traffic above the floor to the arm with the highest UCB1 bound; an arm never pulled goes first."""
    total = sum(s.pulls for s in stats.values())

    def bound(s: ArmStats) -> float:
        return math.inf if s.pulls == 0 else s.mean + math.sqrt(2.0 * math.log(max(total, 1)) / s.pulls)

    leader = max(stats, key=lambda arm: bound(stats[arm]))
    return with_floor({arm: 1.0 if arm == leader else 0.0 for arm in stats}, min_share)
