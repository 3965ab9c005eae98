"""Online-experiment statistics: A/B differences that may be looked at after every batch of labels.

An A/B readout runs on a schedule and looks at the data each time; a fixed-sample test repeated at every
look rejects a true null far more often than its alpha (see tests/unit/test_experiment_stats.py: with 20
looks a 5 % z-test rejects ~25 % of A/A runs). Two valid ways are used here, chosen by the metric:

* **Metrics that are a mean of per-row values** (accuracy = mean of correct, log_loss, brier, mae, squared
  error for rmse, mape; a rate is the Bernoulli case, i.e. the two-proportion test): the **mixture sequential
  probability ratio test** (mSPRT; Johari, Pekelis & Walsh, "Always valid inference", 2017) on the difference
  of the arms' means. With the estimate d ~ N(theta, V) and a normal mixture N(0, tau^2) over the effect,
  Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2))); 1/Lambda is an always-valid p-value and
  {theta0: Lambda(theta0) < 1/alpha} an always-valid (1 - alpha) confidence sequence, whatever the number of
  looks. Intersecting it with the previous looks' intervals keeps it valid and only narrows it.
* **Metrics that are not a per-row mean** (roc_auc, average_precision, f1, r2, f1_macro...): an unpaired
  bootstrap interval of the difference at each look, at the level that an **alpha-spending function** allots
  to the look (Lan-DeMets, O'Brien-Fleming type, on calendar time: alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt t),
  t = elapsed / max_duration). Each look spends alpha(t_k) - alpha(t_{k-1}); by the union bound the chance of
  any false decision over all looks is at most alpha(1) = alpha. The interval is the estimate +- z times the
  bootstrap standard error (a normal interval: early looks' levels are far beyond what resample quantiles show).

Differences are signed so that positive means the new version is better (for a lower-is-better metric the
arms' values are swapped). numpy is imported inside functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PROMOTE, ROLLBACK, EXTEND = "promote", "rollback", "extend"


@dataclass(frozen=True)
class Interval:
    """An interval for new - champion (positive = new is better) and how it was made."""

    estimate: float
    low: float
    high: float
    method: str  # "msprt" | "alpha_spending_bootstrap"
    p_value: float | None = None  # always-valid p-value (mSPRT only)
    alpha_spent: float | None = None  # cumulative alpha spent up to this look (alpha spending only)

    def intersect(self, previous: Interval | None) -> Interval:
        """The running intersection with an earlier look's interval (valid for a confidence sequence)."""
        if previous is None or previous.method != self.method:
            return self
        p_value = min(x for x in (self.p_value, previous.p_value) if x is not None) \
            if self.p_value is not None and previous.p_value is not None else self.p_value
        low, high = max(self.low, previous.low), min(self.high, previous.high)
        if low > high:  # the sequences disagree: only possible by chance at level alpha; keep the current look
            return self
        return Interval(self.estimate, low, high, self.method, p_value, self.alpha_spent)


def msprt_difference(new: Sequence[float], champion: Sequence[float], *, alpha: float = 0.05,
                     higher_is_better: bool = True, tau: float | None = None) -> Interval:
    """Always-valid interval of mean(new) - mean(champion) from per-row values (module docstring).

    `tau` is the mixture's spread, the size of effect the test is most sensitive to; default 0.1 x the pooled
    standard deviation of the per-row values (a small effect, in the metric's own units).
    """
    import numpy as np

    a, b = np.asarray(new, dtype=float), np.asarray(champion, dtype=float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"each arm needs at least 2 labelled rows (new {len(a)}, champion {len(b)})")
    sign = 1.0 if higher_is_better else -1.0
    estimate = sign * (a.mean() - b.mean())
    variance = a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
    pooled_sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2.0)
    spread = tau if tau is not None else 0.1 * pooled_sd
    if variance <= 0.0 or spread <= 0.0:  # every row equal in both arms: the difference is known exactly
        return Interval(float(estimate), float(estimate), float(estimate), "msprt", 1.0 if estimate == 0 else 0.0)
    tau2 = spread * spread
    half = math.sqrt(variance * (variance + tau2) / tau2
                     * (2.0 * math.log(1.0 / alpha) + math.log((variance + tau2) / variance)))
    log_lambda = 0.5 * math.log(variance / (variance + tau2)) + tau2 * estimate**2 / (2 * variance * (variance + tau2))
    p_value = min(1.0, math.exp(-log_lambda)) if log_lambda < 700 else 0.0
    return Interval(float(estimate), float(estimate - half), float(estimate + half), "msprt", p_value)


