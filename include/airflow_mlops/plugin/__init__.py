"""The airflow-mlops UI plugin: a FastAPI app mounted by Airflow's api-server at `/mlops`.

Registered once, through the `airflow.plugins` entry point (`airflow_plugin.MLOpsPlugin`);
the `plugins/` folder holds no copy (ARCHITECTURE.md §6).

Layout (one module per concern, so new areas plug in without touching the others):

    airflow_plugin.py   the AirflowPlugin and its external views; builds the app only when asked
    app.py              `create_app()`: the FastAPI app, its routers, the auth dependency on all of them
    auth.py             Airflow authentication (JWT header or UI `_token` cookie) and authorization
                        through Airflow's own auth manager
    files.py            `safe_file()`/`file_response()`: serve a file under a base folder, never outside it
    reports.py          `GET /reports/{kind}/{path}`: report files of the state dir
    api.py              `GET /api/health`, `GET /api/openapi.json`
    models_api.py       `GET /api/models...`, `/api/runs/{dag_id}/{run_id}`: the Models pages' JSON
    models_data.py      reads specs, the MLflow registry (versions, aliases, audit, artifacts), history
    run_reports.py      what one DAG run produced (validation pages, checks, versions)
    ui.py               `/ui/...`: the Models pages (HTML shells + static/mlops.js + mlops.css)
    static/             package data: the pages' script, style and icon (no build step, no CDN)

Airflow gives plugin sub-apps no authentication (3.3): every route must depend on
`auth.authenticated_user` — `create_app()` puts it on the app, and a test checks each route.

This module stays import-light (Airflow imports every plugin in every task process): constants only.
"""

from __future__ import annotations

from airflow_mlops.core.ui_urls import URL_PREFIX  # shared with the operators' extra links (operators/links.py)

PLUGIN_NAME = "airflow_mlops"
APP_NAME = "airflow-mlops"

__all__ = ["APP_NAME", "PLUGIN_NAME", "URL_PREFIX"]
