"""Preflight for the production profile: are the configured servers reachable?

The profile is chosen by configuration only (ARCHITECTURE.md §2): an unset variable means the
embedded store (SQLite, duckdb, files under MLOPS_HOME) and needs no check. A set variable that
points at PostgreSQL, an MLflow server or Redis is checked with a short TCP connect, so a typo or
a stopped container is reported in a second with the URL (password masked) and the fix, instead
of as a stack trace from deep inside Airflow, MLflow or Feast.

Sources, in the order the hooks resolve them: the `mlflow_default` / `feast_default` connections
when given as JSON in AIRFLOW_CONN_* variables, then MLFLOW_TRACKING_URI / MLOPS_FEAST_ONLINE_STORE.
Only the standard library is imported here.

Configuration error or passing trouble? The hooks run the same probes when they make a client
(MLflowHook.get_conn, FeastHook's Redis check) and raise `StoreConfigError` (no task retry) or
`StoreUnavailable` (normal retries) by `Unreachable.config_error`. The rule:

- configuration (retrying the same URL cannot help, so the task fails at once): connection refused
  (nothing listens on that host and port: a wrong port or a server that was never started), a host
  name that does not exist, a URL that does not parse (bad port, unknown scheme), credentials
  refused (HTTP 401/403; PostgreSQL password, role, database or pg_hba errors; Redis WRONGPASS/
  NOAUTH), and a server that answers but is not the store asked for (HTTP 404 on the MLflow API,
  a Redis database index out of range).
- transient (the task's normal retries apply): no answer within the timeout, a temporary DNS
  failure (EAI_AGAIN), network unreachable or reset, HTTP 429/5xx, PostgreSQL starting up or out
  of connection slots, and anything not recognised above.

The trade-off: a server that is restarting at the very moment a task starts refuses connections
too, and that task fails without retry; clear it once the server is back.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "Unreachable", "check_profile", "classify_http_status", "classify_postgres_error", "classify_redis_error",
    "mask_url", "tcp_error", "tcp_probe", "url_problem",
]

DEFAULT_TIMEOUT = 2.0
DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6379, "http": 80, "https": 443}
COMPOSE = "docker compose -f docker/compose.yaml up -d"


_USERINFO_PASSWORD = re.compile(r"(://[^/@:]*:)[^/]*@")


def mask_url(url: str) -> str:
    """`url` with the password replaced by `***`; an unparsable URL gets `user:***@` by pattern."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return _USERINFO_PASSWORD.sub(r"\1***@", url, count=1)
    if password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True)
class Unreachable:
    """Why a store cannot be used, in words, and whether that is configuration (see the module doc)."""

    reason: str
    config_error: bool


def url_problem(url: str, default_port: int = 0) -> Unreachable | None:
    """A URL that cannot be probed at all (does not parse, port out of range); None when it can."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return Unreachable(f"the URL is not valid: {exc}", config_error=True)
    if "://" not in url:
        return Unreachable("the URL has no scheme://", config_error=True)
    if not parts.hostname and not parts.path:
        return Unreachable("the URL names no host", config_error=True)
    if port is None and parts.hostname and not default_port:
        return Unreachable("the URL has no port and its scheme has no default one", config_error=True)
    return None


def check_profile(env: Mapping[str, str] = os.environ, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Every problem of the configured production profile, one message each; [] when all is well.

    Embedded settings (unset variables, sqlite:// and file URIs) are not problems.
    """
    problems: list[str] = []
    problems.extend(_airflow_db_problems(env, timeout))
    problems.extend(_mlflow_problems(env, timeout))
    problems.extend(_online_store_problems(env, timeout))
    problems.extend(_mlops_db_problems(env, timeout))
    problems.extend(_celery_problems(env, timeout))
    return problems


def _celery_problems(env: Mapping[str, str], timeout: float) -> list[str]:
    """With the CeleryExecutor: a broker is set, reachable, and not the Feast online store's Redis database."""
    if "CeleryExecutor" not in env.get("AIRFLOW__CORE__EXECUTOR", ""):
        return []
    broker = env.get("AIRFLOW__CELERY__BROKER_URL", "")
    if not broker:
        return ["AIRFLOW__CORE__EXECUTOR is the CeleryExecutor but AIRFLOW__CELERY__BROKER_URL is unset: set it to "
                "a Redis database of its own, e.g. redis://127.0.0.1:6379/1 (the Feast online store keeps /0)."]
    problems: list[str] = []
    fix = f"Start Redis ({COMPOSE} redis) or point AIRFLOW__CELERY__BROKER_URL at a reachable broker."
    if _scheme(broker) in ("redis", "rediss"):
        problems.extend(_unreachable("Celery broker (Redis)", broker, timeout, fix))
        online = _online_store_url(env)
        if online and _redis_database(online) == _redis_database(broker):
            problems.append(
                f"Celery broker {mask_url(broker)} is the Feast online store's Redis database ({mask_url(online)}): "
                "give the broker a database of its own (e.g. /1), so queue keys and feature rows never mix.")
    backend = env.get("AIRFLOW__CELERY__RESULT_BACKEND", "")
    if _scheme(backend.removeprefix("db+")) in ("postgresql", "postgres"):
        fix = f"Start PostgreSQL ({COMPOSE} postgres) or fix AIRFLOW__CELERY__RESULT_BACKEND."
        problems.extend(_unreachable("Celery result backend (PostgreSQL)", backend.removeprefix("db+"), timeout, fix))
    return problems


