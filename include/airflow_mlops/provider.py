"""Provider metadata: makes `airflow providers list` show us and the UI offer our connection types.

Pure data, no imports from the package: Airflow calls `get_provider_info()` while it is still
initialising its configuration, so importing hooks (and through them airflow) here would be circular.
Connection-form behaviour is declared here — Airflow 3.2+ reads `ui-field-behaviour` from provider
info; the hook-method form is deprecated and only loads with flask_appbuilder installed.
"""

from __future__ import annotations

import json
from typing import Any

VERSION = "0.1.0"  # the only version: pyproject.toml reads it (hatch `[tool.hatch.version]`)

CONNECTION_FORMS: dict[str, dict[str, Any]] = {
    "mlflow": {
        "hidden_fields": ["schema", "port"],
        "relabeling": {
            "host": "Tracking URI",
            "login": "Username (MLflow server auth)",
            "password": "Password (MLflow server auth)",
        },
        "placeholders": {
            "host": "http://127.0.0.1:5000 | postgresql://mlflow@127.0.0.1:5432/mlflow | sqlite:////abs/mlflow.db",
            "extra": '{"registry_uri": "defaults to the tracking URI", "artifact_root": "s3://bucket/mlflow"}',
            "login": "optional, sets MLFLOW_TRACKING_USERNAME",
            "password": "optional, sets MLFLOW_TRACKING_PASSWORD",
        },
    },
    "feast": {
        "hidden_fields": ["host", "schema", "login", "port"],
        "relabeling": {"password": "Redis password (optional)"},
        "placeholders": {
            "extra": json.dumps(
                {
                    "repo_path": "/usr/local/airflow/include/feature_repo",
                    "project": "mlops",
                    "online_store": "redis://redis:6379/0  (omit: embedded SQLite online store)",
                },
                indent=2,
            ),
            "password": "only if Redis requires AUTH",
        },
    },
    "mlops_serving": {
        "hidden_fields": ["schema", "login", "port", "extra"],
        "relabeling": {"host": "Serving URL", "password": "Admin token"},
        "placeholders": {
            "host": "http://127.0.0.1:8000",
            "password": "MLOPS_SERVING_ADMIN_TOKEN of the serving app",
        },
    },
}
HOOKS = {
    "mlflow": ("airflow_mlops.hooks.mlflow.MLflowHook", "MLflow"),
    "feast": ("airflow_mlops.hooks.feast.FeastHook", "Feast"),
    "mlops_serving": ("airflow_mlops.hooks.serving.ServingHook", "MLOps serving app"),
}


def _declared(behaviour: dict[str, Any]) -> dict[str, Any]:
    """Hook-style snake_case behaviour -> provider-info kebab-case."""
    return {
        "hidden-fields": behaviour["hidden_fields"],
        "relabeling": behaviour["relabeling"],
        "placeholders": behaviour["placeholders"],
    }


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-mlops",
        "name": "Airflow MLOps",
        "description": "Data validation, Feast features, MLflow registry, deployment and monitoring for Airflow 3",
        "versions": [VERSION],
        "connection-types": [
            {
                "hook-class-name": hook_class,
                "hook-name": hook_name,
                "connection-type": conn_type,
                "ui-field-behaviour": _declared(CONNECTION_FORMS[conn_type]),
            }
            for conn_type, (hook_class, hook_name) in HOOKS.items()
        ],
        "hooks": [
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops.hooks.mlflow",
                                                              "airflow_mlops.hooks.mlflow_registry"]},
            {"integration-name": "Feast", "python-modules": ["airflow_mlops.hooks.feast"]},
            {"integration-name": "Great Expectations", "python-modules": ["airflow_mlops.hooks.gx"]},
            {"integration-name": "MLOps serving", "python-modules": ["airflow_mlops.hooks.serving"]},
        ],
        "operators": [
            {
                "integration-name": "MLflow",
                "python-modules": [
                    "airflow_mlops.operators.training",
                    "airflow_mlops.operators.evaluation",
                    "airflow_mlops.operators.registry",
                    "airflow_mlops.operators.model_card",
                    "airflow_mlops.operators.promotion",
                    "airflow_mlops.operators.approval",
                    "airflow_mlops.operators.retraining",
                ],
            },
            # the training pod (KubernetesPodOperator) and the KubernetesExecutor's pod override for `train`
            {"integration-name": "Kubernetes", "python-modules": ["airflow_mlops.operators.kubernetes",
                                                                  "airflow_mlops.operators.executor_config"]},
            {"integration-name": "MLOps serving", "python-modules": ["airflow_mlops.operators.deployment",
                                                                     "airflow_mlops.operators.deployment_k8s",
                                                                     "airflow_mlops.operators.batch",
                                                                     "airflow_mlops.operators.experiments"]},
            {"integration-name": "Feast", "python-modules": ["airflow_mlops.operators.features"]},
            {"integration-name": "Great Expectations", "python-modules": ["airflow_mlops.operators.validation"]},
            {"integration-name": "Evidently", "python-modules": ["airflow_mlops.operators.evidently"]},
            {"integration-name": "Monitoring", "python-modules": ["airflow_mlops.operators.monitoring"]},
            # the Asset objects our operators emit and their extra links to the Models pages
            {"integration-name": "MLOps UI", "python-modules": ["airflow_mlops.operators.assets",
                                                                "airflow_mlops.operators.links"]},
        ],
        "sensors": [
            {"integration-name": "Feast", "python-modules": ["airflow_mlops.sensors.feast"]},
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops.sensors.mlflow"]},
        ],
        "triggers": [
            {"integration-name": "Feast", "python-modules": ["airflow_mlops.triggers.feast"]},
            {"integration-name": "Landing directory", "python-modules": ["airflow_mlops.triggers.landing"]},
            {"integration-name": "MLOps serving", "python-modules": ["airflow_mlops.triggers.canary"]},
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops.triggers.mlflow"]},
            {"integration-name": "Delayed labels", "python-modules": ["airflow_mlops.triggers.labels"]},
        ],
        "extra-links": [
            "airflow_mlops.operators.validation.ValidationReportLink",
            "airflow_mlops.operators.evidently.DriftReportLink",
            "airflow_mlops.operators.links.ModelPageLink",
            "airflow_mlops.operators.links.EvaluationReportLink",
            "airflow_mlops.operators.links.ModelVersionLink",
            "airflow_mlops.operators.links.DriftHistoryLink",
        ],
    }
