"""Scoring of parsed requests: route each row, build one float64 matrix per model, predict, log later.

`Scorer` is the hot path shared by every protocol. Rows are routed by entity key
(`ModelManager.route`: sticky canary buckets, shadow model); rows without entity keys (/invocations,
V2 feature tensors) are routed by request id, so a canary still gets its share. Each model gets a
float64 matrix in ITS `feature_columns` order (a canary may use other columns than the primary):
`LoadedModel.predict_matrix` scores it with the compiled numpy function when the model has one
(`fastpath.py`), else through a DataFrame of exactly those columns (sklearn's no-copy path).

Before any model scores, the caller's values are checked against the model that will score them
(`input_checks.py`): rows whose features are all missing, and, with `serving.validate_ranges`, values
outside the training-set ranges (422 naming the value).

`Background` is one daemon thread with a bounded deque: shadow scoring and prediction-log records
are built there after the response, never on the request path. A full queue drops work and counts it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.predictions import TaskOutput
from airflow_mlops.exceptions import MLOpsError
from airflow_mlops.serving import input_checks
from airflow_mlops.serving.protocols import EntityBatch, FeatureTable, RequestError, Where

if TYPE_CHECKING:
    import numpy as np

    from airflow_mlops.core.spec import Serving
    from airflow_mlops.serving.models import LoadedModel, ModelManager
    from airflow_mlops.serving.prediction_log import PredictionLog

log = logging.getLogger(__name__)

BACKGROUND_QUEUE = 10_000
# Route label of rows a client sent to one version (V2 versioned routes): counted apart from "primary" and
# "canary", so a canary's verdict is judged on the traffic the split routed to it only.
PINNED_ROUTE = "pinned"
POLL_SECONDS = 0.005
_THREAD = threading.local()


def one_native_thread() -> None:
    """Limit OpenMP/BLAS to one thread in the calling thread (once per thread).

    OpenMP's thread count is per calling thread, so a limit set at startup does not reach the request
    threads. A single row gains nothing from more threads, and a tree ensemble's idle OpenMP threads
    spin against the server's own: on a busy 2-core box, p99 of one HistGradientBoosting predict
    went from 2.6 s to 16 ms with one thread.
    """
    if not getattr(_THREAD, "limited", False):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        _THREAD.limited = True


@dataclass(frozen=True)
class Scored:
    """Scores in request order (the task's: a float per row, or a row of class probabilities for multiclass), the
    version and route of each row, the (version, route) pairs used, and what the scores mean (`output`: every
    model of one deployment has the same task, `ModelManager` refuses a canary or shadow of another)."""

    predictions: list[Any]
    versions: list[str]
    routes: list[str]
    observed: list[tuple[str, str]]
    output: TaskOutput = TaskOutput()
    inputs: Mapping[str, np.ndarray] | None = None  # every column the models read, by name (explanations)


class ModelFailed(MLOpsError):
    """A loaded model raised while scoring live rows: a 500 counted under ITS version and route, so a broken
    canary shows in its error rate."""

    def __init__(self, model: LoadedModel, route: str, exc: BaseException) -> None:
        self.version = model.version
        self.route = route
        super().__init__(f"{model.name} v{model.version} ({route}) failed to score: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class _Group:
    model: LoadedModel
    route: str
    rows: list[int]


class Background:
    """A daemon thread running submitted callables in order; `submit` never blocks.

    Jobs go on a deque the thread drains every `POLL_SECONDS`, not on a queue.Queue: a Condition
    notify per request woke the thread for every single job, and on 2 cores that hand-off of the GIL
    cost more than the job. Shadow scores and log records lag by at most a poll interval.
    """

    def __init__(self, sink: PredictionLog | None, model: str, max_jobs: int = BACKGROUND_QUEUE,
                 on_drop: Callable[[], None] | None = None) -> None:
        """`on_drop`: called after a job was dropped (a worker of several publishes its metrics then)."""
        self.sink = sink
        self.model = model
        self.max_jobs = max_jobs
        self.on_drop = on_drop
        self.dropped = 0
        self._jobs: deque[Callable[[], None] | None] = deque()  # append/popleft are atomic
        self._thread = threading.Thread(target=self._run, name=f"mlops-serving-bg-{model}", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        if len(self._jobs) >= self.max_jobs:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("%s: background queue full (%d jobs); %d shadow/log job(s) dropped so far", self.model,
                            self.max_jobs, self.dropped)
            if self.on_drop is not None:
                self.on_drop()
            return
        self._jobs.append(job)

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs, then stop."""
        self._jobs.append(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: background jobs did not finish within %.0f s", self.model, timeout)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until every job submitted so far has run (tests, shutdown)."""
        done = threading.Event()
        self._jobs.append(done.set)
        done.wait(timeout)

    def _run(self) -> None:
        while True:
            try:
                job = self._jobs.popleft()
            except IndexError:
                time.sleep(POLL_SECONDS)
                continue
            if job is None:
                return
            try:
                job()
            except Exception:  # the thread must outlive any one job
                log.exception("%s: background job failed", self.model)


class Scorer:
    """Route, assemble and score rows with the manager's models; hand logging and shadows to Background."""

    def __init__(self, manager: ModelManager, background: Background, model: str,
                 serving: Serving | None = None) -> None:
        """`serving`: the spec's serving section (validate_ranges, allow_empty_rows; default: both off)."""
        self.manager = manager
        self.background = background
        self.model = model
        self.validate_ranges = bool(serving and serving.validate_ranges)
        self.allow_empty_rows = bool(serving and serving.allow_empty_rows)
        self._unranged: set[str] = set()  # versions already warned about (validate_ranges without a profile)

    def score_entities(self, batch: EntityBatch, online: Mapping[str, Sequence[Any]], protocol: str,
                       feature_ages: Mapping[str, Sequence[float | None]] | None = None,
                       pinned: LoadedModel | None = None) -> Scored:
        """Entity rows + their online features (None = missing) -> scores; `feature_ages` (view -> age in seconds
        of each row's online row) goes to the prediction log; `pinned`: score every row with exactly this
        loaded model (a V2 versioned route), not through the canary/shadow routing."""
        import numpy as np

        from airflow_mlops.serving.routing import entity_key_text

        columns = {name: np.asarray(values, dtype=np.float64) for name, values in batch.request_values.items()}
        columns.update({name: np.array(values, dtype=np.float64) for name, values in online.items()})
        keys = [entity_key_text(entity) for entity in batch.entities]
        return self._score(columns, keys, batch.row_ids, batch.entities, protocol, given=False, ages=feature_ages,
                           where=batch.where, sent=frozenset(batch.request_values), pinned=pinned)

    def score_table(self, table: FeatureTable, rid: str, protocol: str, pinned: LoadedModel | None = None) -> Scored:
        """Feature columns given directly (NaN = missing) -> scores."""
        from airflow_mlops.serving.routing import entity_key_text

        columns = _float_columns(table)
        row_ids = [rid] if table.rows == 1 else [f"{rid}-{i}" for i in range(table.rows)]
        keys = [entity_key_text(e) for e in table.entities] if table.entities else row_ids
        return self._score(columns, keys, row_ids, table.entities, protocol, given=True, where=table.where,
                           pinned=pinned)

    def check_given(self, model: LoadedModel, table: FeatureTable) -> None:
        """The checks `score_table` makes, for rows another path scores with `model` (422 naming the row)."""
        rows = list(range(table.rows))
        columns = _float_columns(table)
        self._check(_Group(model, "primary", rows), frame(model, columns, rows, given=True), True, table.where, None)

    def record(self, table: FeatureTable, rid: str, protocol: str, model: LoadedModel) -> list[tuple[str, str]]:
        """Log rows another path scored with `model` (MLflow's own /invocations): each with `model`'s probability,
        computed on the background thread. Returns the (version, route) the request counts under."""
        rows = list(range(table.rows))
        columns = _float_columns(table)
        row_ids = [rid] if table.rows == 1 else [f"{rid}-{i}" for i in rows]
        groups = [_Group(model, "primary", rows)]
        when = time.time()

        def log_rows() -> None:
            one_native_thread()
            predictions = model.predict_matrix(frame(model, columns, rows, given=True))
            self._log(protocol, when, row_ids, None, columns, groups, predictions, None)

        self.background.submit(log_rows)
        return [(model.version, "primary")]

    def _score(self, columns: dict[str, np.ndarray], keys: list[str], row_ids: list[str],
               entities: list[dict[str, Any]] | None, protocol: str, *, given: bool,
               ages: Mapping[str, Sequence[float | None]] | None = None, where: Where | None = None,
               sent: frozenset[str] | None = None, pinned: LoadedModel | None = None) -> Scored:
        """`given`: every column came from the caller (else online features too); `sent`: the caller's columns
        when not; `where` names a row or value of the request (input checks' 422s)."""
        import numpy as np

        one_native_thread()
        if pinned is None:
            groups, shadow = self._route(keys)
        else:  # no shadow either: the client asked for this version's answer only
            groups, shadow = [_Group(pinned, PINNED_ROUTE, list(range(len(keys))))], None
        output = groups[0].model.output
        # multiclass: one row of probabilities per request row (a canary's classes may be in another order)
        predictions: Any = [None] * len(keys) if output.multiclass else np.empty(len(keys), dtype=np.float64)
        prepared = [(group, frame(group.model, columns, group.rows, given=given)) for group in groups]
        for group, inputs in prepared:  # every check before any model scores
            self._check(group, inputs, given, where, sent)
        for group, inputs in prepared:
            try:
                scores = group.model.predict_matrix(inputs)
            except Exception as exc:  # whatever the model raises is the model's failure
                _log_failure(group.model.version, exc)
                raise ModelFailed(group.model, group.route, exc) from exc
            if output.multiclass:
                for j, i in enumerate(group.rows):
                    predictions[i] = scores[j]
            else:
                predictions[group.rows] = scores
        versions, routes = [""] * len(keys), [""] * len(keys)
        for group in groups:
            for i in group.rows:
                versions[i], routes[i] = group.model.version, group.route
        when = time.time()
        self.background.submit(lambda: self._log(protocol, when, row_ids, entities, columns, groups, predictions,
                                                 shadow, ages))
        observed = [(g.model.version, g.route) for g in groups]
        return Scored(predictions if output.multiclass else predictions.tolist(), versions, routes, observed, output,
                      columns)

    def _check(self, group: _Group, inputs: np.ndarray, given: bool, where: Where | None,
               sent: frozenset[str] | None) -> None:
        """The caller's values against the model that scores them (input_checks: 422 naming the value)."""
        if given and not self.allow_empty_rows:
            input_checks.check_not_empty(group.model, inputs, group.rows, where)
        if not self.validate_ranges:
            return
        ranges = group.model.ranges
        if ranges is None:
            if group.model.version not in self._unranged:
                self._unranged.add(group.model.version)
                log.warning("%s v%s has no training-set feature profile (trained before profiles were logged): "
                            "serving.validate_ranges does not check its inputs", self.model, group.model.version)
            return
        input_checks.check_ranges(group.model, ranges, inputs, group.rows, where, None if given else sent)

    def _route(self, keys: list[str]) -> tuple[list[_Group], LoadedModel | None]:
        groups: dict[tuple[str, str], _Group] = {}
        shadow = None
        for i, key in enumerate(keys):
            model, shadow_model, route = self.manager.route(key)
            shadow = shadow or shadow_model
            group = groups.get((model.version, route))
            if group is None:
                group = groups[(model.version, route)] = _Group(model, route, [])
            group.rows.append(i)
        return list(groups.values()), shadow

    def _log(self, protocol: str, when: float, row_ids: list[str], entities: list[dict[str, Any]] | None,
             columns: dict[str, np.ndarray], groups: list[_Group], predictions: Any,
             shadow: LoadedModel | None, ages: Mapping[str, Sequence[float | None]] | None = None) -> None:
        """Runs on the background thread: score the shadow model, then append one record per row (the task's
        fields: `TaskOutput.log_fields`, `shadow_fields`)."""
        shadow_scores = self._shadow_scores(shadow, columns, len(row_ids))
        sink = self.background.sink
        if sink is None:
            return
        stamp = datetime.fromtimestamp(when, UTC).isoformat()
        no_shadow = {"shadow_prediction": None}
        for group in groups:
            names = group.model.feature_columns
            output = group.model.output
            for i in group.rows:
                sink.append({
                    "request_id": row_ids[i], "time": stamp, "model": self.model, "model_version": group.model.version,
                    "route": group.route, "entity_key": entities[i] if entities else None,
                    "features": {c: _json_float(columns[c][i]) for c in names if c in columns},
                    **output.log_fields(predictions[i]), "protocol": protocol,
                    "shadow_version": shadow.version if shadow is not None else None,
                    **(shadow.output.shadow_fields(shadow_scores[i]) if shadow is not None and shadow_scores is not None
                       else no_shadow),
                    **({"feature_age_seconds": {view: _rounded(a[i]) for view, a in ages.items()}} if ages else {}),
                })

    def _shadow_scores(self, shadow: LoadedModel | None, columns: dict[str, np.ndarray], rows: int) -> Any:
        if shadow is None:
            return None
        one_native_thread()
        try:
            return shadow.predict_matrix(frame(shadow, columns, list(range(rows)), given=True))
        except Exception as exc:  # noqa: BLE001 - a broken shadow must never affect serving
            log.warning("%s: shadow v%s could not score (%s: %s)", self.model, shadow.version, type(exc).__name__, exc)
            return None


def frame(model: LoadedModel, columns: Mapping[str, np.ndarray], rows: list[int], *, given: bool) -> Any:
    """The model's input: a float64 matrix of its feature columns, in order, for the chosen rows.

    A missing column is the client's fault when features are given directly (400 naming it), else the
    deployment's: the model needs a column neither the request features nor the feature service have.
    """
    import numpy as np

    names = model.feature_columns
    missing = [c for c in names if c not in columns]
    if missing and given:
        raise RequestError(400, missing[0], f"{missing[0]}: missing; {model.name} v{model.version} needs feature "
                                            f"columns {list(names)} (missing: {missing})")
    if missing:
        raise MLOpsError(f"{model.name} v{model.version} needs columns {missing} that neither the spec's request "
                         "features nor the feature service provide; fix the spec or serve another version")
    full = len(rows) == len(next(iter(columns.values())))
    return np.column_stack([columns[c] if full else columns[c][rows] for c in names])


def _float_columns(table: FeatureTable) -> dict[str, np.ndarray]:
    import numpy as np

    return {name: np.asarray(values, dtype=np.float64) for name, values in table.values.items()}


_FAILED: set[tuple[str, str]] = set()


def _rounded(age: float | None) -> float | None:
    return None if age is None else round(age, 3)


def _log_failure(version: str, exc: BaseException) -> None:
    """Log a model failure once per version and error type (a broken canary fails every request)."""
    key = (version, type(exc).__name__)
    if key not in _FAILED:
        _FAILED.add(key)
        log.error("model v%s failed to score live rows (%s: %s); requests routed to it answer 500", version,
                  type(exc).__name__, exc, exc_info=exc)


def _json_float(value: Any) -> float | None:
    number = float(value)
    return None if number != number else number
