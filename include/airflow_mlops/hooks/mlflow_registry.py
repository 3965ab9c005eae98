"""The registry operations of the operators: `core.model_registry` (Airflow-free, also the serving app's).

Kept as an import path for the operators and for DAG code written against it.
"""

from airflow_mlops.core.model_registry import CHALLENGER, CHAMPION, ModelRegistry, ensure_registered_model

__all__ = ["CHALLENGER", "CHAMPION", "ModelRegistry", "ensure_registered_model"]
