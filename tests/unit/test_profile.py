"""check_profile: clear, password-free messages for unreachable production-profile servers.

Only loopback sockets are used: a port is "closed" by binding an ephemeral port and closing it,
"open" by listening on one. No test sends traffic anywhere else.
"""

from __future__ import annotations

import json
import re
import socket
import string
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_mlops import profile
from airflow_mlops.profile import check_profile, mask_url

pytestmark = pytest.mark.unit

PROJECT_DIR = Path(__file__).resolve().parents[2]
NO_ASYNC_CHECK = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": "postgresql+asyncpg://set-explicitly"}


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def open_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def test_embedded_profile_has_no_problems() -> None:
    assert check_profile({}) == []
    assert check_profile({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////tmp/airflow.db",
                          "MLFLOW_TRACKING_URI": "sqlite:////tmp/mlflow.db",
                          "MLOPS_FEAST_ONLINE_STORE": ""}) == []


def test_unreachable_airflow_db_names_masked_url_and_fix(closed_port: int) -> None:
    url = f"postgresql+psycopg2://airflow:s3cret@127.0.0.1:{closed_port}/airflow"
    problems = check_profile({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url, **NO_ASYNC_CHECK})
    assert problems == [
        f"Airflow metadata DB at postgresql+psycopg2://airflow:***@127.0.0.1:{closed_port}/airflow is unreachable "
        "(connection refused). Start PostgreSQL (docker compose -f docker/compose.yaml up -d postgres) "
        "or unset AIRFLOW__DATABASE__SQL_ALCHEMY_CONN to use the embedded SQLite DB."
    ]
    assert "s3cret" not in problems[0]


def test_reachable_airflow_db_is_fine(open_port: int) -> None:
    url = f"postgresql://airflow:pw@127.0.0.1:{open_port}/airflow"
    assert check_profile({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url, **NO_ASYNC_CHECK}) == []


def test_missing_asyncpg_is_reported(open_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile, "_installed", lambda module: module != "asyncpg")
    url = f"postgresql+psycopg2://airflow:pw@127.0.0.1:{open_port}/airflow"
    [problem] = check_profile({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url})
    assert "asyncpg driver is not installed" in problem
    assert "airflow:***@" in problem and ":pw@" not in problem


def test_unreachable_mlflow_server(closed_port: int) -> None:
    [problem] = check_profile({"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port}"})
    assert problem == (
        f"MLflow tracking server at http://127.0.0.1:{closed_port} is unreachable (connection refused). "
        "Start it (docker compose -f docker/compose.yaml up -d mlflow) or unset MLFLOW_TRACKING_URI "
        "to use the embedded SQLite store at MLOPS_HOME/mlflow/mlflow.db."
    )


def test_unreachable_mlflow_postgres_backend(closed_port: int) -> None:
    [problem] = check_profile({"MLFLOW_TRACKING_URI": f"postgresql://mlflow:pw@127.0.0.1:{closed_port}/mlflow"})
    assert problem.startswith(f"MLflow tracking store (PostgreSQL) at postgresql://mlflow:***@127.0.0.1:{closed_port}/mlflow")
    assert "up -d postgres" in problem


def test_mlflow_connection_wins_over_env(closed_port: int, open_port: int) -> None:
    conn = {"conn_type": "mlflow", "host": f"http://127.0.0.1:{closed_port}",
            "extra": {"registry_uri": f"http://127.0.0.1:{closed_port}"}}
    env = {"AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(conn), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{open_port}"}
    [problem] = check_profile(env)
    assert f"127.0.0.1:{closed_port}" in problem
    assert "unset connection mlflow_default (AIRFLOW_CONN_MLFLOW_DEFAULT)" in problem


