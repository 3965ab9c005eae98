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

Several worker processes (`airflow-mlops serve --workers N`, serving/workers.py): prometheus_client's
multiprocess mode, chosen by prometheus_client itself when PROMETHEUS_MULTIPROC_DIR is set at its import.
Every worker writes its values to its own files in that directory, and /metrics (whichever worker answers)
merges them all: counters and histograms are summed over every worker that ever ran (a restarted worker's
counts stay), `model_info` is the max over the live workers (1 while any live worker serves that version in
that slot; a slot's old version drops to 0, as series cannot be removed in this mode), and one more family
says which worker serves what:

- mlops_serving_worker_model_info{model,slot,version,pid}       gauge, 1 per live worker and slot

The counters owned by other objects (log written/dropped, background dropped) are pushed into this
worker's files when they change (`publish`), since a scrape cannot read another process's memory.
One ServingMetrics per model and process in this mode: two would share the same files' series.
"""

from __future__ import annotations

import os
import threading
import warnings
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
        self.multiprocess_dir = multiprocess_dir()
        self._info = Gauge(f"{PREFIX}_model_info", "Model version serving in each slot (value 1)",
                           ["model", "slot", "version"], registry=self.registry, multiprocess_mode="livemax")
        # liveall: one series per live worker (the pid label is added by the collector), gone when it dies
        self._worker_info = Gauge(f"{PREFIX}_worker_model_info", "Model version each worker serves in each slot",
                                  ["model", "slot", "version"], registry=self.registry, multiprocess_mode="liveall"
                                  ) if self.multiprocess_dir else None
        self._age = Histogram(f"{PREFIX}_feature_age_seconds", "Age of the online feature rows read, per view",
                              ["model", "view"], buckets=AGE_BUCKETS, registry=self.registry)
        self._stale = Counter(f"{PREFIX}_stale_features", "Online rows older than their view's allowed age",
                              ["model", "view", "policy"], registry=self.registry)
        self._slots: dict[str, str] = {}
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # .labels() costs more than .inc()
        self._slots_lock = threading.Lock()
        self._owned: _OwnedCounters | _PublishedCounters = (
            _PublishedCounters(model, self.registry) if self.multiprocess_dir else _OwnedCounters(model))
        if isinstance(self._owned, _OwnedCounters):
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
            gauges = [self._info, *([self._worker_info] if self._worker_info is not None else [])]
            for slot, version in wanted.items():  # set the new series first: a scrape never sees no model
                for gauge in gauges:
                    gauge.labels(self.model, slot, version).set(1)
            for slot, version in self._slots.items():
                if wanted.get(slot) != version:
                    for gauge in gauges:
                        if self.multiprocess_dir:  # no removal in this mode: the series stays, at 0
                            gauge.labels(self.model, slot, version).set(0)
                        else:
                            _remove(gauge, self.model, slot, version)
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

    def publish(self) -> None:
        """Multiprocess mode: write the owned counters' current values to this worker's files (call after they
        change; any thread). Single process: nothing to do, they are read at scrape time."""
        self._owned.publish()

    def render(self) -> tuple[bytes, str]:
        """(body, content type) in the Prometheus text format; every worker's series in multiprocess mode."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        self.publish()
        return render_dir(self.multiprocess_dir), CONTENT_TYPE_LATEST

    def workers(self) -> dict[int, dict[str, str]] | None:
        """Multiprocess mode: {pid: {slot: version}} of every live worker (from the shared files); else None."""
        return None if self.multiprocess_dir is None else workers_in(self.multiprocess_dir, self.model)


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR when prometheus_client runs in multiprocess mode in this process, else None.

    The mode is fixed when prometheus_client is first imported (its value class), so it is asked, not the
    environment alone: a variable set later would otherwise split the metrics between two stores."""
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _remove(gauge: Any, *labels: str) -> None:
    # Importing Feast (feast.metrics, 0.67) exports PROMETHEUS_MULTIPROC_DIR, and prometheus_client's remove()
    # then warns that multiprocess mode cannot remove series, although this process's values are in memory
    # (its mode was fixed at import) and the removal works.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Removal of labels has not been implemented", UserWarning)
        gauge.remove(*labels)


def render_dir(path: str) -> bytes:
    """Every worker's metrics in `path` merged, in the Prometheus text format: ours only.

    Feast's module-level metrics (feast.metrics, for its own feature server, unused here) also land in the
    directory of a process that imports Feast; /metrics shows the same families as a single process."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    merged = MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]

    class Ours:
        def collect(self) -> Iterator[Any]:
            return (family for family in merged.collect() if family.name.startswith(PREFIX))  # type: ignore[no-untyped-call]

    registry = CollectorRegistry()
    registry.register(Ours())
    return bytes(generate_latest(registry))


def workers_in(path: str, model: str) -> dict[int, dict[str, str]]:
    """{pid: {slot: version}} from the live workers' `worker_model_info` files in `path`."""
    import glob

    from prometheus_client.multiprocess import MultiProcessCollector

    files = glob.glob(os.path.join(path, "gauge_liveall_*.db"))
    served: dict[int, dict[str, str]] = {}
    for family in MultiProcessCollector.merge(files, accumulate=False):  # type: ignore[no-untyped-call]
        for sample in family.samples if family.name == f"{PREFIX}_worker_model_info" else ():
            labels = sample.labels
            if sample.value == 1 and labels.get("model") == model:
                served.setdefault(int(labels["pid"]), {})[labels["slot"]] = labels["version"]
    return served


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

    def publish(self) -> None:
        pass  # read at scrape time


class _PublishedCounters:
    """Multiprocess mode: the owned counts as real counters in this worker's files, advanced by `publish`."""

    def __init__(self, model: str, registry: Any) -> None:
        from prometheus_client import Counter

        self.sources: dict[str, Callable[[], int]] = {name: (lambda: 0) for name in _OwnedCounters.HELP}
        self._counters = {name: Counter(f"{PREFIX}_{name}", text, ["model"], registry=registry).labels(model)
                          for name, text in _OwnedCounters.HELP.items()}
        self._published = dict.fromkeys(self._counters, 0)
        self._lock = threading.Lock()

    def publish(self) -> None:
        with self._lock:  # the log writer, a dropping request thread and a scrape may publish at once
            for name, counter in self._counters.items():
                now = self.sources[name]()
                if now > self._published[name]:
                    counter.inc(now - self._published[name])
                    self._published[name] = now
