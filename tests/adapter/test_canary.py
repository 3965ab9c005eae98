"""Canary verdicts (core.canary) and the CanaryTrigger that polls them from /metrics.

Metrics text comes from the serving app's own ServingMetrics, so the names and labels the verdict
reads are the ones the app writes. The trigger polls a real HTTP server on 127.0.0.1 whose /metrics
body each test scripts.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_mlops.core.canary import (
    BREACHED,
    HEALTHY,
    INCONCLUSIVE,
    PENDING,
    CanaryLimits,
    CanaryMetricsError,
    RouteCounts,
    assess,
    judge,
    parse_route,
    quantile_seconds,
)
from airflow_mlops.exceptions import SpecError
from airflow_mlops.serving.metrics import ServingMetrics
from airflow_mlops.triggers.canary import CanaryTrigger, first_event

pytestmark = pytest.mark.adapter

MODEL = "ride_completion"
LIMITS = CanaryLimits(traffic=0.1, max_error_rate=0.01, max_p99_ms=250.0, window_seconds=600, min_requests=50)


def traffic(metrics: ServingMetrics, n: int, *, version: str = "4", route: str = "canary", status: int = 200,
            seconds: float = 0.003) -> ServingMetrics:
    for _ in range(n):
        metrics.observe(version=version, route=route, status=status, seconds=seconds)
    return metrics


def text(metrics: ServingMetrics) -> str:
    return metrics.render()[0].decode()


# ------------------------------------------------------------------------------------- parsing
def test_only_the_canary_route_of_the_canary_version_counts_and_only_5xx_are_errors() -> None:
    metrics = ServingMetrics(MODEL)
    traffic(metrics, 30)
    traffic(metrics, 2, status=500)
    traffic(metrics, 1, status=503)
    traffic(metrics, 7, status=404)  # unknown entity: the caller's mistake, not the model's
    traffic(metrics, 5, status=422)
    traffic(metrics, 100, route="primary", version="3", status=500)  # the champion's troubles are not the canary's
    traffic(metrics, 9, version="2")  # an earlier canary of another version
    counts = parse_route(text(metrics), model=MODEL, version="4")
    assert (counts.requests, counts.errors) == (45, 3)
    assert counts.buckets[-1] == (math.inf, 45) and counts.buckets[0] == (0.0005, 0)
    assert parse_route(text(metrics), model="other_model", version="4") == RouteCounts(0.0, 0.0, ())


def test_malformed_metrics_text_names_the_problem() -> None:
    with pytest.raises(CanaryMetricsError, match="is not Prometheus text.*serving app"):
        parse_route('mlops_serving_requests_total{route="canary" 3\n')


def test_deltas_since_the_baseline_and_a_restarted_app() -> None:
    metrics = traffic(ServingMetrics(MODEL), 20, status=500)
    baseline = parse_route(text(metrics), version="4")
    traffic(metrics, 60)
    delta = parse_route(text(metrics), version="4").since(baseline)
    assert (delta.requests, delta.errors, delta.buckets[-1][1]) == (60, 0, 60)
    restarted = parse_route(text(traffic(ServingMetrics(MODEL), 5)), version="4")
    assert restarted.since(baseline) == restarted, "a counter that went down means a restart: count from zero"
    assert RouteCounts.from_dict(json.loads(json.dumps(baseline.to_dict()))) == baseline


def test_p99_interpolates_like_promql_histogram_quantile() -> None:
    buckets = ((0.1, 50.0), (0.2, 90.0), (0.5, 100.0), (math.inf, 100.0))
    assert quantile_seconds(buckets, 0.5) == pytest.approx(0.1)
    assert quantile_seconds(buckets, 0.99) == pytest.approx(0.2 + 0.3 * 9 / 10)
    assert quantile_seconds(((0.1, 0.0), (math.inf, 0.0))) is None
    assert quantile_seconds(((0.1, 1.0), (math.inf, 10.0))) == math.inf


# ------------------------------------------------------------------------------------- verdicts
def test_errors_below_min_requests_are_no_verdict_yet() -> None:
    counts = RouteCounts(requests=49, errors=49, buckets=((math.inf, 49),))
    assert judge(counts, LIMITS, window_over=False).status == PENDING


def test_error_rate_breach_with_enough_requests_ends_the_window_early() -> None:
    metrics = traffic(traffic(ServingMetrics(MODEL), 47), 3, status=500)
    verdict = assess(text(metrics), RouteCounts(), LIMITS, model=MODEL, version="4", window_over=False)
    assert verdict.status == BREACHED and (verdict.requests, verdict.errors) == (50, 3)
    assert verdict.reason == "canary breached: error rate 0.0600 > 0.01 over 50 requests (3 answered 5xx)"


def test_zero_tolerance_breaches_on_the_first_error_once_min_requests_are_in() -> None:
    strict = CanaryLimits(traffic=0.5, max_error_rate=0.0, max_p99_ms=250.0, window_seconds=60, min_requests=10)
    metrics = traffic(traffic(ServingMetrics(MODEL), 9), 1, status=500)
    assert assess(text(metrics), RouteCounts(), strict, model=MODEL, version="4", window_over=False).status == BREACHED


def test_latency_breach_names_the_p99() -> None:
    metrics = traffic(ServingMetrics(MODEL), 60, seconds=0.4)
    verdict = assess(text(metrics), RouteCounts(), LIMITS, model=MODEL, version="4", window_over=False)
    assert verdict.status == BREACHED and "p99 latency 497.5 ms > 250.0 ms over 60 requests" in verdict.reason
    slow = assess(text(traffic(ServingMetrics(MODEL), 60, seconds=9.0)), RouteCounts(), LIMITS, model=MODEL,
                  version="4", window_over=False)
    assert "above the largest latency bucket" in slow.reason and slow.to_dict()["p99_ms"] == "inf"


def test_window_end_is_healthy_or_inconclusive() -> None:
    healthy = judge(RouteCounts(200, 1, ((0.01, 200.0), (math.inf, 200.0))), LIMITS, window_over=True)
    assert healthy.status == HEALTHY and healthy.reason.startswith("canary healthy: 200 requests, error rate 0.0050")
    few = judge(RouteCounts(12, 0, ((math.inf, 12.0),)), LIMITS, window_over=True)
    assert few.status == INCONCLUSIVE and "only 12 canary requests in 600s, fewer than min_requests=50" in few.reason
    assert "lower promotion.canary.min_requests" in few.reason


def test_limits_come_from_the_spec_block_with_its_defaults_and_errors() -> None:
    assert CanaryLimits.from_config({"window": "2m", "traffic": 0.25}) == CanaryLimits(
        traffic=0.25, max_error_rate=0.01, max_p99_ms=250.0, window_seconds=120, min_requests=50)
    with pytest.raises(SpecError, match=r"promotion\.canary\.window: got '10 minutes'; String should match"):
        CanaryLimits.from_config({"window": "10 minutes"}, "promotion.canary")
    with pytest.raises(SpecError, match=r"canary\.trafic: got 0\.2; Extra inputs are not permitted"):
        CanaryLimits.from_config({"trafic": 0.2})


# ------------------------------------------------------------------------------------- trigger
class _MetricsServer:
    """127.0.0.1 HTTP server answering GET /metrics with whatever `body` holds (None = 503)."""

    def __init__(self) -> None:
        self.body: str | None = ""
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                owner.hits += 1
                payload = (owner.body or "").encode()
                self.send_response(200 if owner.body is not None else 503)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def metrics_server() -> Iterator[_MetricsServer]:
    server = _MetricsServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


def make_trigger(url: str, seconds: float, baseline: RouteCounts | None = None, **limits: Any) -> CanaryTrigger:
    end = datetime.now(UTC) + timedelta(seconds=seconds)
    return CanaryTrigger(url=url, model_name=MODEL, version="4", baseline=(baseline or RouteCounts()).to_dict(),
                         window_end=end.isoformat(), limits={**LIMITS.to_dict(), **limits}, poll_interval=0.1,
                         timeout=2.0)


def run(trigger: CanaryTrigger, timeout: float = 20.0) -> dict[str, Any]:
    return asyncio.run(asyncio.wait_for(first_event(trigger), timeout))


def test_trigger_serializes_to_the_same_trigger() -> None:
    trigger = make_trigger("http://127.0.0.1:8000/", 60, RouteCounts(3, 1, ((0.1, 2.0), (math.inf, 3.0))))
    path, kwargs = trigger.serialize()
    module, name = path.rsplit(".", 1)
    again = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert again.serialize() == (path, kwargs) and kwargs["url"] == "http://127.0.0.1:8000"


def test_trigger_reports_a_breach_before_the_window_ends(metrics_server: _MetricsServer) -> None:
    metrics = traffic(ServingMetrics(MODEL), 40, status=500)  # before the window: baseline
    baseline = parse_route(text(metrics), model=MODEL, version="4")
    metrics_server.body = text(traffic(traffic(metrics, 45), 5, status=500))
    started = datetime.now(UTC)
    event = run(make_trigger(metrics_server.url, 600, baseline))
    assert event["status"] == BREACHED and (datetime.now(UTC) - started).total_seconds() < 10
    assert event["verdict"]["requests"] == 50 and event["verdict"]["errors"] == 5, "baseline errors do not count"
    assert (event["model"], event["version"]) == (MODEL, "4") and event["message"].startswith("canary breached")


def test_trigger_waits_for_the_window_then_says_healthy(metrics_server: _MetricsServer) -> None:
    metrics_server.body = text(traffic(ServingMetrics(MODEL), 80))
    started = datetime.now(UTC)
    event = run(make_trigger(metrics_server.url, 1.0))
    assert event["status"] == HEALTHY and (datetime.now(UTC) - started).total_seconds() >= 0.9
    assert metrics_server.hits >= 3, "it kept polling during the window"


def test_trigger_without_metrics_at_window_end_is_an_error(metrics_server: _MetricsServer) -> None:
    metrics_server.body = None
    event = run(make_trigger(metrics_server.url, 0.5))
    assert event["status"] == "error" and "/metrics could not be read (HTTPStatusError" in event["message"]
    assert event["verdict"] is None


def test_trigger_survives_a_metrics_outage_inside_the_window(metrics_server: _MetricsServer) -> None:
    metrics_server.body = None
    trigger = make_trigger(metrics_server.url, 1.5)

    def recover() -> None:
        metrics_server.body = text(traffic(ServingMetrics(MODEL), 60))

    threading.Timer(0.5, recover).start()
    assert run(trigger)["status"] == HEALTHY
