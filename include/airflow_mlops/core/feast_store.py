"""The Feast store of resolved settings, without Airflow: online-store config and the `RepoConfig`.

Settings come from `core.store_settings.resolve_feast` (arguments > connection extras > MLOPS_* >
embedded defaults). No `feature_store.yaml` is read: the `RepoConfig` is built here, so switching the
online store to Redis is configuration only. Used by `hooks.feast.FeastHook` and by the serving app;
feast is imported inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow_mlops import config
from airflow_mlops.exceptions import StoreConfigError
from airflow_mlops.profile import url_problem

if TYPE_CHECKING:
    from feast import RepoConfig

DEFAULT_PROJECT = "mlops"
REDIS_WHAT = "Feast online store (Redis)"


@dataclass(frozen=True)
class FeastSettings:
    """Resolved settings of one hook: where the definitions are and which online store to use."""

    repo_path: Path
    online_store: str | None
    project: str
    redis_password: str | None = None

    @property
    def is_redis(self) -> bool:
        return self.online_store is not None and self.online_store.startswith(("redis://", "rediss://"))

    @property
    def redis_url(self) -> str:
        """The Redis URL; empty when the online store is SQLite."""
        return self.online_store if self.online_store is not None and self.is_redis else ""

    @property
    def online_store_label(self) -> str:
        """The online store without credentials, for logs, errors and change detection."""
        if self.is_redis:
            p = redis_params(self.redis_url)
            return f"{urlsplit(self.redis_url).scheme}://{p['host']}:{p['port']}/{p['db']}"
        return f"sqlite:///{sqlite_online_path(self.online_store)}"


def sqlite_online_path(online_store: str | None) -> Path:
    """`sqlite:////abs/path.db` names a file; unset or `sqlite` means MLOPS_HOME/feast/online.db."""
    if online_store and online_store.startswith("sqlite:///") and len(online_store) > len("sqlite:///"):
        return Path(online_store[len("sqlite:///"):])
    return config.paths().feast_dir / "online.db"


def redis_params(url: str, password: str | None = None) -> dict[str, Any]:
    """`redis[s]://[user:pw@]host:port/db` → host, port, db, username, password, ssl."""
    invalid = url_problem(url, default_port=6379)
    if invalid is not None:
        raise StoreConfigError(REDIS_WHAT, url, invalid.reason,
                               "Use redis://host:port/db, e.g. redis://127.0.0.1:6379/0.")
    parts = urlsplit(url)
    db = parts.path.lstrip("/") or "0"
    if not db.isdigit():
        raise StoreConfigError(REDIS_WHAT, url, f"database {db!r} is not a number",
                               "Use a database number, e.g. redis://127.0.0.1:6379/0.")
    return {"host": parts.hostname or "localhost", "port": parts.port or 6379, "db": int(db),
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else password, "ssl": parts.scheme == "rediss"}


def redis_connection_string(url: str, password: str | None = None) -> str:
    """Feast's Redis format `host:port,db=N[,username=..][,password=..][,ssl=true]` for a redis:// URL."""
    p = redis_params(url, password)
    if p["password"] and "," in p["password"]:  # Feast splits the connection string on commas
        raise StoreConfigError(REDIS_WHAT, url, "the password contains ','",
                               "Feast's Redis connection string is split on commas: use a password without ','.")
    items = [f"{p['host']}:{p['port']}", f"db={p['db']}"]
    items += [f"{key}={p[key]}" for key in ("username", "password") if p[key]]
    return ",".join(items + (["ssl=true"] if p["ssl"] else []))


def online_store_config(settings: FeastSettings, conn_id: str = "feast_default") -> dict[str, Any]:
    """Feast's `online_store` config: Redis (connection string) or SQLite (a file in MLOPS_HOME by default)."""
    if settings.is_redis:
        return {"type": "redis",
                "connection_string": redis_connection_string(settings.redis_url, settings.redis_password)}
    if settings.online_store and not settings.online_store.startswith("sqlite:"):
        raise StoreConfigError("Feast online store", settings.online_store, "only redis://, rediss:// and sqlite "
                               "are supported", "Use redis://host:port/db or rediss://..., or unset "
                               f"MLOPS_FEAST_ONLINE_STORE / the `online_store` extra of connection "
                               f"'{conn_id}' for the embedded SQLite store.")
    return {"type": "sqlite", "path": str(sqlite_online_path(settings.online_store))}


def repo_config(settings: FeastSettings, conn_id: str = "feast_default") -> RepoConfig:
    """The Feast config, built in code (the repo's feature_store.yaml is for the `feast` CLI only)."""
    from feast import RepoConfig

    feast_dir = config.paths().feast_dir
    feast_dir.mkdir(parents=True, exist_ok=True)
    return RepoConfig(project=settings.project, provider="local", registry=str(feast_dir / "registry.db"),
                      offline_store={"type": "duckdb"}, online_store=online_store_config(settings, conn_id),
                      entity_key_serialization_version=3, repo_path=settings.repo_path)
