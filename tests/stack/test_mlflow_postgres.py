"""Production profile: MLflow tracking + registry on the real PostgreSQL at 127.0.0.1:5432.

A fresh database per test session (mlops_stack_<pid>) is created and dropped. If PostgreSQL is not
reachable the fixture raises, so these tests ERROR with the reason — they never skip.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from airflow_mlops.core import lineage
from airflow_mlops.exceptions import StoreConfigError, StoreUnavailable
from airflow_mlops.hooks.mlflow import MLflowHook, with_installed_driver
from airflow_mlops.operators.registry import MLflowRegisterModelOperator
from airflow_mlops.operators.training import SklearnTrainModelOperator
from support.training_sets import demo_as_of_join, write_training_set

pytestmark = pytest.mark.stack

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
MODEL = "ride_completion_stack"


def _admin_connection() -> Any:
    import psycopg2

    try:
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}, trust auth) is required by the stack tests and is "
            f"not reachable: {str(exc).strip()}. "
            "Start it (e.g. `docker compose -f docker/compose.yaml up -d postgres`)."
        ) from exc
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return conn


@pytest.fixture(scope="session")
def pg_uri() -> Iterator[str]:
    name = f"mlops_stack_{os.getpid()}"
    admin = _admin_connection()
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_connection(pg_uri: str, mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The operators' default connection points at PostgreSQL, as in the production profile."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": pg_uri}))
    return pg_uri


def _training_set(small_demo: Any, directory: Path) -> dict[str, Any]:
    return write_training_set(demo_as_of_join(small_demo), directory / "stack.parquet",
                              feature_service="ride_completion_v1",
                              feature_views={"driver_hourly_stats": ["conv_rate"]})


def _context(task_id: str) -> dict[str, Any]:
    dag = SimpleNamespace(dag_id="stack__train")
    return {"dag": dag, "run_id": "manual__stack", "ti": SimpleNamespace(task_id=task_id, try_number=1)}


def test_track_register_alias_and_load_on_postgres(pg_connection: str, mlops_home: Path, small_demo: Any) -> None:
    import mlflow

    hook = MLflowHook()
    assert hook.tracking_uri == pg_connection and hook.settings.source == "connection mlflow_default"
    # SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3; without it MLflow gets psycopg2.
    assert hook.get_conn().tracking_uri == with_installed_driver(pg_connection)
    hook.check_backend()
    record = _training_set(small_demo, mlops_home / "training_sets")
    trained = SklearnTrainModelOperator(
        task_id="train",
        model_name=MODEL,
        training_set=record,
        estimator="sklearn.linear_model.LogisticRegression",
        params={"max_iter": 300},
        label="completed",
        exclude_columns=["driver_id"],
    ).execute(_context("train"))
    register = MLflowRegisterModelOperator(
        task_id="register", model_name=MODEL, run_id=trained["run_id"], model_uri=trained["model_uri"]
    )
    first, again = register.execute(_context("register")), register.execute(_context("register"))
    assert first["created"] is True and again == {**first, "created": False}

    client = hook.get_conn()
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags[lineage.TAG_TRAINING_SET_SHA256] == record["sha256"]
    # Database stores write artifacts client-side: they must land in the state dir, not ./mlruns.
    assert run.info.artifact_uri.startswith((mlops_home / "mlflow" / "artifacts").resolve().as_uri())
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(version.version) == first["version"] and version.run_id == trained["run_id"]
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1
    with hook.activated():
        model = mlflow.sklearn.load_model(f"models:/{MODEL}@challenger")
    frame = pd.read_parquet(record["path"])
    columns = [c for c in frame.columns if c not in ("driver_id", "event_timestamp", "completed")]
    assert model.predict_proba(frame[columns].astype("float64").head(5)).shape == (5, 2)


def test_tables_live_in_the_postgres_database(pg_connection: str) -> None:
    import sqlalchemy

    MLflowHook().get_conn()
    engine = sqlalchemy.create_engine(MLflowHook().get_conn().tracking_uri)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"experiments", "runs", "registered_models", "model_versions"} <= tables


def test_unreachable_postgres_raises_store_unavailable_naming_the_url() -> None:
    url = f"postgresql://{PG_USER}@{PG_HOST}:5439/mlflow"
    started = time.perf_counter()
    with pytest.raises(StoreUnavailable) as caught:
        MLflowHook(tracking_uri=url).check_backend()
    # libpq connects in C (no audit event to count): bound the time far below the ~100 s of retries
    assert time.perf_counter() - started < 30
    assert url in str(caught.value) and "Start postgresql on 127.0.0.1:5439" in str(caught.value)
    assert isinstance(caught.value, StoreConfigError), "connection refused is configuration: the task must not retry"


def test_missing_database_says_to_create_it(pg_uri: str) -> None:
    url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/mlops_stack_absent_{os.getpid()}"
    with pytest.raises(StoreConfigError, match="does not exist.*Create the database or role first"):
        MLflowHook(tracking_uri=url).check_backend()
