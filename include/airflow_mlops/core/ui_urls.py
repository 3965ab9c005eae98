"""Where the airflow-mlops UI plugin is mounted in Airflow's api-server, and the model pages under it.

One source for the plugin (which mounts its app at URL_PREFIX) and the operators' extra links to it.
"""

from __future__ import annotations

from urllib.parse import quote

URL_PREFIX = "/mlops"


def model_url(model: str, suffix: str = "") -> str:
    return f"{URL_PREFIX}/ui/models/{quote(model, safe='')}{suffix}"
