"""A/B readout statistics and bandit shares, by seeded simulation: valid under peeking, right on a known effect."""

from __future__ import annotations

import math

import numpy as np
import pytest

from airflow_mlops.core.bandits import ArmStats, thompson_shares, ucb_shares, with_floor
from airflow_mlops.core.experiment_stats import (
    EXTEND,
    PROMOTE,
    ROLLBACK,
    Interval,
    decide,
    msprt_difference,
    spending_bootstrap_difference,
    spent_alpha,
)

pytestmark = pytest.mark.unit

LOOKS, STEP, RUNS, ALPHA = 20, 100, 300, 0.05


def _sequential_decisions(p_new: float, p_champion: float, seed: int) -> list[str]:
    """One simulated A/B per run: peek after every STEP labels per arm, stop at the first decision."""
    rng = np.random.default_rng(seed)
    decisions = []
    for _ in range(RUNS if p_new == p_champion else 60):
        new = rng.random(LOOKS * STEP) < p_new
        champion = rng.random(LOOKS * STEP) < p_champion
        previous: Interval | None = None
        outcome = EXTEND
        for look in range(1, LOOKS + 1):
            n = look * STEP
            previous = msprt_difference(new[:n], champion[:n], alpha=ALPHA).intersect(previous)
            outcome, _ = decide(previous, final_look=look == LOOKS)
            if outcome != EXTEND:
                break
        # an undecided test ends as ROLLBACK at the final look (the champion stays): that is no false decision
        decisions.append(outcome if previous.low > 0 or previous.high < 0 else "undecided")
    return decisions


def test_msprt_keeps_its_false_positive_rate_when_peeking_every_batch() -> None:
    decisions = _sequential_decisions(0.3, 0.3, seed=11)
    false_positive = sum(d in (PROMOTE, ROLLBACK) for d in decisions) / len(decisions)
    # binomial noise of RUNS A/A runs around alpha; the mSPRT is conservative, so this is far from the bound
    assert false_positive <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / RUNS)


def test_a_fixed_sample_z_test_repeated_at_every_look_does_not() -> None:
    """Why the sequential test exists: the same A/A data, a 5 % z-test at each of 20 looks."""
    rng = np.random.default_rng(11)
    rejected = 0
    for _ in range(RUNS):
        new, champion = rng.random(LOOKS * STEP) < 0.3, rng.random(LOOKS * STEP) < 0.3
        for look in range(1, LOOKS + 1):
            n = look * STEP
            diff = new[:n].mean() - champion[:n].mean()
            se = math.sqrt(new[:n].var(ddof=1) / n + champion[:n].var(ddof=1) / n)
            if abs(diff) > 1.96 * se:
                rejected += 1
                break
    assert rejected / RUNS > 2 * ALPHA


def test_msprt_finds_a_real_improvement_and_never_calls_it_worse() -> None:
    decisions = _sequential_decisions(0.36, 0.30, seed=5)
    assert decisions.count(PROMOTE) / len(decisions) >= 0.8
    assert decisions.count(ROLLBACK) <= 1  # calling the better version worse: at most a rare alpha-level error


def test_lower_is_better_metrics_are_signed_so_positive_means_better() -> None:
    rng = np.random.default_rng(3)
    new_errors, champion_errors = rng.normal(1.0, 0.5, 4000), rng.normal(1.3, 0.5, 4000)
    interval = msprt_difference(new_errors, champion_errors, higher_is_better=False)
    assert interval.estimate > 0 and interval.low > 0
    assert decide(interval)[0] == PROMOTE


def test_interval_intersection_only_narrows_and_keeps_the_smallest_p_value() -> None:
    first = Interval(0.1, -0.2, 0.4, "msprt", 0.5)
    second = Interval(0.05, -0.3, 0.3, "msprt", 0.7)
    both = second.intersect(first)
    assert (both.low, both.high, both.p_value) == (-0.2, 0.3, 0.5)


def test_alpha_spending_never_spends_more_than_alpha_and_grows_with_information() -> None:
    spent = [spent_alpha(ALPHA, t) for t in (0.1, 0.25, 0.5, 0.75, 1.0)]
    assert spent == sorted(spent) and spent[-1] == pytest.approx(ALPHA) and spent[0] < 1e-4


