"""Status endpoints of the serving app: /health, /ready, /metrics, MLflow's /ping and /version, and the KServe V2
health/metadata routes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Response

from airflow_mlops.serving.kserve_routes import add_versioned_routes
from airflow_mlops.serving.replies import Reply, reply_response

if TYPE_CHECKING:
    from airflow_mlops.serving.app import Server


def add_status_routes(app: FastAPI, server: Server) -> None:
    @app.get("/health")
    def health() -> Response:
        return reply_response(Reply(200, {"status": "ok"}))

    @app.get("/ping")
    def ping() -> Response:
        # As MLflow's scoring server: 200 with a newline once a model is loaded (MLflow has one from the start), 404
        # before. Liveness stays on /health, which answers while the process runs.
        return Response("\n", status_code=200 if server.manager.loaded else 404, media_type="application/json")

    @app.get("/version")
    def version() -> Response:
        # The MLflow version of the scoring protocol spoken at /invocations, as `mlflow models serve` answers.
        from importlib.metadata import version as installed  # mlflow.version would import all of mlflow

        return Response(installed("mlflow"), media_type="application/json")

    @app.get("/ready")
    def ready() -> Response:
        ok = server.manager.loaded and server.scorer is not None
        # pid: which worker answered; with several, what each live one serves (from the shared metrics files)
        processes: dict[str, Any] = {"pid": os.getpid(), "workers": server.workers}
        if server.workers > 1:
            processes["worker_versions"] = server.metrics.workers() or {}
        return reply_response(Reply(200 if ok else 503, {"ready": ok, **server.manager.status(), **processes}))

    @app.get("/metrics")
    def metrics() -> Response:
        server.sync_versions()
        body, content_type = server.metrics.render()
        return Response(body, media_type=content_type)

    add_v2_status_routes(app, server)


def add_v2_status_routes(app: FastAPI, server: Server) -> None:
    @app.get("/v2/health/live")
    def v2_live() -> Response:
        return reply_response(Reply(200, {"live": True}))

    @app.get("/v2/health/ready")
    def v2_ready() -> Response:
        ok = server.manager.loaded and server.scorer is not None
        return reply_response(Reply(200 if ok else 503, {"ready": ok}))

    @app.get("/v2")
    def v2_server() -> Response:
        from airflow_mlops import __version__

        return reply_response(Reply(200, {"name": "airflow-mlops", "version": __version__,
                                         "extensions": ["binary_tensor_data"]}))

    @app.get("/v2/models/{name}")
    def v2_metadata(name: str) -> Response:
        return reply_response(server.guarded("v2", server.metadata, name))

    @app.get("/v2/models/{name}/ready")
    def v2_model_ready(name: str) -> Response:
        return reply_response(server.guarded("v2", server.model_ready, name))

    add_versioned_routes(app, server)
