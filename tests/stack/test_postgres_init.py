"""docker/postgres-init/10-create-databases.sh on the real PostgreSQL at 127.0.0.1:5432.

The postgres image runs this script on the first start of an empty volume; no Docker engine runs
here, so the test runs it the same way (bash + psql, the variables compose passes) with unique
role and database names, twice (it must be idempotent), checks that each application role owns
its database, then writes the serving prediction log and a monitoring record into the `mlops`
database through the URLs docker/.env.example gives, as that role. Everything is dropped after.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.mlflow_server import PG_HOST, PG_PORT, PG_USER, _admin_connection

pytestmark = pytest.mark.stack

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "postgres-init" / "10-create-databases.sh"
APPS = ("AIRFLOW", "MLFLOW", "MLOPS")


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    tag = f"{os.getpid()}"
    env = {}
    for app in APPS:
        env[f"{app}_DB_NAME"] = f"init_{app.lower()}_{tag}"
        env[f"{app}_DB_USER"] = f"init_{app.lower()}_{tag}"
        env[f"{app}_DB_PASSWORD"] = f"pw-{app.lower()}"
    yield env
    admin = _admin_connection()
    try:
        with admin.cursor() as cur:
            for app in APPS:
                cur.execute(f'DROP DATABASE IF EXISTS "{env[f"{app}_DB_NAME"]}" WITH (FORCE)')
                cur.execute(f'DROP ROLE IF EXISTS "{env[f"{app}_DB_USER"]}"')
    finally:
        admin.close()


def run_init(names: dict[str, str]) -> str:
    assert shutil.which("psql"), "the stack tests need the psql client (Debian postgresql-client)"
    env = {**os.environ, **names, "POSTGRES_USER": PG_USER, "POSTGRES_DB": "postgres",
           "PGHOST": PG_HOST, "PGPORT": str(PG_PORT)}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{SCRIPT.name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def owners(names: dict[str, str]) -> dict[str, str]:
    admin = _admin_connection()
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)",
                        ([names[f"{app}_DB_NAME"] for app in APPS],))
            return dict(cur.fetchall())
    finally:
        admin.close()


def test_init_script_creates_one_owned_database_per_application_and_is_idempotent(names: dict[str, str]) -> None:
    first = run_init(names)
    assert all(f"database {names[f'{app}_DB_NAME']} owned by" in first for app in APPS)
    run_init(names)  # a second start against the same server changes nothing and does not fail
    assert owners(names) == {names[f"{app}_DB_NAME"]: names[f"{app}_DB_USER"] for app in APPS}


def test_the_mlops_database_takes_the_prediction_log_and_monitoring_history(names: dict[str, str],
                                                                             tmp_path: Path) -> None:
    from airflow_mlops.core import monitoring_history
    from airflow_mlops.serving.prediction_log import TABLE, PredictionLog

    run_init(names)
    user, password, db = names["MLOPS_DB_USER"], names["MLOPS_DB_PASSWORD"], names["MLOPS_DB_NAME"]
    # The two URL shapes of docker/.env.example, as the `mlops` role (not the superuser).
    log_url = f"postgresql://{user}:{password}@{PG_HOST}:{PG_PORT}/{db}"
    history_url = f"postgresql+psycopg2://{user}:{password}@{PG_HOST}:{PG_PORT}/{db}"
    with PredictionLog(db_url=log_url, flush_rows=1) as log:
        log.append(_record())
        log.flush()
    assert log.written == 1 and log.dropped == 0
    monitoring_history.append(monitoring_history.CheckRecord(
        model="rides", kind="drift", status="ok", value=0.1, threshold=0.3, rows=100, run_id="r1"), url=history_url)
    assert [r["run_id"] for r in monitoring_history.history("rides", "drift", url=history_url)] == ["r1"]
    assert _table_owner(db, TABLE) == user


def _record() -> dict[str, Any]:
    return {"request_id": "r0", "time": "2026-12-06T12:00:00+00:00", "model": "rides", "model_version": "1",
            "route": "primary", "entity_key": {"driver_id": 1}, "features": {"x": 1.0}, "prediction": 0.5,
            "shadow_version": None, "shadow_prediction": None, "protocol": "predict"}


def _table_owner(db: str, table: str) -> str:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=db, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tableowner FROM pg_tables WHERE tablename = %s", (table,))
            return str(cur.fetchone()[0])
    finally:
        conn.close()