def _redis_database(url: str) -> tuple[str, int, str]:
    """(host, port, db) of a redis:// URL; db "0" when the URL names none."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS["redis"]
    except ValueError:
        return (url, 0, "")
    return ((parts.hostname or "").lower(), port, parts.path.strip("/") or "0")


# The serving app's prediction log and the monitoring history: their own PostgreSQL tables when set.
MLOPS_DB_SETTINGS = (
    ("MLOPS_PREDICTION_LOG_URL", "Prediction log (PostgreSQL)", "parquet under MLOPS_HOME/predictions"),
    ("MLOPS_MONITORING_DB", "Monitoring history (PostgreSQL)", "SQLite at MLOPS_HOME/monitoring/monitoring.db"),
)


def _mlops_db_problems(env: Mapping[str, str], timeout: float) -> list[str]:
    problems: list[str] = []
    for variable, what, embedded in MLOPS_DB_SETTINGS:
        url = env.get(variable, "")
        if _scheme(url) in ("postgresql", "postgres"):
            fix = f"Start PostgreSQL ({COMPOSE} postgres) or unset {variable} to use the embedded {embedded}."
            problems.extend(_unreachable(what, url, timeout, fix))
    return problems


def _airflow_db_problems(env: Mapping[str, str], timeout: float) -> list[str]:
    url = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if _scheme(url) not in ("postgresql", "postgres"):
        return []
    what = "Airflow metadata DB"
    fix = (
        f"Start PostgreSQL ({COMPOSE} postgres) or unset AIRFLOW__DATABASE__SQL_ALCHEMY_CONN "
        "to use the embedded SQLite DB."
    )
    problems = _unreachable(what, url, timeout, fix)
    if not env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC") and not _installed("asyncpg"):
        problems.append(
            f"{what} at {mask_url(url)} is PostgreSQL, but the asyncpg driver is not installed: Airflow 3 "
            "opens a second, async engine on postgresql+asyncpg://. Install asyncpg "
            "(or apache-airflow-providers-postgres), or set AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC."
        )
    return problems


def _mlflow_problems(env: Mapping[str, str], timeout: float) -> list[str]:
    conn = _json_connection(env, "mlflow_default")
    url = _conn_tracking_uri(conn) if conn else ""
    source = "connection mlflow_default (AIRFLOW_CONN_MLFLOW_DEFAULT)"
    if not url:
        url, source = env.get("MLFLOW_TRACKING_URI", ""), "MLFLOW_TRACKING_URI"
    scheme = _scheme(url)
    if scheme in ("postgresql", "postgres"):
        what, service = "MLflow tracking store (PostgreSQL)", "postgres"
    elif scheme in ("http", "https"):
        what, service = "MLflow tracking server", "mlflow"
    else:
        return []
    fix = (
        f"Start it ({COMPOSE} {service}) or unset {source} to use the embedded SQLite store "
        "at MLOPS_HOME/mlflow/mlflow.db."
    )
    return _unreachable(what, url, timeout, fix)


def _conn_tracking_uri(conn: dict[str, object]) -> str:
    """As MLflowHook reads it: extra tracking_uri, else host as a full URI, else http://host[:port]."""
    extra = conn.get("extra")
    if isinstance(extra, dict) and extra.get("tracking_uri"):
        return str(extra["tracking_uri"])
    host = str(conn.get("host") or "").strip()
    if not host or "://" in host:
        return host
    scheme = extra.get("scheme", "http") if isinstance(extra, dict) else "http"
    return f"{scheme}://{host}:{conn['port']}" if conn.get("port") else f"{scheme}://{host}"


def _online_store_source(env: Mapping[str, str]) -> tuple[str, str]:
    """The Feast online store URL as FeastHook resolves it, and where it came from."""
    conn = _json_connection(env, "feast_default")
    extra = conn.get("extra") if conn else None
    url = str(extra.get("online_store") or "") if isinstance(extra, dict) else ""
    if url:
        return url, "the online_store extra of connection feast_default (AIRFLOW_CONN_FEAST_DEFAULT)"
    return env.get("MLOPS_FEAST_ONLINE_STORE", ""), "MLOPS_FEAST_ONLINE_STORE"


