"""Preflight for the production profile: are the configured servers reachable?

The profile is chosen by configuration only (ARCHITECTURE.md §2): an unset variable means the
embedded store (SQLite, duckdb, files under MLOPS_HOME) and needs no check. A set variable that
points at PostgreSQL, an MLflow server or Redis is checked with a short TCP connect, so a typo or
a stopped container is reported in a second with the URL (password masked) and the fix, instead
of as a stack trace from deep inside Airflow, MLflow or Feast.

Sources, in the order the hooks resolve them: the `mlflow_default` / `feast_default` connections
when given as JSON in AIRFLOW_CONN_* variables, then MLFLOW_TRACKING_URI / MLOPS_FEAST_ONLINE_STORE.
Only the standard library is imported here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = ["check_profile", "mask_url", "tcp_error"]

DEFAULT_TIMEOUT = 2.0
DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6379, "http": 80, "https": 443}
COMPOSE = "docker compose -f docker/compose.yaml up -d"


def mask_url(url: str) -> str:
    """`url` with the password replaced by `***`; anything unparsable is returned unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_profile(env: Mapping[str, str] = os.environ, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Every problem of the configured production profile, one message each; [] when all is well.

    Embedded settings (unset variables, sqlite:// and file URIs) are not problems.
    """
    problems: list[str] = []
    problems.extend(_airflow_db_problems(env, timeout))
    problems.extend(_mlflow_problems(env, timeout))
    problems.extend(_online_store_problems(env, timeout))
    problems.extend(_mlops_db_problems(env, timeout))
    return problems


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


def _online_store_problems(env: Mapping[str, str], timeout: float) -> list[str]:
    conn = _json_connection(env, "feast_default")
    extra = conn.get("extra") if conn else None
    url = str(extra.get("online_store") or "") if isinstance(extra, dict) else ""
    source = "the online_store extra of connection feast_default (AIRFLOW_CONN_FEAST_DEFAULT)"
    if not url:
        url, source = env.get("MLOPS_FEAST_ONLINE_STORE", ""), "MLOPS_FEAST_ONLINE_STORE"
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
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "connection refused"
    except socket.gaierror:
        return f"cannot resolve host {host!r}"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)


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