def test_mlflow_connection_with_bare_host_and_port(closed_port: int) -> None:
    conn = {"conn_type": "mlflow", "host": "127.0.0.1", "port": closed_port}
    [problem] = check_profile({"AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(conn)})
    assert problem.startswith(f"MLflow tracking server at http://127.0.0.1:{closed_port} is unreachable")


def test_unreachable_redis_online_store(closed_port: int) -> None:
    [problem] = check_profile({"MLOPS_FEAST_ONLINE_STORE": f"redis://:hunter2@127.0.0.1:{closed_port}/0"})
    assert problem == (
        f"Feast online store (Redis) at redis://:***@127.0.0.1:{closed_port}/0 is unreachable (connection refused). "
        "Start Redis (docker compose -f docker/compose.yaml up -d redis) or unset MLOPS_FEAST_ONLINE_STORE "
        "to use the embedded SQLite online store."
    )


@pytest.mark.parametrize(("variable", "what", "embedded"), [
    ("MLOPS_PREDICTION_LOG_URL", "Prediction log (PostgreSQL)", "parquet under MLOPS_HOME/predictions"),
    ("MLOPS_MONITORING_DB", "Monitoring history (PostgreSQL)", "SQLite at MLOPS_HOME/monitoring/monitoring.db"),
])
def test_unreachable_prediction_log_and_monitoring_db(closed_port: int, variable: str, what: str,
                                                      embedded: str) -> None:
    [problem] = check_profile({variable: f"postgresql://mlops:s3cret@127.0.0.1:{closed_port}/mlops"})
    assert problem == (
        f"{what} at postgresql://mlops:***@127.0.0.1:{closed_port}/mlops is unreachable (connection refused). "
        f"Start PostgreSQL (docker compose -f docker/compose.yaml up -d postgres) or unset {variable} "
        f"to use the embedded {embedded}."
    )
    assert check_profile({variable: "sqlite:///x.db"}) == [], "an embedded URL needs no server"


@pytest.mark.parametrize("extra_as_string", [False, True])
def test_feast_connection_extra(closed_port: int, extra_as_string: bool) -> None:
    extra: object = {"repo_path": "include/feature_repo", "online_store": f"redis://127.0.0.1:{closed_port}/0"}
    conn = {"conn_type": "feast", "extra": json.dumps(extra) if extra_as_string else extra}
    [problem] = check_profile({"AIRFLOW_CONN_FEAST_DEFAULT": json.dumps(conn)})
    assert problem.startswith(f"Feast online store (Redis) at redis://127.0.0.1:{closed_port}/0 is unreachable")
    assert "online_store extra of connection feast_default" in problem


def test_timeout_is_reported_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_answer(address: tuple[str, int], timeout: float) -> socket.socket:
        raise TimeoutError("timed out")

    monkeypatch.setattr(profile.socket, "create_connection", no_answer)
    [problem] = check_profile({"MLOPS_FEAST_ONLINE_STORE": "redis://cache.internal:6379/0"}, timeout=0.5)
    assert "is unreachable (no answer within 0.5 s)" in problem


def test_invalid_port_and_socket_urls() -> None:
    [problem] = check_profile({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://a:b@127.0.0.1:99999/x",
                               **NO_ASYNC_CHECK})
    assert problem.startswith("Airflow metadata DB URL postgresql://a:***@127.0.0.1:99999/x is not valid")
    # no host: a Unix-socket URL cannot be probed over TCP and is left to the driver
    assert check_profile({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql:///airflow", **NO_ASYNC_CHECK}) == []


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg2://u:p@h:5432/db", "postgresql+psycopg2://u:***@h:5432/db"),
        ("redis://:p@h:6379/0", "redis://:***@h:6379/0"),
        ("http://mlflow:5000", "http://mlflow:5000"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("not a url", "not a url"),
        ("postgresql://u:p@[bad/db", "postgresql://u:***@[bad/db"),  # unparsable: masked by pattern
        ("http://ops:p%40ss@mlflow:5000", "http://ops:***@mlflow:5000"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def _dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines with ${VAR} interpolation and '...' quoting, as compose and `set -a; .` read them."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if not match:
            continue
        key, raw = match.groups()
        if raw.startswith("'") and raw.endswith("'"):
            values[key] = raw[1:-1]
        else:
            values[key] = string.Template(raw.strip('"')).substitute(values)
    return values


def test_env_example_configures_every_checked_store() -> None:
    env = _dotenv(PROJECT_DIR / "docker" / ".env.example")
    assert profile._scheme(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]) == "postgresql"
    assert profile._scheme(env["MLFLOW_TRACKING_URI"]) == "http"
    assert profile._scheme(env["MLOPS_FEAST_ONLINE_STORE"]) == "redis"
    mlflow_conn = profile._json_connection(env, "mlflow_default")
    feast_conn = profile._json_connection(env, "feast_default")
    assert mlflow_conn is not None and mlflow_conn["host"] == env["MLFLOW_TRACKING_URI"]
    assert feast_conn is not None and isinstance(feast_conn["extra"], dict)
    assert feast_conn["extra"]["online_store"] == env["MLOPS_FEAST_ONLINE_STORE"]
    assert f":{env['AIRFLOW_DB_PASSWORD']}@" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    for name in ("MLOPS_PREDICTION_LOG_URL", "MLOPS_MONITORING_DB"):
        assert profile._scheme(env[name]) == "postgresql" and env[name].endswith(f"/{env['MLOPS_DB_NAME']}")
        assert f"{env['MLOPS_DB_USER']}:{env['MLOPS_DB_PASSWORD']}@" in env[name]
    compose = (PROJECT_DIR / "docker" / "compose.yaml").read_text(encoding="utf-8")
    assert all(f"MLOPS_DB_{part}:" in compose for part in ("NAME", "USER", "PASSWORD")), "compose passes the mlops DB"
    for name in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED",
                 "FEAST_USAGE", "GX_ANALYTICS_ENABLED"):
        assert name in env, f"docker/.env.example must switch telemetry off: {name} missing"


def test_mlflow_server_image_matches_the_lock() -> None:
    """docker/mlflow.Dockerfile and docker/compose.yaml pin the MLflow the project is tested with."""
    lock = (PROJECT_DIR / "requirements" / "lock.txt").read_text(encoding="utf-8")
    locked = re.search(r"^mlflow==(\S+)$", lock, re.MULTILINE)
    assert locked, "requirements/lock.txt has no mlflow pin"
    dockerfile = (PROJECT_DIR / "docker" / "mlflow.Dockerfile").read_text(encoding="utf-8")
    compose = (PROJECT_DIR / "docker" / "compose.yaml").read_text(encoding="utf-8")
    assert f"ARG MLFLOW_VERSION={locked[1]}\n" in dockerfile
    assert f'MLFLOW_VERSION: "{locked[1]}"' in compose
    assert f"image: airflow-mlops/mlflow-server:{locked[1]}" in compose


# ------------------------------------------------------------------ fail fast: configuration or transient?
def test_tcp_probe_classifies_refused_and_unknown_hosts_as_configuration(closed_port: int, open_port: int) -> None:
    assert profile.tcp_probe("127.0.0.1", open_port, 1.0) is None
    assert profile.tcp_probe("127.0.0.1", closed_port, 1.0) == profile.Unreachable("connection refused", True)
    unknown = profile.tcp_probe("no-such-host.invalid", 5432, 1.0)  # .invalid never resolves (RFC 2606)
    assert unknown == profile.Unreachable("cannot resolve host 'no-such-host.invalid'", True)
    assert profile.tcp_probe("127.0.0.1", 70000, 1.0) == profile.Unreachable("port 70000 is out of range", True)


@pytest.mark.parametrize(("error", "config_error"), [
    (TimeoutError("timed out"), False),
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), False),
    (OSError(101, "Network is unreachable"), False),
    (ConnectionResetError(104, "Connection reset by peer"), False),
])
def test_tcp_probe_transient_errors(monkeypatch: pytest.MonkeyPatch, error: OSError, config_error: bool) -> None:
    def fail(address: tuple[str, int], timeout: float) -> socket.socket:
        raise error

    monkeypatch.setattr(profile.socket, "create_connection", fail)
    found = profile.tcp_probe("mlflow", 5000, 0.5)
    assert found is not None and found.config_error is config_error


def test_url_problem() -> None:
    assert profile.url_problem("postgresql://u:p@h:5432/db", 5432) is None
    assert profile.url_problem("postgresql:///mlflow", 5432) is None  # Unix socket
    bad_port = profile.url_problem("postgresql://u:p@h:99999/db", 5432)
    assert bad_port is not None and bad_port.config_error and "not valid" in bad_port.reason
    no_scheme = profile.url_problem("mlflow.internal", 80)
    assert no_scheme is not None and no_scheme.reason == "the URL has no scheme://"


def test_http_status_classification() -> None:
    assert [profile.classify_http_status(code) for code in (200, 302, 401, 403, 404, 429, 500, 503)] == [
        None, None, True, True, True, False, False, False]


@pytest.mark.parametrize(("message", "config_error"), [
    ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication failed for user "mlflow"',
     True),
    ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "mlfow" does not exist', True),
    ('FATAL:  role "mlflw" does not exist', True),
    ('FATAL:  no pg_hba.conf entry for host "10.0.0.5", user "mlflow", database "mlflow"', True),
    ('could not translate host name "postgress" to address: Name or service not known', True),
    ("FATAL:  the database system is starting up", False),
    ("FATAL:  sorry, too many clients already", False),
    ("connection to server at \"db\" (10.0.0.5), port 5432 failed: timeout expired", False),
    ("something nobody has seen before", False),  # unknown: retried, the safe default
])
def test_postgres_error_classification(message: str, config_error: bool) -> None:
    assert profile.classify_postgres_error(message) is config_error


@pytest.mark.parametrize(("message", "config_error"), [
    ("WRONGPASS invalid username-password pair or user is disabled.", True),
    ("NOAUTH Authentication required.", True),
    ("DB index is out of range", True),
    ("Error 111 connecting to 127.0.0.1:6390. Connection refused.", True),
    ("Error -3 connecting to redis:6379. Temporary failure in name resolution.", False),
    ("Timeout connecting to server", False),
    ("LOADING Redis is loading the dataset in memory", False),
])
def test_redis_error_classification(message: str, config_error: bool) -> None:
    assert profile.classify_redis_error(message) is config_error


def test_celery_needs_a_broker() -> None:
    [problem] = check_profile({"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"})
    assert problem.startswith("AIRFLOW__CORE__EXECUTOR is the CeleryExecutor but AIRFLOW__CELERY__BROKER_URL is unset")
    assert "redis://127.0.0.1:6379/1" in problem


def test_unreachable_celery_broker_and_result_backend(closed_port: int) -> None:
    problems = check_profile({
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:pw@127.0.0.1:{closed_port}/1",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://airflow:pw@127.0.0.1:{closed_port}/airflow",
    })
    assert [p.split(" is unreachable")[0] for p in problems] == [
        f"Celery broker (Redis) at redis://:***@127.0.0.1:{closed_port}/1",
        f"Celery result backend (PostgreSQL) at postgresql://airflow:***@127.0.0.1:{closed_port}/airflow",
    ]


@pytest.mark.parametrize(("broker", "online", "shared"), [
    ("redis://127.0.0.1:{port}/0", "redis://127.0.0.1:{port}", True),  # no db in the URL is db 0
    ("redis://127.0.0.1:{port}/1", "redis://127.0.0.1:{port}/0", False),
    ("redis://127.0.0.1:{port}/3", "redis://localhost:{port}/3", False),  # another host name: not judged equal
])
def test_the_broker_must_not_share_the_online_store_database(open_port: int, broker: str, online: str,
                                                             shared: bool) -> None:
    problems = check_profile({"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                              "AIRFLOW__CELERY__BROKER_URL": broker.format(port=open_port),
                              "MLOPS_FEAST_ONLINE_STORE": online.format(port=open_port)})
    assert bool(problems) is shared, problems
    if shared:
        assert "is the Feast online store's Redis database" in problems[0] and "(e.g. /1)" in problems[0]


def test_other_executors_need_no_broker() -> None:
    assert check_profile({"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}) == []
