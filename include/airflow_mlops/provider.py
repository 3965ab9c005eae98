"""Provider metadata: makes `airflow providers list` show us and the UI offer our connection types.

Connection-form behaviour is declared here (Airflow 3.2+ reads `ui-field-behaviour` from provider
info; the hook-method form is deprecated and needs flask_appbuilder to load).
"""

from __future__ import annotations

from typing import Any

from airflow_mlops import __version__


def _declared(behaviour: dict[str, Any]) -> dict[str, Any]:
    """Hook-style snake_case behaviour -> provider-info kebab-case."""
    return {
        "hidden-fields": behaviour.get("hidden_fields", []),
        "relabeling": behaviour.get("relabeling", {}),
        "placeholders": behaviour.get("placeholders", {}),
    }


def _connection_types() -> list[dict[str, Any]]:
    from airflow_mlops.hooks.feast import FeastHook
    from airflow_mlops.hooks.mlflow import MLflowHook

    return [
        {
            "hook-class-name": f"{hook.__module__}.{hook.__name__}",
            "hook-name": hook.hook_name,
            "connection-type": hook.conn_type,
            "ui-field-behaviour": _declared(hook.ui_field_behaviour()),
        }
        for hook in (MLflowHook, FeastHook)
    ]


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-mlops",
        "name": "Airflow MLOps",
        "description": "Data validation, Feast features, MLflow registry, deployment and monitoring for Airflow 3",
        "versions": [__version__],
        "connection-types": _connection_types(),
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
