"""Production profile: Airflow's metadata DB on the real PostgreSQL at 127.0.0.1:5432.

Each run creates its own database (unique name), migrates it with `airflow db migrate` in a
subprocess exactly as an operator would (AIRFLOW_HOME in tmp, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
pointing at it), checks the result and drops the database again.

If PostgreSQL is not reachable the tests ERROR with the reason; they never skip. Server and role
can be changed with MLOPS_STACK_PG_HOST / _PORT / _USER / _PASSWORD (default: postgres@127.0.0.1:5432,
trust auth, as on CI). Redis is expected at MLOPS_STACK_REDIS_URL (default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.profile import check_profile

pytestmark = pytest.mark.stack

PG_HOST = os.environ.get("MLOPS_STACK_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("MLOPS_STACK_PG_PORT", "5432"))
PG_USER = os.environ.get("MLOPS_STACK_PG_USER", "postgres")
PG_PASSWORD = os.environ.get("MLOPS_STACK_PG_PASSWORD", "")
REDIS_URL = os.environ.get("MLOPS_STACK_REDIS_URL", "redis://127.0.0.1:6379/0")
UNREACHABLE_PORT = 5439
MIGRATE_TIMEOUT_S = 600


def _pg_url(database: str, driver: str = "+psycopg2") -> str:
    auth = f"{PG_USER}:{PG_PASSWORD}" if PG_PASSWORD else PG_USER
    return f"postgresql{driver}://{auth}@{PG_HOST}:{PG_PORT}/{database}"


def _connect(database: str) -> Any:  # a psycopg2 connection (no type stubs installed)
    import psycopg2

    return psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None,
                            dbname=database, connect_timeout=5)


@pytest.fixture(scope="session")
def postgres_server() -> None:
    """Errors (never skips) when the stack's PostgreSQL cannot be reached."""
    import psycopg2

    try:
        conn = _connect("postgres")
    except psycopg2.OperationalError as exc:
        raise RuntimeError(
            f"stack tests need PostgreSQL at {PG_HOST}:{PG_PORT} as user {PG_USER!r} and cannot reach it: "
            f"{' '.join(str(exc).split())}. Start it (docker compose -f docker/compose.yaml up -d postgres) or point "
            "MLOPS_STACK_PG_HOST/_PORT/_USER/_PASSWORD at a server where that role may CREATE DATABASE."
        ) from exc
    conn.close()


@pytest.fixture
def fresh_database(postgres_server: None) -> Iterator[str]:
    """A new, empty database for this test; dropped (even with open connections) afterwards."""
    name = f"mlops_stack_{uuid.uuid4().hex[:12]}"
    admin = _connect("postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _airflow_env(tmp_path: Path, sql_alchemy_conn: str) -> dict[str, str]:
    """The process environment of an Airflow using the production metadata DB and nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    dags = tmp_path / "dags"
    dags.mkdir(exist_ok=True)
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sql_alchemy_conn,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__USAGE_DATA_COLLECTION__ENABLED="False",
        MLOPS_HOME=str(tmp_path / "mlops_home"),
        DO_NOT_TRACK="true",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    return env


def _airflow(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("airflow")
    airflow = str(exe) if exe.exists() else shutil.which("airflow")
    assert airflow, f"no `airflow` executable next to {sys.executable} or on PATH"
    return subprocess.run([airflow, *args], env=env, capture_output=True, text=True,
                          timeout=MIGRATE_TIMEOUT_S, check=False)


def _tail(result: subprocess.CompletedProcess[str], lines: int = 25) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


def _tables(database: str, names: tuple[str, ...]) -> dict[str, bool]:
    conn = _connect(database)
    try:
        with conn.cursor() as cur:
            found = {}
            for table in names:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",))
                found[table] = bool(cur.fetchone()[0])
            return found
    finally:
        conn.close()


def _alembic_revisions(database: str) -> list[str]:
    conn = _connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version_num FROM alembic_version")
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def test_airflow_db_migrate_on_postgres(fresh_database: str, tmp_path: Path) -> None:
    env = _airflow_env(tmp_path, _pg_url(fresh_database))
    problems = check_profile(env)
    assert problems == [], "production profile is not usable:\n" + "\n".join(problems)

    migrate = _airflow(["db", "migrate"], env)
    assert migrate.returncode == 0, f"`airflow db migrate` failed ({migrate.returncode}):\n{_tail(migrate)}"

    tables = _tables(fresh_database, ("alembic_version", "dag", "dag_run", "task_instance", "connection"))
    assert all(tables.values()), f"tables missing after migrate: {[t for t, ok in tables.items() if not ok]}"
    assert len(_alembic_revisions(fresh_database)) == 1, "alembic_version must hold exactly one head revision"

    check = _airflow(["db", "check"], env)
    assert check.returncode == 0, f"`airflow db check` failed ({check.returncode}):\n{_tail(check)}"


def test_unreachable_postgres_url_is_named_with_the_fix() -> None:
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex(("127.0.0.1", UNREACHABLE_PORT)) == 0:
            pytest.fail(f"port {UNREACHABLE_PORT} must be closed for this test, but something listens on it")
    url = f"postgresql+psycopg2://airflow:s3cret@127.0.0.1:{UNREACHABLE_PORT}/airflow"
    problems = check_profile({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
                              "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": url.replace("+psycopg2", "+asyncpg")})
    assert problems == [
        f"Airflow metadata DB at postgresql+psycopg2://airflow:***@127.0.0.1:{UNREACHABLE_PORT}/airflow is "
        "unreachable (connection refused). Start PostgreSQL (docker compose -f docker/compose.yaml up -d postgres) "
        "or unset AIRFLOW__DATABASE__SQL_ALCHEMY_CONN to use the embedded SQLite DB."
    ]


def test_check_profile_passes_against_the_running_servers(postgres_server: None) -> None:
    env = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _pg_url("postgres"),
        "MLFLOW_TRACKING_URI": _pg_url("postgres", driver=""),
        "MLOPS_FEAST_ONLINE_STORE": REDIS_URL,
    }
    problems = check_profile(env)
    assert problems == [], "\n".join(problems)
