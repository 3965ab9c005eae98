"""The online prediction server: `create_app(spec)` -> FastAPI app; `airflow-mlops serve` runs it (docs/serving.md).

Request path (`endpoints.py`, raw ASGI routes): the body is read on the event loop; the handler (on
the loop for small requests that cannot wait on the network, else in a worker thread:
`Server.inline`) parses it, looks up Feast (one read for all entities), routes each row
(primary/canary/shadow) and scores one float64 matrix per model (`scoring.Scorer`). Shadow scoring
and prediction-log records are made on a background thread after the response.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from airflow_mlops.core.prediction_window import PREDICTION_LOG_URL_ENV  # the writer and the reader share it
from airflow_mlops.core.spec import ModelSpec, duration_seconds
from airflow_mlops.exceptions import MLOpsError
from airflow_mlops.serving import explain, kserve, kserve_wire, mlflow_compat
from airflow_mlops.serving.explain import PredictAsked
from airflow_mlops.serving.features import (
    OnlineFeatures,
    OnlineStoreDown,
    StaleFeatures,
    UnknownEntity,
    apply_stale_policy,
)
from airflow_mlops.serving.kserve_wire import V2Target
from airflow_mlops.serving.models import LoadedModel, ModelLoadError, ModelManager
from airflow_mlops.serving.protocols import (
    JSON,
    EntityBatch,
    EntitySchema,
    RequestError,
    check_rows,
    load_json,
    media_type,
    parse_deploy,
    parse_invocations,
    parse_predict,
    request_id,
)
from airflow_mlops.serving.replies import Reply, check_admin, error_reply
from airflow_mlops.serving.scoring import Background, ModelFailed, Scored, Scorer
from airflow_mlops.serving.status_routes import add_status_routes
from airflow_mlops.serving.workers import split_deploy_refusal, wait_until_all_serve, workers_from_env

if TYPE_CHECKING:
    from airflow_mlops.serving.loaded import LoadedModel
    from airflow_mlops.serving.metrics import ServingMetrics
    from airflow_mlops.serving.prediction_log import PredictionLog

log = logging.getLogger(__name__)

SHADOW_ENV = "MLOPS_SERVING_SHADOW"
# A small prediction request is scored on the event loop itself: the hop to a worker thread and back
# costs as much as scoring one row (~0.3 ms of ~1 ms), and with one worker per core the thread pool
# adds no CPU. Only when nothing in it can wait on the network: an /invocations body (no lookup), or
# a local SQLite online store. A Redis lookup, a large body and /admin (model loading) use a thread.
INLINE_MAX_BYTES = 16 * 1024
SWITCH_INTERVAL_S = 0.0005


class Server:
    """The state behind the endpoints; its handlers are synchronous and run in worker threads."""

    def __init__(self, spec: ModelSpec, manager: ModelManager, metrics: ServingMetrics, workers: int = 1) -> None:
        self.spec = spec
        self.manager = manager
        self.metrics = metrics
        self.workers = workers  # processes serving this app side by side (serving/workers.py)
        self.features: OnlineFeatures | None = None
        self.schema = EntitySchema(keys=dict.fromkeys(spec.features.entity_keys, "int"),
                                   request_features=tuple(spec.features.entity_df.request_features))
        self.scorer: Scorer | None = None
        self.log_sink: PredictionLog | None = None
        self._owns_store = False  # the Feast store was made here (not passed in): shutdown closes its connection

    def attach(self, features: OnlineFeatures, background: Background) -> None:
        self.features = features
        self.schema = EntitySchema(keys=features.key_kinds, request_features=self.schema.request_features,
                                   online_features=features.features)
        self.scorer = Scorer(self.manager, background, self.spec.name, self.spec.serving)

    # ------------------------------------------------------------------ handlers
    def guarded(self, protocol: str, handler: Callable[..., Reply], *args: Any) -> Reply:
        """Run a handler; map our errors to statuses and anything unexpected to a logged 500."""
        try:
            return handler(*args)
        except RequestError as exc:
            return error_reply(protocol, exc.status, exc.message, exc.field)
        except UnknownEntity as exc:
            return error_reply(protocol, 404, str(exc), ",".join(exc.entities[0]))
        except ModelFailed as exc:  # counted under the failing version and route (canary error rate)
            return replace(error_reply(protocol, 500, str(exc)), observed=[(exc.version, exc.route)])
        except (OnlineStoreDown, StaleFeatures, MLOpsError) as exc:  # store down or stale; no model loaded
            return error_reply(protocol, 503, str(exc))
        except Exception:
            log.exception("%s request failed", protocol)
            return error_reply(protocol, 500, "internal error while scoring; see the server log")

    def predict(self, body: bytes, content_type: str | None, asked: PredictAsked) -> Reply:
        """Entity rows -> predictions; `?explain=true` adds each row's attributions (serving/explain.py)."""
        media_type(content_type, (JSON,))
        explaining = explain.explain_flag(asked.query)
        batch = parse_predict(load_json(body, status=400), self.schema, header_id=asked.header_id)
        if explaining:
            served = self.manager.served()
            explain.check_explainable(served)
        scored, status = self._score_entities(batch, "predict")
        output = scored.output
        if output.multiclass:  # the class and its probabilities: TaskOutput.answer
            rows = [{**output.answer(p), "model_version": v, "route": r, "request_id": rid, "entity": entity}
                    for p, v, r, rid, entity in zip(scored.predictions, scored.versions, scored.routes, batch.row_ids,
                                                    batch.entities, strict=True)]
        else:  # one number per row (binary: P(positive), regression: the value), as before tasks existed
            rows = [{"prediction": p, "model_version": v, "route": r, "request_id": rid, "entity": entity}
                    for p, v, r, rid, entity in zip(scored.predictions, scored.versions, scored.routes,
                                                    batch.row_ids, batch.entities, strict=True)]
        if explaining:
            for row, found in zip(rows, explain.explanations(scored, {m.version: m for m in served}), strict=True):
                row[explain.FIELD] = found
        payload = {"model": self.spec.name, "request_id": batch.request_id, **status, "predictions": rows}
        return Reply(200, payload, {"X-Request-ID": batch.request_id}, scored.observed)

    def invocations(self, body: bytes, content_type: str | None, header_id: str | None) -> Reply:
        """MLflow's scoring protocol, answered as `mlflow models serve` answers it (`mlflow_compat`)."""
        served = self.manager.served()
        primary = served[0]
        rules = mlflow_compat.Rules(
            self.schema.max_rows, primary.feature_columns,
            frozenset(c for m in served for c, kind in m.input_types.items() if kind in mlflow_compat.INTEGER_TYPES),
            self._scorer().allow_empty_rows)
        payload = mlflow_compat.precheck(body, content_type, rules)
        rid = request_id(header_id, "X-Request-ID", status=400)
        assert content_type is not None  # precheck refused a request without one
        keys = list(self.schema.keys)
        tables = [mlflow_compat.fast_table(payload, content_type, m, keys) for m in served]
        if primary.pyfunc is None:  # a model handed in without its MLflow artifact: our own reading only
            wanted, positional = self._columns()
            tables = [parse_invocations(body, content_type, wanted=wanted, positional=positional, entity_keys=keys,
                                        max_rows=self.schema.max_rows)]
        if tables[0] is not None and all(t is not None for t in tables):
            scored = self._scorer().score_table(tables[0], rid, "mlflow")
            by_version = {m.version: m for m in served}
            answer = [mlflow_compat.mlflow_answer([p], by_version[v])[0]
                      for p, v in zip(scored.predictions, scored.versions, strict=True)]
            return Reply(200, {"predictions": answer}, {"X-Request-ID": rid}, scored.observed)
        return self._invocations_by_mlflow(body, content_type, rid, primary, mlflow_compat.format_key(payload))

    def _invocations_by_mlflow(self, body: bytes, content_type: str, rid: str, model: LoadedModel,
                               key: str) -> Reply:
        """Bodies only MLflow's own parser reads: its answer for the primary version; the rows it scored are logged."""
        scorer = self._scorer()

        def check(frame: Any) -> None:
            if hasattr(frame, "__len__") and len(frame) > self.schema.max_rows:
                check_rows(len(frame), key, self.schema.max_rows, status=413)
            table = mlflow_compat.table_from_frame(frame, model, key)
            if table is not None:
                scorer.check_given(model, table)

        reply, frame = mlflow_compat.by_mlflow(body, content_type, model, check)
        table = mlflow_compat.table_from_frame(frame, model, key) if frame is not None else None
        observed = scorer.record(table, rid, "mlflow", model) if table is not None else [(model.version, "primary")]
        return replace(reply, headers={**reply.headers, "X-Request-ID": rid}, observed=observed)

    def infer(self, body: bytes, content_type: str | None, target: V2Target) -> Reply:
        """V2 infer; a version in the route (or the body's model_version) is scored by exactly that loaded version."""
        self._check_model_name(target.name)
        payload = kserve_wire.read_request(body, content_type, target.header_length)
        pinned = self.served_model(kserve_wire.check_route_fields(payload, target))
        wanted, positional = self._columns(pinned)
        output = (pinned or self.manager.primary).output
        request = kserve.parse_infer(payload, wanted=wanted, positional=positional, schema=self.schema,
                                     outputs=kserve.output_names(output))
        status: dict[str, Any] = {"degraded": False}
        if request.batch is not None:
            scored, status = self._score_entities(request.batch, "v2", pinned)
            rid = request.batch.request_id
        else:
            assert request.table is not None
            rid = request.id or request_id(None, "id", status=400)
            scored = self._scorer().score_table(request.table, rid, "v2", pinned)
        version = ",".join(sorted(set(scored.versions)))
        reply = kserve.infer_response(self.spec.name, version, rid, scored.predictions, scored.versions,
                                      status["degraded"], status.get("stale_features"), scored.output,
                                      request.outputs)
        if request.binary_output:
            raw, json_length = kserve_wire.binary_response(reply, request.binary_names([o["name"] for o in
                                                                                       reply["outputs"]]))
            return Reply(200, reply, {kserve_wire.HEADER: json_length}, scored.observed, body=raw,
                         media_type=kserve_wire.OCTET_STREAM)
        return Reply(200, reply, {}, scored.observed)

    def metadata(self, name: str, version: str | None = None) -> Reply:
        self._check_model_name(name)
        model = self.served_model(version) or self.manager.primary
        versions = [m.version for m in self.manager.served()]
        return Reply(200, kserve.model_metadata(self.spec.name, versions, model.feature_columns, self.schema,
                                                model.output))

    def model_ready(self, name: str, version: str | None = None) -> Reply:
        """V2 model ready: 200 when loaded (the version, when given, is one this server serves), 503 before."""
        self._check_model_name(name)
        if not self.manager.loaded:
            return Reply(503, {"name": name, "ready": False})
        model = self.served_model(version)
        return Reply(200, {"name": name, **({"version": model.version} if model else {}), "ready": True})

    def served_model(self, version: str | None) -> LoadedModel | None:
        """The loaded model of `version` (None when no version is asked); 404 naming the served versions."""
        if version is None:
            return None
        loaded = self.manager.served()
        for model in loaded:
            if model.version == version:
                return model
        raise RequestError(404, "model_version", f"version {version!r} of {self.spec.name!r} is not served here; "
                                                 f"this server serves versions {[m.version for m in loaded]} "
                                                 f"(GET /v2/models/{self.spec.name})")

    def deploy(self, body: bytes, content_type: str | None, authorization: str | None) -> Reply:
        denied = check_admin(authorization)
        if denied is not None:
            return denied
        media_type(content_type, (JSON,))
        version, mode, fraction = parse_deploy(load_json(body, status=422))
        try:
            refused = split_deploy_refusal(self.manager, self.workers, version, mode) if self.workers > 1 \
                else None
            if refused:
                return Reply(409, {"detail": refused, "status": self.manager.status()})
            status = self.manager.deploy(version, mode, fraction)
        except ModelLoadError as exc:
            return Reply(409, {"detail": str(exc), "status": self.manager.status()})
        except ValueError as exc:
            return Reply(422, {"detail": str(exc), "field": "mode"})
        self.sync_versions()
        return self._all_workers_serve(status) if self.workers > 1 else Reply(200, status)

    def _all_workers_serve(self, status: dict[str, Any]) -> Reply:
        """Answer a deploy on a server of several workers once every one serves the version (they follow the alias)."""
        version = self.manager.primary.version
        timeout = 2 * self.manager.poll_seconds + 30
        done, served = wait_until_all_serve(self.metrics, version, self.workers, timeout)
        if done:
            return Reply(200, {**status, "workers": served})
        return Reply(504, {"detail": f"v{version} serves here, but after {timeout:.0f} s not every one of the "
                                     f"{self.workers} worker processes does (each follows alias "
                                     f"{self.manager.follow_alias!r} every {self.manager.poll_seconds:g} s); see the "
                                     "serving log for their load errors", "status": status, "workers": served})

    # ------------------------------------------------------------------ lifecycle
    def startup(self, store: Any, prediction_log: PredictionLog | None, version: str | None) -> None:
        """Resolve the feature service, load the model (ModelLoadError if none), start the background thread."""
        self._owns_store = store is None
        features = _online_features(self.spec, store)
        if not self.manager.loaded:
            self.manager.start(*([version] if version else []))
        self.log_sink = sink = prediction_log or _default_prediction_log()
        self.metrics.track_dropped(lambda: sink.dropped)
        self.metrics.track_written(lambda: sink.written)
        sink.watch(self.metrics.publish)  # several workers: counts pushed to the shared metrics as they change
        background = Background(sink, self.spec.name, on_drop=self.metrics.publish)
        self.metrics.track_background_dropped(lambda: background.dropped)
        self.manager.watch(self.sync_versions)  # what this worker serves, in the metrics at each swap
        self.attach(features, background)
        self.sync_versions()

    def shutdown(self) -> None:
        """Stop following the alias, finish background work, close the prediction log and our store's connection."""
        self.manager.stop()
        if self.scorer is not None:
            self.scorer.background.close()
        if self.log_sink is not None:
            self.log_sink.close()
        if self.features is not None and self._owns_store:
            close_online_connection(self.features.store)

    # ------------------------------------------------------------------ helpers
    def _scorer(self) -> Scorer:
        if self.scorer is None:
            raise MLOpsError("the server is still starting (no feature store attached yet); retry shortly")
        return self.scorer

    def _score_entities(self, batch: EntityBatch, protocol: str,
                        pinned: LoadedModel | None = None) -> tuple[Scored, dict[str, Any]]:
        """Scores and what the answer must say about its features: {degraded, stale_features?}."""
        assert self.features is not None
        ages: dict[str, list[float | None]] = {}
        try:
            online, ages = self.features.lookup_aged(batch.entities)
            status = self._apply_stale_policy(online, ages)
        except OnlineStoreDown:
            if self.spec.serving.feature_fallback != "request":
                raise
            online = {name: [None] * len(batch.entities) for name in self.features.features}
            status = {"degraded": True}
        scored = self._scorer().score_entities(batch, online, protocol, ages, pinned)
        return scored, status

    def _apply_stale_policy(self, online: dict[str, list[Any]], ages: dict[str, list[float | None]]) -> dict[str, Any]:
        """Rows older than their view's TTL (or serving.max_feature_age): 503, blanked, or served and named."""
        assert self.features is not None
        serving = self.spec.serving
        max_age = duration_seconds(serving.max_feature_age) if serving.max_feature_age else None
        status, _ = apply_stale_policy(self.features, online, ages, serving.stale_features, max_age,
                                            observe=self.metrics.observe_feature_ages)
        return status

    def _columns(self, pinned: LoadedModel | None = None) -> tuple[list[str], list[str]]:
        """(feature columns of every loaded model, the primary's columns in order); of `pinned` alone if given."""
        if pinned is not None:
            return list(pinned.feature_columns), list(pinned.feature_columns)
        primary, secondary = self.manager.primary, self.manager.secondary
        wanted = list(dict.fromkeys([*primary.feature_columns, *(secondary.feature_columns if secondary else ())]))
        return wanted, list(primary.feature_columns)

    def _check_model_name(self, name: str) -> None:
        if name != self.spec.name:
            raise RequestError(404, "model", f"model {name!r} is not served here; this server serves "
                                             f"{self.spec.name!r} (GET /v2/models/{self.spec.name})")

    def inline(self, protocol: str, body: bytes) -> bool:
        """Score this request on the event loop (see INLINE_MAX_BYTES)?"""
        if len(body) > INLINE_MAX_BYTES or protocol not in ("predict", "mlflow", "v2"):
            return False
        return protocol == "mlflow" or (self.features is not None and self.features.label.startswith("sqlite"))

    def sync_versions(self) -> None:
        if self.manager.loaded:
            secondary = self.manager.secondary
            self.metrics.set_versions(self.manager.primary.version, secondary.version if secondary else None)

    def observe(self, reply: Reply, started: float) -> None:
        seconds = time.perf_counter() - started
        for version, route in reply.observed or [("none", "none")]:
            self.metrics.observe(version=version, route=route, status=reply.status, seconds=seconds)


