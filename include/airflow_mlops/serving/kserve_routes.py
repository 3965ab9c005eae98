"""KServe V2 per-version routes of the serving app: metadata and readiness of one served version.

`{version}` is an MLflow registry version this server has loaded (the primary, and the canary or
shadow version while there is one): `GET /v2/models/{name}` lists them under `versions`. Any other
version answers 404 naming the served ones. `POST .../versions/{version}/infer` is a scoring route
(`endpoints.py`) and scores every row with exactly that version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Response

from airflow_mlops.serving.replies import reply_response

if TYPE_CHECKING:
    from airflow_mlops.serving.app import Server


def add_versioned_routes(app: FastAPI, server: Server) -> None:
    @app.get("/v2/models/{name}/versions/{version}")
    def v2_version_metadata(name: str, version: str) -> Response:
        return reply_response(server.guarded("v2", server.metadata, name, version))

    @app.get("/v2/models/{name}/versions/{version}/ready")
    def v2_version_ready(name: str, version: str) -> Response:
        return reply_response(server.guarded("v2", server.model_ready, name, version))
