"""Canary verdicts from the serving app's Prometheus metrics (pure: no HTTP, no Airflow calls).

The serving app counts every request in `mlops_serving_requests_total{model,version,route,status}`
and times it in the histogram `mlops_serving_request_seconds{model,version,route}`. A canary is
judged on the `route="canary"` series of the canary's version, as the change since the window
started (a snapshot taken right after the canary was deployed): counters only grow, so the delta
is exactly the window's traffic, whatever ran before. A counter that went down means the app
restarted; the current value is then the traffic since the restart (Prometheus' `increase` rule).

What counts as an error: a response with status >= 500. 4xx answers (unknown entity, a field that
fails validation) are the caller's mistake, come out of the same code path for either model, and
would otherwise let one bad client roll back a good model. A model whose predict fails, or that
cannot be loaded, answers 5xx.

p99 is computed like PromQL's `histogram_quantile(0.99, ...)`: linear inside the bucket where the
99th percentile falls. When it falls above the largest finite bucket, the p99 is unknown but
larger than that bucket: it is reported as infinity, which breaches any finite limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_mlops.exceptions import MLOpsError

REQUESTS = "mlops_serving_requests_total"
BUCKETS = "mlops_serving_request_seconds_bucket"
CANARY_ROUTE = "canary"
ERROR_STATUS_MIN = 500
QUANTILE = 0.99
HEALTHY, BREACHED, INCONCLUSIVE, PENDING = "healthy", "breached", "inconclusive", "pending"


class CanaryMetricsError(MLOpsError):
    """The /metrics text cannot be read as Prometheus exposition, or lacks what a verdict needs."""


@dataclass(frozen=True)
class CanaryLimits:
    """When a canary counts as broken (spec `promotion.canary`; window in seconds)."""

    traffic: float
    max_error_rate: float
    max_p99_ms: float
    window_seconds: int
    min_requests: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, source: str = "canary") -> CanaryLimits:
        """Validate a `promotion.canary` mapping with the spec's own model (defaults filled in)."""
        from pydantic import ValidationError

        from airflow_mlops.core.spec import Canary, duration_seconds
        from airflow_mlops.exceptions import SpecError

        try:
            canary = Canary.model_validate(dict(config or {}))
        except ValidationError as exc:
            raise SpecError([
                f"{source}.{'.'.join(str(p) for p in err['loc'])}: got {err.get('input')!r}; {err['msg']}"
                for err in exc.errors()
            ]) from None
        return cls(traffic=canary.traffic, max_error_rate=canary.max_error_rate, max_p99_ms=canary.max_p99_ms,
                   window_seconds=duration_seconds(canary.window), min_requests=canary.min_requests)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RouteCounts:
    """Cumulative counts of one route of one model version: requests, 5xx answers, latency buckets.

    `buckets` are (upper bound in seconds, cumulative count), ascending, ending with +Inf.
    """

    requests: float = 0.0
    errors: float = 0.0
    buckets: tuple[tuple[float, float], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (the +Inf bound as the string "+Inf"): travels in trigger kwargs."""
        return {"requests": self.requests, "errors": self.errors,
                "buckets": [["+Inf" if math.isinf(le) else le, count] for le, count in self.buckets]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouteCounts:
        return cls(requests=float(data["requests"]), errors=float(data["errors"]),
                   buckets=tuple((float(le), float(count)) for le, count in data["buckets"]))

    def since(self, baseline: RouteCounts) -> RouteCounts:
        """The counts added after `baseline` (all of self when a counter went back: the app restarted)."""
        before = dict(baseline.buckets)
        reset = self.requests < baseline.requests or any(count < before.get(le, 0.0) for le, count in self.buckets)
        if reset:
            return self
        return RouteCounts(requests=self.requests - baseline.requests, errors=self.errors - baseline.errors,
                           buckets=tuple((le, count - before.get(le, 0.0)) for le, count in self.buckets))


def _matches(labels: Mapping[str, str], model: str | None, version: str | None, route: str) -> bool:
    return (labels.get("route") == route and (model is None or labels.get("model") == model)
            and (version is None or labels.get("version") == str(version)))


def parse_route(text: str, *, model: str | None = None, version: str | None = None,
                route: str = CANARY_ROUTE) -> RouteCounts:
    """Sum the request counter and latency buckets of `route` (and `model`/`version` when given)."""
    from prometheus_client.parser import text_string_to_metric_families

    requests = errors = 0.0
    buckets: dict[float, float] = {}
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except (ValueError, TypeError, IndexError) as exc:
        raise CanaryMetricsError(
            f"/metrics is not Prometheus text ({exc}); the canary cannot be judged; check that the URL is the "
            "airflow-mlops serving app"
        ) from None
    for sample in samples:
        if not _matches(sample.labels, model, version, route):
            continue
        if sample.name == REQUESTS:
            requests += sample.value
            status = sample.labels.get("status", "")
            errors += sample.value if status.isdigit() and int(status) >= ERROR_STATUS_MIN else 0.0
        elif sample.name == BUCKETS:
            bound = float(sample.labels.get("le", "+Inf"))
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return RouteCounts(requests=requests, errors=errors, buckets=tuple(sorted(buckets.items())))


def quantile_seconds(buckets: tuple[tuple[float, float], ...], q: float = QUANTILE) -> float | None:
    """PromQL histogram_quantile on cumulative buckets; None without observations, inf above the top bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank and count > below:
            if math.isinf(upper):
                return math.inf
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return math.inf


@dataclass(frozen=True)
class Verdict:
    """One look at the canary: status healthy | breached | inconclusive | pending, and why."""

    status: str
    requests: int
    errors: int
    error_rate: float
    p99_ms: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.p99_ms is not None and math.isinf(self.p99_ms):
            data["p99_ms"] = "inf"
        return data


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "above the largest latency bucket" if math.isinf(value) else f"{value:.1f} ms"


def judge(delta: RouteCounts, limits: CanaryLimits, *, window_over: bool) -> Verdict:
    """Breached as soon as a limit is crossed with >= min_requests; otherwise decided when the window ends."""
    requests, errors = int(round(delta.requests)), int(round(delta.errors))
    rate = errors / requests if requests else 0.0
    p99_s = quantile_seconds(delta.buckets)
    p99 = None if p99_s is None else p99_s * 1000.0

    def verdict(status: str, reason: str) -> Verdict:
        return Verdict(status=status, requests=requests, errors=errors, error_rate=rate, p99_ms=p99, reason=reason)

    broken = []
    if requests >= limits.min_requests:
        if rate > limits.max_error_rate:
            broken.append(f"error rate {rate:.4f} > {limits.max_error_rate} over {requests} requests "
                          f"({errors} answered 5xx)")
        if p99 is not None and p99 > limits.max_p99_ms:
            broken.append(f"p99 latency {_ms(p99)} > {limits.max_p99_ms} ms over {requests} requests")
    if broken:
        return verdict(BREACHED, "canary breached: " + "; ".join(broken))
    if not window_over:
        return verdict(PENDING, f"{requests} canary requests so far, error rate {rate:.4f}, p99 {_ms(p99)}")
    if requests < limits.min_requests:
        return verdict(INCONCLUSIVE, (
            f"canary inconclusive: only {requests} canary requests in {limits.window_seconds}s, fewer than "
            f"min_requests={limits.min_requests}; send more traffic, lengthen promotion.canary.window, raise "
            "promotion.canary.traffic or lower promotion.canary.min_requests"))
    return verdict(HEALTHY, (
        f"canary healthy: {requests} requests, error rate {rate:.4f} <= {limits.max_error_rate}, "
        f"p99 {_ms(p99)} <= {limits.max_p99_ms} ms"))


def assess(text: str, baseline: RouteCounts, limits: CanaryLimits, *, model: str | None, version: str,
           window_over: bool) -> Verdict:
    """Parse /metrics, take the change since `baseline`, judge it: the one check every caller runs."""
    current = parse_route(text, model=model, version=version)
    return judge(current.since(baseline), limits, window_over=window_over)
