"""The DAG factory: model specs in, DAG objects out. Imports only airflow.sdk, core.spec and our thin operators."""

from __future__ import annotations

from airflow_mlops.dags.factory import FEATURE_DAG_ID, build_dags, training_dag_id

__all__ = ["FEATURE_DAG_ID", "build_dags", "training_dag_id"]
