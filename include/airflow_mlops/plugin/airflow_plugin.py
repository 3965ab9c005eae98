"""The AirflowPlugin of airflow-mlops, registered once through the `airflow.plugins` entry point.

Airflow imports every plugin in every process that loads plugins — each task process too, for
macros and listeners — so this module imports nothing heavy: the FastAPI app (fastapi, Airflow's
API modules, our routers: ~1 s) is built only when Airflow reads `fastapi_apps`, which only the
api-server and `airflow plugins` do. The views below are plain data. Extra links are declared by
the operators themselves (operators/links.py): Airflow 3 computes them in the task process, where
plugin-registered links are not used. The one listener (preload.py) imports nothing heavy unless
`[mlops] preload_libraries` is on, and then only in the scheduler.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_mlops.plugin import APP_NAME, PLUGIN_NAME, URL_PREFIX, preload

log = logging.getLogger(__name__)

# Pages of our app shown by Airflow's UI (plugin/ui.py serves them). With `url_route` the UI shows
# the page in an iframe under /plugin/<url_route>, same origin, so the session cookie goes along;
# it fills in `{DAG_ID}`/`{RUN_ID}` for the dag and dag_run destinations (DAG and DAG-run tabs).
EXTERNAL_VIEWS: list[dict[str, Any]] = [
    {"name": "Models", "href": f"{URL_PREFIX}/ui/models", "url_route": "mlops-models", "destination": "nav",
     "icon": f"{URL_PREFIX}/ui/static/models.svg", "nav_top_level": True},
    {"name": "MLOps model", "href": f"{URL_PREFIX}/ui/dags/{{DAG_ID}}", "url_route": "mlops-model",
     "destination": "dag"},
    {"name": "MLOps reports", "href": f"{URL_PREFIX}/ui/runs/{{DAG_ID}}/{{RUN_ID}}", "url_route": "mlops-run",
     "destination": "dag_run"},
]


class MLOpsPlugin(AirflowPlugin):
    """FastAPI app at `/mlops` (reports, JSON API, Models pages; all auth-checked), its UI views, extra links."""

    name = PLUGIN_NAME
    external_views = EXTERNAL_VIEWS
    # `on_starting`: the opt-in library preload in the scheduler (plugin/preload.py); a no-op elsewhere.
    listeners = [preload]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]  # lazy on purpose
        """Read by Airflow on plugin instances only (`plugins_manager.get_fastapi_plugins`).

        An app that cannot be built is logged and left out, like a plugin that fails to import:
        the api-server keeps serving Airflow, only `/mlops` is missing.
        """
        try:
            from airflow_mlops.plugin.app import get_app

            app = get_app()
        except Exception:
            log.exception("airflow-mlops: the UI plugin's FastAPI app could not be built; /mlops is not mounted")
            return []
        return [{"app": app, "url_prefix": URL_PREFIX, "name": APP_NAME}]
