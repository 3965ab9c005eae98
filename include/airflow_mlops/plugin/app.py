"""The FastAPI app of the mlops UI plugin (mounted by Airflow's api-server at `/mlops`).

`create_app()` puts `auth.require_ui_access` (authenticated + allowed to use the Airflow UI) on the
whole app, so every route of every router in `ROUTERS` requires it — a route cannot forget it.
FastAPI's own `/docs`, `/redoc` and `/openapi.json` are switched off (they would be plain
routes outside the dependency); `GET /api/openapi.json` serves the document authenticated.
Finer checks (the DAG a report belongs to) are the routes' own, through `auth.authorize_dag_read`.

To add an area: write a module with an `APIRouter` (and no auth code) and append it to `ROUTERS`.
Do not `app.mount()` anything (static files, sub-apps): a mount bypasses the app's dependencies;
serve files through a route and `files.safe_file` instead. `tests/integration/test_plugin_auth.py`
fails on any route without the dependency.
"""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter, Depends, FastAPI

from airflow_mlops import __version__
from airflow_mlops.plugin import api, models_api, reports, ui
from airflow_mlops.plugin.auth import require_ui_access

ROUTERS: tuple[APIRouter, ...] = (api.router, models_api.router, reports.router, ui.router)


def create_app() -> FastAPI:
    """A new app with every router; each route depends on `require_ui_access`.

    Applies the privacy defaults: the routes read the MLflow registry in the api-server process, which
    runs no task, so this changes no one's DAG (the plugin's import changes nothing).
    """
    from airflow_mlops import privacy

    privacy.disable_telemetry()
    app = FastAPI(
        title="airflow-mlops",
        summary="MLOps views and reports for Airflow; every route requires Airflow authentication",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(require_ui_access)],
    )
    for router in ROUTERS:
        app.include_router(router)
    return app


@cache
def get_app() -> FastAPI:
    """The one app instance the plugin hands to Airflow (built on first use)."""
    return create_app()
