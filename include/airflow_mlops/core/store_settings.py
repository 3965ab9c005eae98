"""Where the stores are: MLflow tracking/registry and the Feast repo/online store, resolved in one place.

Order, per setting: explicit argument > Airflow connection > environment > embedded default. No Airflow
import: the caller hands over the connection it has.

- Under Airflow (a task, the triggerer, the UI plugin), the hooks read the connection through Airflow
  (`BaseHook.get_connection`: the task's Execution API, the metadata DB, a secrets backend) and pass
  it in as a `ConnectionFields`.
- Outside Airflow (the serving app, the serving image without Airflow), `env_connection()` reads the
  `AIRFLOW_CONN_<CONN_ID>` environment variable in either of Airflow's documented formats, a URI
  (`mlflow://...`, `feast://?repo_path=...`) or JSON (`{"conn_type": "mlflow", "host": ...}`), parsed
  exactly as Airflow's environment-variables secrets backend parses it (tests/integration/
  test_store_settings.py compares both). A secrets backend configured in airflow.cfg (Vault, ...) is not
  consulted there: give the serving process the variables, or the plain MLFLOW_*/MLOPS_* settings.

Environment: MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI, MLOPS_FEATURE_REPO, MLOPS_FEAST_ONLINE_STORE
(`config.py`). Embedded defaults: SQLite MLflow in MLOPS_HOME/mlflow, SQLite online store in MLOPS_HOME/feast.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from airflow_mlops import config
from airflow_mlops.core.feast_store import DEFAULT_PROJECT, FeastSettings
from airflow_mlops.core.mlflow_store import DB_SCHEMES, MLflowSettings, scheme_of

log = logging.getLogger(__name__)

MLFLOW_CONN_ID = "mlflow_default"
FEAST_CONN_ID = "feast_default"
CONN_ENV_PREFIX = "AIRFLOW_CONN_"


@dataclass(frozen=True)
class ConnectionFields:
    """The fields of an Airflow connection that the store settings read (no Airflow object needed)."""

    conn_id: str
    conn_type: str | None = None
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = None
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, conn: Any) -> ConnectionFields:
        """From an Airflow `Connection` (duck-typed: Airflow is not imported here)."""
        return cls(conn_id=str(conn.conn_id), conn_type=conn.conn_type, host=conn.host, port=conn.port,
                   login=conn.login, password=conn.password, schema=conn.schema,
                   extra=dict(conn.extra_dejson or {}))


def _extra_dict(extra: Any, conn_id: str) -> dict[str, Any]:
    """As Airflow's `extra_dejson`: a JSON object, {} when unset or not valid JSON (logged)."""
    if not extra:
        return {}
    if isinstance(extra, dict):
        return dict(extra)
    try:
        value = json.loads(extra)
    except json.JSONDecodeError:
        log.error("connection %s: its extra is not valid JSON; ignoring it", conn_id)
        return {}
    return value if isinstance(value, dict) else {}


def _normalize_conn_type(conn_type: str) -> str:
    return "postgres" if conn_type == "postgresql" else conn_type.replace("-", "_")


def parse_connection_uri(conn_id: str, uri: str) -> ConnectionFields:
    """Airflow's URI format (`Connection.from_uri` of airflow.sdk 1.3): `type://login:pw@host:port/schema?extras`.

    A host with its own protocol is `type://https://host:port` (two `://`); extras are the query
    parameters, or JSON in `__extra__`. ValueError names the variable and the rule for a malformed URI.
    """
    if uri.count("://") > 2:
        raise ValueError(f"{CONN_ENV_PREFIX}{conn_id.upper()}: invalid connection URI (more than two '://')")
    host_with_protocol = uri.count("://") == 2
    conn_type = urlsplit(uri).scheme
    rest = uri.replace(f"{conn_type}://", "" if host_with_protocol else "//")
    if host_with_protocol and ("@" in rest.split("://", 1)[0] or ":" in rest.split("://", 1)[0]):
        raise ValueError(f"{CONN_ENV_PREFIX}{conn_id.upper()}: invalid connection URI: a host with a protocol "
                         "cannot follow a login (use type://https://host:port, or the JSON format)")
    parts = urlsplit(rest)
    host = unquote(parts.hostname or "")
    if "/" in host:  # urlsplit lowercases and cuts a host holding a path (bpo-32323): read the netloc
        host = unquote(parts.netloc.rsplit("@", 1)[-1].split(":", 1)[0])
    if host and host_with_protocol:
        host = f"{parts.scheme}://{host}"
    extra: Any = None
    if parts.query:
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        extra = query["__extra__"] if "__extra__" in query else json.dumps(query)
    # empty values stay as Airflow leaves them ('' host/schema, None login/password when absent)
    return ConnectionFields(
        conn_id=conn_id, conn_type=_normalize_conn_type(conn_type), host=host, port=parts.port,
        login=unquote(parts.username) if parts.username else parts.username,
        password=unquote(parts.password) if parts.password else parts.password,
        schema=unquote(parts.path[1:]) if parts.path[1:] else parts.path[1:], extra=_extra_dict(extra, conn_id))