# ---------------------------------------------------------------------------- the app
def create_app(spec: ModelSpec | str, *, manager: ModelManager | None = None, store: Any = None,
               prediction_log: PredictionLog | None = None, metrics: ServingMetrics | None = None,
               version: str | None = None, shadow: bool | None = None, workers: int = 1) -> FastAPI:
    """The serving app of one model.

    :param spec: the model spec, or its name (read from the models dir).
    :param manager: model slots (default: follow the `champion` alias, or serve `version` only).
    :param store: a Feast FeatureStore (default: `features.serving_store()`, settings from core.store_settings).
    :param prediction_log: default: parquet under MLOPS_HOME/predictions, or PostgreSQL when the
        MLOPS_PREDICTION_LOG_URL environment variable is set.
    :param version: serve this registered version and do not follow the alias (pinned deployments).
    :param shadow: score the `challenger` alias' version in shadow, off the request path (logged as
        shadow_version/shadow_prediction); default: the spec's `promotion.shadow`.
    :param workers: processes serving this app behind one socket (`serve --workers`); above 1, /admin/deploy
        only accepts what every worker converges on (serving/workers.py).
    """
    from airflow_mlops import privacy
    from airflow_mlops.serving.metrics import ServingMetrics

    privacy.disable_telemetry()  # the serving process runs our code only (also started without our CLI)
    spec = spec if isinstance(spec, ModelSpec) else load_spec(spec)
    shadow = spec.promotion.shadow if shadow is None else shadow
    manager = manager or ModelManager(spec.name, poll_seconds=spec.serving.poll_seconds,
                                      follow_alias=None if version else "champion",
                                      shadow_alias="challenger" if shadow else None)
    server = Server(spec, manager, metrics or ServingMetrics(spec.name), workers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        try:
            await run_in_threadpool(server.startup, store, prediction_log, version)
            yield
        finally:
            await run_in_threadpool(server.shutdown)

    app = FastAPI(title=f"airflow-mlops serving: {spec.name}", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.server = server
    _add_routes(app, server)
    return app


def _add_routes(app: FastAPI, server: Server) -> None:
    from airflow_mlops.serving.endpoints import scoring_routes

    app.router.routes.extend(scoring_routes(server))
    add_status_routes(app, server)


def _online_features(spec: ModelSpec, store: Any) -> OnlineFeatures:
    if store is None:
        from airflow_mlops.serving.features import serving_store

        store = serving_store()
    features = OnlineFeatures(store, spec.features.feature_service, spec.features.entity_keys)
    features.warm_up()
    return features


def close_online_connection(store: Any) -> None:
    """Close the SQLite connection Feast's online store keeps for the store's life (Feast has no close()).

    Otherwise a stopped app's connection stays open until garbage collection, on a file that may be
    deleted or replaced meanwhile (the test suite puts its demo state back at the same path). Feast
    reopens it on next use (`_conn` is None again), so closing is safe even if the store is used later."""
    try:
        online = store._get_provider().online_store
    except AttributeError:  # a store stand-in without Feast's provider
        return
    conn = getattr(online, "_conn", None)
    if conn is not None:
        online._conn = None
        conn.close()


def _default_prediction_log() -> PredictionLog:
    from airflow_mlops.serving.prediction_log import PredictionLog

    return PredictionLog(db_url=os.environ.get(PREDICTION_LOG_URL_ENV) or None)


def load_spec(name: str) -> ModelSpec:
    from airflow_mlops.core.spec import load_specs
    from airflow_mlops.exceptions import SpecError

    specs = {s.name: s for s in load_specs()}
    if name not in specs:
        raise SpecError([f"model {name!r} has no spec in the models dir; known models: {sorted(specs)}"])
    return specs[name]


def app_from_env() -> FastAPI:
    """uvicorn factory (`--workers N`): the model from MLOPS_SERVING_MODEL, pinned to MLOPS_SERVING_MODEL_VERSION,
    shadow on/off from MLOPS_SERVING_SHADOW ("true"/"false"; unset: the spec's promotion.shadow), the number of
    worker processes from MLOPS_SERVING_WORKERS."""
    name = os.environ.get("MLOPS_SERVING_MODEL")
    if not name:
        raise MLOpsError("MLOPS_SERVING_MODEL is not set; run `airflow-mlops serve --model NAME`")
    # The request thread gives up the GIL inside the SQLite/Redis read; a busy background thread (log
    # writer, shadow) then keeps it for the whole switch interval (5 ms default) before the request can
    # go on: that was most of /predict's p99. A server process switches every 0.5 ms instead.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    flag = os.environ.get(SHADOW_ENV, "").strip().lower()
    if flag not in ("", "true", "false"):
        raise MLOpsError(f"{SHADOW_ENV}={flag!r}: must be 'true' or 'false' (or unset: the spec's promotion.shadow)")
    return create_app(name, version=os.environ.get("MLOPS_SERVING_MODEL_VERSION") or None,
                      shadow=None if not flag else flag == "true", workers=workers_from_env())
