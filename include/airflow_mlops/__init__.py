"""airflow-mlops: turn Airflow 3 into an MLOps level-2 platform.

Importing the package changes nothing outside it (no environment variable, no logging setup):
Airflow imports our plugin in every process, other teams' DAGs included. The privacy defaults
(`privacy.py`) are applied where our own code runs: the CLI, our operators, sensors and triggers
(`boundary.py`), the serving app and the UI plugin's app.
"""

from __future__ import annotations

from airflow_mlops.provider import VERSION as __version__

__all__ = ["__version__"]