def parse_connection_json(conn_id: str, value: str) -> ConnectionFields:
    """Airflow's JSON format (`Connection.from_json`): {"conn_type", "host", "port", "login", "password", "schema",
    "extra": object or JSON text}."""
    data = json.loads(value)
    if not isinstance(data, dict):
        raise ValueError(f"{CONN_ENV_PREFIX}{conn_id.upper()}: a JSON connection must be an object")
    port = data.get("port")
    if port:
        try:
            port = int(port)
        except ValueError:
            raise ValueError(f"{CONN_ENV_PREFIX}{conn_id.upper()}: expected an integer `port`, got {port!r}") from None
    conn_type = data.get("conn_type")
    return ConnectionFields(
        conn_id=conn_id, conn_type=_normalize_conn_type(conn_type) if conn_type else None,
        host=data.get("host"), port=port or None, login=data.get("login"), password=data.get("password"),
        schema=data.get("schema"), extra=_extra_dict(data.get("extra"), conn_id))


def env_connection(conn_id: str, environ: Mapping[str, str] | None = None) -> ConnectionFields | None:
    """The connection `AIRFLOW_CONN_<CONN_ID>` defines (JSON when it starts with '{', else a URI); None when unset."""
    raw = (os.environ if environ is None else environ).get(CONN_ENV_PREFIX + conn_id.upper(), "").strip()
    if not raw:
        return None
    return parse_connection_json(conn_id, raw) if raw.startswith("{") else parse_connection_uri(conn_id, raw)


# ---------------------------------------------------------------------------------------------- MLflow
def conn_tracking_uri(conn: ConnectionFields) -> str | None:
    """The tracking URI a connection gives: extra tracking_uri, else host as a full URI, else http://host[:port]."""
    if conn.extra.get("tracking_uri"):
        return str(conn.extra["tracking_uri"])
    host = (conn.host or "").strip()
    if not host or "://" in host:
        return host or None
    scheme = conn.extra.get("scheme", "http")
    return f"{scheme}://{host}:{conn.port}" if conn.port else f"{scheme}://{host}"


def default_artifact_root(tracking_uri: str) -> str | None:
    """Database stores write artifacts client-side: keep them in the state dir, not ./mlruns.
    An MLflow server decides its own artifact root, so http(s) gets None."""
    if scheme_of(tracking_uri) in DB_SCHEMES:
        return str(config.paths().mlflow_artifacts)
    return None


def resolve_mlflow(tracking_uri: str | None = None, registry_uri: str | None = None,
                   artifact_root: str | None = None, connection: ConnectionFields | None = None,
                   conn_id: str = MLFLOW_CONN_ID) -> MLflowSettings:
    """MLflow settings: arguments > connection (host, extra registry_uri/artifact_root, login/password) >
    MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI > SQLite in MLOPS_HOME. An explicit `tracking_uri` ignores the
    connection. An empty connection host is valid (airflow_settings.yaml ships one) and falls through."""
    conn = None if tracking_uri else connection
    extra = conn.extra if conn is not None else {}
    from_conn = conn_tracking_uri(conn) if conn is not None else None
    tracking = tracking_uri or from_conn or config.default_tracking_uri()
    registry = registry_uri or extra.get("registry_uri") or os.environ.get("MLFLOW_REGISTRY_URI") or tracking
    source = "arguments" if tracking_uri else (f"connection {conn_id}" if from_conn else "defaults")
    return MLflowSettings(
        tracking_uri=tracking,
        registry_uri=registry,
        artifact_root=artifact_root or extra.get("artifact_root") or default_artifact_root(tracking),
        username=(conn.login or None) if conn is not None else None,
        password=(conn.password or None) if conn is not None else None,
        source=source,
    )


# ---------------------------------------------------------------------------------------------- Feast
def resolve_feast(repo_path: str | Path | None = None, online_store: str | None = None,
                  connection: ConnectionFields | None = None) -> FeastSettings:
    """Feast settings: arguments > connection extras (`repo_path`, `online_store`, `project`; its password is the
    Redis password) > MLOPS_FEATURE_REPO / MLOPS_FEAST_ONLINE_STORE > the project's repo, SQLite in MLOPS_HOME."""
    extras = connection.extra if connection is not None else {}
    repo = repo_path or extras.get("repo_path") or config.feature_repo_dir()
    online = online_store or extras.get("online_store") or config.default_online_store()
    return FeastSettings(
        repo_path=Path(repo).resolve(), online_store=None if online in ("sqlite", "sqlite://") else online,
        project=extras.get("project") or DEFAULT_PROJECT,
        redis_password=(connection.password or extras.get("redis_password")) if connection is not None else None,
    )
