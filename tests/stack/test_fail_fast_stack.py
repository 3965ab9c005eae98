"""Configuration errors against the real servers on 127.0.0.1: refused logins and missing databases never retry.

PostgreSQL (5432, trust auth for `postgres`) and Redis (6379) must be running; the probes below are the ones
the hooks make when a task first asks for a client. Wrong credentials or a database that does not exist
answer the same on every try, so they raise StoreConfigError (an AirflowFailException: no task retry).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_mlops.exceptions import StoreConfigError
from airflow_mlops.hooks.feast import FeastHook
from airflow_mlops.hooks.mlflow import MLflowHook

pytestmark = pytest.mark.stack


@pytest.fixture
def no_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)


def test_postgres_database_that_does_not_exist(no_mlflow_env: None) -> None:
    with pytest.raises(StoreConfigError) as caught:
        MLflowHook(tracking_uri="postgresql://postgres@127.0.0.1:5432/mlflow_typo_db").get_conn()
    message = str(caught.value)
    assert 'database "mlflow_typo_db" does not exist' in message and "Create the database" in message


def test_postgres_role_that_does_not_exist_is_masked(no_mlflow_env: None) -> None:
    with pytest.raises(StoreConfigError) as caught:
        MLflowHook(tracking_uri="postgresql://mlflow_typo_role:hunter2@127.0.0.1:5432/postgres").get_conn()
    message = str(caught.value)
    assert "postgresql://mlflow_typo_role:***@127.0.0.1:5432/postgres" in message
    assert 'role "mlflow_typo_role" does not exist' in message and "hunter2" not in message


def test_redis_refused_password_and_missing_database(mlops_home: Path) -> None:
    with pytest.raises(StoreConfigError) as caught:
        FeastHook(online_store="redis://nobody:wrong@127.0.0.1:6379/0").check_online_store()
    assert "Give the right password" in str(caught.value) and "wrong" not in str(caught.value).split("(", 1)[0]
    with pytest.raises(StoreConfigError) as caught:
        FeastHook(online_store="redis://127.0.0.1:6379/99").check_online_store()
    assert "DB index is out of range" in str(caught.value) and "0-15" in str(caught.value)