def test_alpha_spending_bootstrap_holds_alpha_over_looks_on_a_non_mean_metric() -> None:
    rng = np.random.default_rng(17)
    runs, looks, decided = 60, 5, 0
    for run in range(runs):
        new, champion = rng.normal(0, 1, 1000), rng.normal(0, 1, 1000)
        spent = 0.0
        for look in range(1, looks + 1):
            n = look * 200
            interval = spending_bootstrap_difference(np.median, new[:n], champion[:n], information=look / looks,
                                                     spent_before=spent, samples=150, seed=run * 10 + look)
            spent = interval.alpha_spent or spent
            if decide(interval)[0] != EXTEND:
                decided += 1
                break
    assert decided / runs <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)


def test_alpha_spending_bootstrap_detects_a_large_effect() -> None:
    rng = np.random.default_rng(2)
    new, champion = rng.normal(0.5, 1, 2000), rng.normal(0, 1, 2000)
    interval = spending_bootstrap_difference(np.median, new, champion, information=1.0, spent_before=0.0, seed=1)
    assert decide(interval, final_look=True)[0] == PROMOTE
    no_budget = spending_bootstrap_difference(np.median, new, champion, information=0.5,
                                              spent_before=spent_alpha(ALPHA, 0.5))
    assert decide(no_budget)[0] == EXTEND


def test_an_undecided_test_keeps_the_champion_at_max_duration() -> None:
    interval = Interval(0.01, -0.02, 0.04, "msprt", 0.4)
    assert decide(interval)[0] == EXTEND
    outcome, reason = decide(interval, final_look=True)
    assert outcome == ROLLBACK and "champion stays" in reason
    assert decide(interval, rule="non_regression", max_regression=0.05)[0] == PROMOTE


def _simulate_regret(policy: str, seed: int, rates: tuple[float, ...] = (0.30, 0.33, 0.40)) -> float:
    rng = np.random.default_rng(seed)
    arms = [f"v{i}" for i in range(len(rates))]
    stats = {arm: ArmStats() for arm in arms}
    regret = 0.0
    for round_ in range(30):
        if policy == "fixed":
            shares = dict.fromkeys(arms, 1 / len(arms))
        elif policy == "thompson":
            shares = thompson_shares(stats, min_share=0.05, draws=2000, seed=seed * 100 + round_)
        else:
            shares = ucb_shares(stats, min_share=0.05)
        counts = rng.multinomial(200, [shares[a] for a in arms])
        for arm, count, rate in zip(arms, counts, rates, strict=True):
            rewards = (rng.random(count) < rate).astype(float).tolist()
            stats[arm] = stats[arm].plus(ArmStats.of(rewards))
            regret += count * (max(rates) - rate)
    return regret


def test_bandit_regret_stays_below_a_fixed_split() -> None:
    for seed in range(8):
        fixed = _simulate_regret("fixed", seed)
        assert _simulate_regret("thompson", seed) < 0.6 * fixed
        assert _simulate_regret("ucb", seed) < fixed


def test_shares_keep_the_floor_and_sum_to_one() -> None:
    stats = {"v1": ArmStats.of([1.0] * 500), "v2": ArmStats.of([0.0] * 500), "v3": ArmStats()}
    for shares in (thompson_shares(stats, min_share=0.1), ucb_shares(stats, min_share=0.1)):
        assert sum(shares.values()) == pytest.approx(1.0)
        assert min(shares.values()) >= 0.1 - 1e-12
    assert thompson_shares(stats, seed=4) == thompson_shares(stats, seed=4)  # seeded: the same shares
    with pytest.raises(ValueError, match="min_share 0.4 x 3 arms"):
        with_floor({"a": 1.0, "b": 0.0, "c": 0.0}, 0.4)


def test_normal_rewards_prefer_the_smaller_error() -> None:
    rng = np.random.default_rng(9)
    stats = {"v1": ArmStats.of((-rng.normal(1.0, 0.2, 300) ** 2).tolist()),
             "v2": ArmStats.of((-rng.normal(1.5, 0.2, 300) ** 2).tolist())}
    shares = thompson_shares(stats, bernoulli=False, min_share=0.05)
    assert shares["v1"] > 0.9