def spent_alpha(alpha: float, information: float) -> float:
    """O'Brien-Fleming-type Lan-DeMets spending: alpha spent by information fraction t (0 < t <= 1)."""
    from statistics import NormalDist  # the standard library's: no scipy import for two numbers

    norm = NormalDist()
    t = min(1.0, max(information, 1e-9))
    return float(min(alpha, 2.0 - 2.0 * norm.cdf(norm.inv_cdf(1.0 - alpha / 2.0) / math.sqrt(t))))


def spending_bootstrap_difference(
    metric: Callable[[Any], float], new: Any, champion: Any, *, information: float, spent_before: float,
    alpha: float = 0.05, higher_is_better: bool = True, samples: int = 1000, seed: int = 0,
) -> Interval:
    """Bootstrap interval of metric(new) - metric(champion) at the level this look's alpha increment allows.

    `new`/`champion` are row-indexable (numpy arrays or DataFrames; `metric` takes a subset of rows);
    the arms hold different entities, so each is resampled on its own. A look that has no alpha left to spend
    (t did not grow) gets an interval of (-inf, inf): it cannot decide.
    """
    import numpy as np

    spent_now = spent_alpha(alpha, information)
    level = spent_now - spent_before
    sign = 1.0 if higher_is_better else -1.0
    estimate = sign * (metric(new) - metric(champion))
    if level <= 0.0:
        return Interval(float(estimate), -math.inf, math.inf, "alpha_spending_bootstrap", None, spent_before)
    rng = np.random.default_rng(seed)
    n_new, n_champion = len(new), len(champion)
    new_rows = rng.integers(0, n_new, (samples, n_new))
    champion_rows = rng.integers(0, n_champion, (samples, n_champion))
    diffs = np.array([sign * (metric(_take(new, a)) - metric(_take(champion, b)))
                      for a, b in zip(new_rows, champion_rows, strict=True)])
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) < 2:
        raise ValueError("the metric is undefined on almost every bootstrap resample (e.g. one class only in an arm)")
    # estimate +- z * bootstrap standard error, not the resamples' quantiles: an early look's level (1e-5 and less)
    # lies far beyond the last of `samples` resamples, where a percentile interval would stop at the extreme
    # resample and be far too narrow (seeded simulation: 8 % false decisions at alpha 5 % over 20 looks).
    half = _normal_quantile(1.0 - level / 2.0) * float(np.std(diffs, ddof=1))
    return Interval(float(estimate), float(estimate - half), float(estimate + half), "alpha_spending_bootstrap", None,
                    spent_now)


def _normal_quantile(probability: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(min(probability, 1.0 - 1e-16))


def _take(rows: Any, index: Any) -> Any:
    """Rows by position, of a DataFrame or an array."""
    return rows.iloc[index] if hasattr(rows, "iloc") else rows[index]


def decide(interval: Interval, *, rule: str = "improvement", max_regression: float = 0.0,
           final_look: bool = False) -> tuple[str, str]:
    """promote | rollback | extend, with the reason in words (for the audit trail).

    improvement: promote when the whole interval is above 0; non_regression: when it is above -max_regression.
    Roll back when the whole interval is below that bar's opposite side (the new version is shown worse, or
    worse by more than max_regression). Otherwise extend; at the final look (max_duration reached) an
    undecided test keeps the champion: without evidence for the new version, the safe side is the known one.
    """
    bar = 0.0 if rule == "improvement" else -max_regression
    shown = (f"difference {interval.estimate:+.4g}, interval [{interval.low:+.4g}, {interval.high:+.4g}] "
             f"({interval.method})")
    if interval.low > bar:
        return PROMOTE, f"{shown} lies above {bar:+.4g}: the new version is better ({rule})"
    if interval.high < bar:
        return ROLLBACK, f"{shown} lies below {bar:+.4g}: the new version is worse ({rule})"
    if final_look:
        return ROLLBACK, f"{shown} still contains {bar:+.4g} at max_duration: inconclusive, the champion stays"
    return EXTEND, f"{shown} contains {bar:+.4g}: not enough evidence yet, the experiment goes on"
