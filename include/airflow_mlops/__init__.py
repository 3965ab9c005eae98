"""airflow-mlops: turn Airflow 3 into an MLOps level-2 platform.

Importing the package switches off every library's telemetry before any of them is imported,
so no code path a user runs phones home (see `privacy.py`).
"""

from __future__ import annotations

from airflow_mlops import privacy as _privacy
from airflow_mlops.provider import VERSION as __version__

_privacy.disable_telemetry()

__all__ = ["__version__"]