def _online_store_url(env: Mapping[str, str]) -> str:
    url = _online_store_source(env)[0]
    return url if _scheme(url) in ("redis", "rediss") else ""


def _online_store_problems(env: Mapping[str, str], timeout: float) -> list[str]:
    url, source = _online_store_source(env)
    if _scheme(url) not in ("redis", "rediss"):
        return []
    fix = f"Start Redis ({COMPOSE} redis) or unset {source} to use the embedded SQLite online store."
    return _unreachable("Feast online store (Redis)", url, timeout, fix)


def _unreachable(what: str, url: str, timeout: float, fix: str) -> list[str]:
    """[] when a TCP connection to the URL's host and port opens within `timeout`, else one message."""
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or DEFAULT_PORTS.get(_scheme(url), 0)
    except ValueError as exc:
        return [f"{what} URL {shown} is not valid ({exc}). {fix}"]
    if not host:
        return []  # a Unix-socket URL (e.g. postgresql:///airflow): nothing to reach over TCP
    reason = tcp_error(host, port, timeout)
    return [] if reason is None else [f"{what} at {shown} is unreachable ({reason}). {fix}"]


def tcp_error(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connect to host:port fails within `timeout`, in words; None when it connects."""
    found = tcp_probe(host, port, timeout)
    return None if found is None else found.reason


# getaddrinfo errors that mean "ask again later", not "no such name"
_DNS_TRANSIENT = {getattr(socket, name) for name in ("EAI_AGAIN", "EAI_FAIL", "EAI_SYSTEM") if hasattr(socket, name)}


def tcp_probe(host: str, port: int, timeout: float) -> Unreachable | None:
    """One TCP connect to host:port (no retry); None when it connects, else why and whether it is config."""
    if not 0 < port < 65536:  # getaddrinfo would wrap it round to some other port
        return Unreachable(f"port {port} is out of range", config_error=True)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return _connect_failure(exc, host, timeout)


def _connect_failure(exc: OSError, host: str, timeout: float) -> Unreachable:
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable("connection refused", config_error=True)
    if isinstance(exc, socket.gaierror):
        if exc.errno in _DNS_TRANSIENT:
            return Unreachable(f"cannot resolve host {host!r} right now ({exc.strerror})", config_error=False)
        return Unreachable(f"cannot resolve host {host!r}", config_error=True)
    if isinstance(exc, TimeoutError):
        return Unreachable(f"no answer within {timeout:g} s", config_error=False)
    return Unreachable(exc.strerror or str(exc), config_error=False)  # network unreachable, reset, ...: may pass


def classify_http_status(status: int) -> bool | None:
    """True: a configuration error (credentials refused, not this service); False: transient; None: fine."""
    if status in (401, 403, 404, 405):
        return True
    if status == 429 or status >= 500:
        return False
    return None


_POSTGRES_CONFIG = (
    "password authentication failed", "authentication failed", "no password supplied",
    "does not exist", "no pg_hba.conf entry", "connection refused", "could not translate host name",
    "name or service not known", "invalid dsn", "invalid connection option", "invalid port", "invalid integer value",
    "server does not support ssl", "unsupported frontend protocol",
)
_POSTGRES_TRANSIENT = (
    "starting up", "shutting down", "too many connections", "too many clients", "remaining connection slots",
    "timeout expired", "temporary failure in name resolution", "server closed the connection", "in recovery mode",
)


def classify_postgres_error(message: str) -> bool:
    """Whether a PostgreSQL connect error (libpq's text) is configuration (True) or may pass (False)."""
    text = message.lower()
    if any(marker in text for marker in _POSTGRES_TRANSIENT):
        return False
    return any(marker in text for marker in _POSTGRES_CONFIG)


_REDIS_CONFIG = ("wrongpass", "noauth", "invalid username-password", "invalid password", "authentication",
                 "db index is out of range", "invalid db index", "connection refused", "name or service not known")


def classify_redis_error(message: str) -> bool:
    """Whether a Redis connect/ping error is configuration (True) or may pass (False)."""
    text = message.lower()
    return "temporary failure" not in text and any(marker in text for marker in _REDIS_CONFIG)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _scheme(url: str) -> str:
    """'postgresql' for 'postgresql+psycopg2://...'; '' for an empty or scheme-less value."""
    if "://" not in url:
        return ""
    return url.split("://", 1)[0].split("+", 1)[0].lower()


def _json_connection(env: Mapping[str, str], conn_id: str) -> dict[str, object] | None:
    """A connection given as JSON in AIRFLOW_CONN_<ID>; None when unset or in URI form."""
    raw = env.get(f"AIRFLOW_CONN_{conn_id.upper()}", "").strip()
    if not raw.startswith("{"):
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    extra = data.get("extra")
    if isinstance(extra, str):
        try:
            data["extra"] = json.loads(extra)
        except json.JSONDecodeError:
            data["extra"] = None
    return data

