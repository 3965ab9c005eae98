"""ServingMetrics: the serving app's Prometheus metrics, in a registry of its own.

Names are part of the serving contract (the deploy operator's canary check reads them from /metrics):

- mlops_serving_requests_total{model,version,route,status}     counter, status = HTTP code as text
- mlops_serving_request_seconds{model,version,route}           histogram, 0.5 ms .. 2.5 s
- mlops_serving_model_info{model,slot,version}                 gauge, 1 per serving slot
- mlops_serving_prediction_log_dropped_total{model}            counter, read from the prediction log
- mlops_serving_prediction_log_written_total{model}            counter, records the prediction log has stored
- mlops_serving_background_dropped_total{model}                counter, shadow-scoring/log jobs dropped
                                                               because the background queue was full
- mlops_serving_feature_age_seconds{model,view}                histogram, age of each online row read
                                                               (1 min .. 90 days)
- mlops_serving_stale_features_total{model,view,policy}        counter, rows older than their allowed age

Each instance owns a CollectorRegistry (never the process-global one), so two apps or two tests in
one process do not collide on metric names.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
AGE_BUCKETS = (60, 300, 900, 3600, 6 * 3600, 86400, 2 * 86400, 7 * 86400, 30 * 86400, 90 * 86400)
PREFIX = "mlops_serving"


class ServingMetrics:
    """Request counts and latencies per model version and route, the serving slots, log drops."""

    def __init__(self, model: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(f"{PREFIX}_requests", "Prediction requests answered, by HTTP status",
                                 ["model", "version", "route", "status"], registry=self.registry)
        self._seconds = Histogram(f"{PREFIX}_request_seconds", "Prediction request latency in seconds",
                                  ["model", "version", "route"], buckets=BUCKETS, registry=self.registry)
        self._info = Gauge(f"{PREFIX}_model_info", "Model version serving in each slot (value 1)",
                           ["model", "slot", "version"], registry=self.registry)
        self._age = Histogram(f"{PREFIX}_feature_age_seconds", "Age of the online feature rows read, per view",
                              ["model", "view"], buckets=AGE_BUCKETS, registry=self.registry)
        self._stale = Counter(f"{PREFIX}_stale_features", "Online rows older than their view's allowed age",
                              ["model", "view", "policy"], registry=self.registry)
        self._slots: dict[str, str] = {}
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # .labels() costs more than .inc()
        self._slots_lock = threading.Lock()
        self._owned = _OwnedCounters(model)
        self.registry.register(self._owned)

    def observe(self, *, version: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        series = self._series.get(key := (str(version), route, int(status)))
        if series is None:
            series = self._series[key] = (self._requests.labels(self.model, key[0], route, str(key[2])),
                                          self._seconds.labels(self.model, key[0], route))
        series[0].inc()
        series[1].observe(seconds)

    def observe_feature_ages(self, ages: dict[str, list[float | None]], stale: dict[str, int], policy: str) -> None:
        """Each online row's age per view, and how many were stale under `policy`."""
        for view, values in ages.items():
            series = self._age.labels(self.model, view)
            for age in values:
                if age is not None:
                    series.observe(age)
        for view, count in stale.items():
            self._stale.labels(self.model, view, policy).inc(count)

    def set_versions(self, primary: str, secondary: str | None) -> None:
        """The versions in the primary/secondary slots (a None secondary removes that series)."""
        wanted = {"primary": str(primary)} | ({"secondary": str(secondary)} if secondary is not None else {})
        with self._slots_lock:
            for slot, version in wanted.items():  # set the new series first: a scrape never sees no model
                self._info.labels(self.model, slot, version).set(1)
            for slot, version in self._slots.items():
                if wanted.get(slot) != version:
                    self._info.remove(self.model, slot, version)
            self._slots = wanted

    def track_dropped(self, source: Callable[[], int]) -> None:
        """Report `source()` (e.g. `lambda: prediction_log.dropped`) as the dropped-records counter."""
        self._owned.sources["prediction_log_dropped"] = source

    def track_written(self, source: Callable[[], int]) -> None:
        """Report `source()` (the prediction log's `written`) as the stored-records counter: with the dropped
        one it tells whether monitoring will see what was served (and when a window is complete)."""
        self._owned.sources["prediction_log_written"] = source

    def track_background_dropped(self, source: Callable[[], int]) -> None:
        """Report `source()` (the background thread's `dropped`) as the dropped shadow/log jobs counter."""
        self._owned.sources["background_dropped"] = source

    def render(self) -> tuple[bytes, str]:
        """(body, content type) in the Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _OwnedCounters:
    """Reads counters their owners keep (drops, records written) at scrape time (no second count to keep in sync)."""

    HELP = {"prediction_log_dropped": "Prediction log records dropped (queue full, closed, or write failed)",
            "prediction_log_written": "Prediction log records stored in the sink (parquet or PostgreSQL)",
            "background_dropped": "Shadow-scoring and prediction-log jobs dropped: the background queue was full"}

    def __init__(self, model: str) -> None:
        self.model = model
        self.sources: dict[str, Callable[[], int]] = {name: (lambda: 0) for name in self.HELP}

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        for name, source in self.sources.items():
            family = CounterMetricFamily(f"{PREFIX}_{name}", self.HELP[name], labels=["model"])
            family.add_metric([self.model], float(source()))
            yield family

    def describe(self) -> Iterator[Any]:
        return self.collect()
