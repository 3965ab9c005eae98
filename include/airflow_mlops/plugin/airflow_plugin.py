"""The AirflowPlugin of airflow-mlops, registered once through the `airflow.plugins` entry point.

Airflow imports every plugin in every process that loads plugins — each task process too, for
macros and listeners — so this module imports nothing heavy: the FastAPI app (fastapi, Airflow's
API modules, our routers: ~1 s) is built only when Airflow reads `fastapi_apps`, which only the
api-server and `airflow plugins` do.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_mlops.plugin import APP_NAME, PLUGIN_NAME, URL_PREFIX

log = logging.getLogger(__name__)


class MLOpsPlugin(AirflowPlugin):
    """FastAPI app at `/mlops`: `/mlops/reports/<kind>/<path>`, `/mlops/api/health` (all auth-checked)."""

    name = PLUGIN_NAME

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
