"""Provider metadata: makes `airflow providers list` show us and the UI offer our connection types."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-mlops",
        "name": "Airflow MLOps",
        "description": "Data validation, Feast features, MLflow registry, deployment and monitoring for Airflow 3.",
        "versions": ["0.1.0"],
        "connection-types": [
            {"hook-class-name": "airflow_mlops.hooks.mlflow.MLflowHook", "connection-type": "mlflow"},
            {"hook-class-name": "airflow_mlops.hooks.feast.FeastHook", "connection-type": "feast"},
        ],
        "hooks": [
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops.hooks.mlflow"]},
            {"integration-name": "Feast", "python-modules": ["airflow_mlops.hooks.feast"]},
        ],
        "operators": [
            {
                "integration-name": "MLflow",
                "python-modules": ["airflow_mlops.operators.training", "airflow_mlops.operators.registry"],
            },
            {"integration-name": "Feast", "python-modules": ["airflow_mlops.operators.features"]},
        ],
    }
