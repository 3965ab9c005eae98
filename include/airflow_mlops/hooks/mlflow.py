"""MLflowHook: an Airflow `mlflow` connection -> an `MlflowClient` for tracking and registry.

A thin adapter: the hook reads its connection through Airflow and hands it to
`core.store_settings.resolve_mlflow` (explicit constructor argument > connection > MLFLOW_TRACKING_URI >
SQLite in MLOPS_HOME); clients, store preparation and fail-fast checks are `core.mlflow_store`'s, which
the serving app uses without Airflow.

Connection fields (conn_type "mlflow"):
- host: the tracking URI (http://mlflow:5000, postgresql://user@db/mlflow, sqlite:////abs/mlflow.db);
- login/password: MLFLOW_TRACKING_USERNAME/PASSWORD for an authenticated MLflow server;
- extra: {"registry_uri": "...", "artifact_root": "..."} (registry defaults to the tracking URI).

mlflow is imported inside methods only: DAG files and the provider registry import this module.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_mlops.core.mlflow_store import (  # re-exported: operators and tests import them from here
    CONNECT_TIMEOUT_S,
    DB_SCHEMES,
    MLflowSettings,
    MLflowStoreMixin,
    scheme_of,
    with_installed_driver,
)
from airflow_mlops.core.store_settings import ConnectionFields, resolve_mlflow

__all__ = ["CONNECT_TIMEOUT_S", "DB_SCHEMES", "MLflowHook", "MLflowSettings", "scheme_of", "with_installed_driver"]

log = logging.getLogger(__name__)


class MLflowHook(MLflowStoreMixin, BaseHook):
    """Connects Airflow to MLflow tracking and model registry.

    :param mlflow_conn_id: Airflow connection of type "mlflow"; when it does not exist (or no
        Airflow API/DB is reachable, as in plain scripts) the embedded defaults are used.
    :param tracking_uri: overrides the connection's host.
    :param registry_uri: overrides the connection's extra "registry_uri".
    :param artifact_root: where new experiments of database-backed stores keep artifacts;
        defaults to the connection's extra "artifact_root", else MLOPS_HOME/mlflow/artifacts.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(
        self,
        mlflow_conn_id: str = default_conn_name,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        artifact_root: str | None = None,
    ) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id
        self._tracking_uri = tracking_uri
        self._registry_uri = registry_uri
        self._artifact_root = artifact_root

    @classmethod
    def ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection-form behaviour; declared to Airflow through provider.py (3.2+ declarative style)."""
        from airflow_mlops.provider import CONNECTION_FORMS

        return CONNECTION_FORMS[cls.conn_type]

    @cached_property
    def settings(self) -> MLflowSettings:  # type: ignore[override]  # the mixin's attribute, resolved lazily
        """Resolved once per hook; the connection is read lazily so constructing a hook is free."""
        conn = None if self._tracking_uri else self._connection()
        return resolve_mlflow(self._tracking_uri, self._registry_uri, self._artifact_root,
                              ConnectionFields.of(conn) if conn is not None else None, self.mlflow_conn_id)

    def _connection(self) -> Any | None:
        try:
            return self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            log.info("No Airflow connection %r; using MLflow defaults", self.mlflow_conn_id)
        except Exception as exc:  # noqa: BLE001 - outside a task there may be no API/DB to ask at all
            log.warning(
                "Cannot read Airflow connection %r (%s: %s); using MLflow defaults",
                self.mlflow_conn_id,
                type(exc).__name__,
                exc,
            )
        return None
