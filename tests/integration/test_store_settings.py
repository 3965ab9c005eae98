"""Store settings resolve in one place, and the Airflow-free reading of AIRFLOW_CONN_* equals Airflow's.

`core.store_settings.env_connection` parses the variable as Airflow's environment-variables secrets backend
does (compared with Airflow's own `Connection` here, which is why this module imports Airflow); the hooks
(connection read through Airflow) and the serving app (variable read without it) then resolve the same
MLflow and Feast settings for the same environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_mlops.core.store_settings import (
    ConnectionFields,
    env_connection,
    parse_connection_uri,
    resolve_feast,
    resolve_mlflow,
)

pytestmark = pytest.mark.integration

VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_FEAST_ONLINE_STORE", "MLOPS_FEATURE_REPO",
             "AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW_CONN_FEAST_DEFAULT")

CONNECTIONS = [
    "mlflow://mlflow.internal:5000",
    "mlflow://user:p%40ss%2Fword@mlflow.internal:5000/?registry_uri=http%3A%2F%2Freg%3A5000&artifact_root=s3%3A%2F%2Fb",
    "mlflow://https://mlflow.example.com",
    "mlflow://?tracking_uri=postgresql%3A%2F%2Fmlflow%40db%2Fmlflow",
    "feast://?repo_path=%2Fopt%2Frepo&online_store=redis%3A%2F%2Fredis%3A6379%2F0&project=p1",
    "feast://:s3cr3t@?online_store=redis%3A%2F%2Fredis%3A6379%2F1",
    "my-type://h/%2Fabs%2Fschema?__extra__=%7B%22a%22%3A+%7B%22b%22%3A+1%7D%7D",
    "postgresql://u:pw@db.example.com:5433/mlops",
    json.dumps({"conn_type": "mlflow", "host": "http://mlflow:5000", "login": "u", "password": "p", "port": "5000",
                "extra": {"registry_uri": "http://reg:5000"}}),
    json.dumps({"conn_type": "feast", "extra": json.dumps({"repo_path": "/r", "online_store": "sqlite"})}),
    json.dumps({"conn_type": "feast", "password": "pw", "extra": {"online_store": "redis://127.0.0.1:6379/0"}}),
    json.dumps({"conn_type": "mlflow", "host": "", "extra": "not json"}),
]


def _airflow_reading(conn_id: str, value: str) -> ConnectionFields:
    from airflow.sdk.definitions.connection import Connection

    conn = Connection.from_json(value, conn_id=conn_id) if value.startswith("{") else \
        Connection.from_uri(value, conn_id=conn_id)
    return ConnectionFields.of(conn)


@pytest.mark.parametrize("value", CONNECTIONS)
def test_the_variable_is_read_as_airflow_reads_it(value: str) -> None:
    ours = env_connection("some_conn", {"AIRFLOW_CONN_SOME_CONN": value})
    assert ours == _airflow_reading("some_conn", value)


def test_an_unset_variable_is_no_connection_and_a_bad_uri_names_the_variable() -> None:
    assert env_connection("mlflow_default", {}) is None
    with pytest.raises(ValueError, match="AIRFLOW_CONN_X: invalid connection URI"):
        parse_connection_uri("x", "a://b://c://d")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_mlflow_order_argument_connection_environment_default(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = resolve_mlflow()
    assert default.tracking_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'mlflow.db'}"
    assert default.source == "defaults" and default.artifact_root == str(tmp_path / "home" / "mlflow" / "artifacts")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_mlflow().tracking_uri == "http://env:5000" and resolve_mlflow().artifact_root is None
    conn = ConnectionFields("mlflow_default", host="conn.internal", port=5000, login="u", password="p",
                            extra={"registry_uri": "http://reg:5000"})
    from_conn = resolve_mlflow(connection=conn)
    assert (from_conn.tracking_uri, from_conn.registry_uri, from_conn.username, from_conn.source) == \
        ("http://conn.internal:5000", "http://reg:5000", "u", "connection mlflow_default")
    empty_host = resolve_mlflow(connection=ConnectionFields("mlflow_default", host=""))
    assert empty_host.tracking_uri == "http://env:5000"  # airflow_settings.yaml ships an empty host
    argued = resolve_mlflow(tracking_uri="http://arg:1", connection=conn)
    assert (argued.tracking_uri, argued.registry_uri, argued.username, argued.source) == \
        ("http://arg:1", "http://arg:1", None, "arguments")  # an explicit URI ignores the connection


def test_feast_order_argument_connection_environment_default(clean_env: pytest.MonkeyPatch) -> None:
    assert resolve_feast().online_store is None and resolve_feast().project == "mlops"
    clean_env.setenv("MLOPS_FEAST_ONLINE_STORE", "redis://env:6379/0")
    assert resolve_feast().online_store == "redis://env:6379/0"
    conn = ConnectionFields("feast_default", password="pw", extra={"online_store": "redis://conn:6379/2",
                                                                   "project": "p", "repo_path": "/tmp/repo"})
    settings = resolve_feast(connection=conn)
    assert (settings.online_store, settings.project, settings.redis_password, settings.repo_path) == \
        ("redis://conn:6379/2", "p", "pw", Path("/tmp/repo"))
    assert resolve_feast(online_store="sqlite", connection=conn).online_store is None


def test_hooks_and_the_serving_app_resolve_the_same_stores(clean_env: pytest.MonkeyPatch) -> None:
    from airflow_mlops.core.mlflow_store import MLflowStore
    from airflow_mlops.hooks.feast import FeastHook
    from airflow_mlops.hooks.mlflow import MLflowHook

    clean_env.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "mlflow://u:pw@mlflow.internal:5000/?registry_uri=http%3A%2F%2Fr")
    clean_env.setenv("AIRFLOW_CONN_FEAST_DEFAULT", json.dumps(
        {"conn_type": "feast", "password": "pw", "extra": {"online_store": "redis://redis:6379/0", "project": "p"}}))
    assert MLflowHook().settings == MLflowStore().settings
    assert MLflowStore().settings.tracking_uri == "http://mlflow.internal:5000"
    assert FeastHook().settings == resolve_feast(connection=env_connection("feast_default"))
