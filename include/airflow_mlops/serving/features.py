"""Online feature lookup of the serving app: one Feast call per request, for all of its entities.

The feature service is resolved once (at startup) and its `FeatureService` object is reused on every
request. `lookup()` reads the same values `store.get_online_features(features=<service>,
entity_rows=[...], full_feature_names=False).to_dict()` returns, with the unprefixed names the
training set uses (`conv_rate`, not `driver_hourly_stats__conv_rate`): through the online store's
own read (`feature_read.DirectRead`, a third of the CPU), or Feast's full call where that read does
not apply (on-demand views, ...). A row whose features are all None is an unknown entity
(`UnknownEntity`, the app answers 404); a connection or I/O failure of the online store is
`OnlineStoreDown` (503, or request-time features only when the spec's `serving.feature_fallback`
is "request"). Feast is imported by the caller (the store object); nothing heavy is imported here.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import FeatureRepoError, MLOpsError

if TYPE_CHECKING:
    from feast import FeatureStore

    from airflow_mlops.serving.feature_read import DirectRead

log = logging.getLogger(__name__)

# redis-py retries a refused connection with backoff for ~8 s by default: a request would hang that long
# before its 503. Serving fails fast instead (Feast passes these connection-string items to redis.Redis).
REDIS_FAIL_FAST = ",socket_connect_timeout=0.5,socket_timeout=1,retry=null"
# Feast value types of join keys -> the kinds protocols.entity_value() checks.
_KINDS = {"INT64": "int", "INT32": "int", "STRING": "str", "BYTES": "str", "FLOAT": "float", "DOUBLE": "float"}


class UnknownEntity(MLOpsError):
    """No online feature at all for some entities: never materialized, or a wrong key."""

    def __init__(self, entities: list[dict[str, Any]], service: str) -> None:
        self.entities = entities
        shown = ", ".join(_show_entity(e) for e in entities[:5]) + (" ..." if len(entities) > 5 else "")
        super().__init__(f"unknown entity {shown}: feature service '{service}' has no online features for it; check "
                         "the key, or materialize its features (feature DAG)")


class OnlineStoreDown(MLOpsError):
    """The online store did not answer (connection refused, file missing, timeout, ...)."""

    def __init__(self, store: str, reason: str) -> None:
        self.store = store
        self.reason = reason
        super().__init__(f"Feast online store {store} is unavailable ({reason}); check it is up and materialized "
                         "(feature DAG), or set serving.feature_fallback: request in the model spec to answer "
                         "from request-time features only")


class StaleFeatures(MLOpsError):
    """Online rows older than their view's TTL (or the spec's serving.max_feature_age) under policy `fail`."""

    def __init__(self, stale: dict[str, tuple[float, float]]) -> None:
        self.stale = stale
        views = "; ".join(f"view '{view}': row {_age_text(age)} old, allowed {_age_text(limit)}"
                          for view, (age, limit) in sorted(stale.items()))
        super().__init__(f"stale online features ({views}). Run the mlops_features DAG to land and materialize "
                         "fresh data, or set serving.stale_features: serve_stale (score, say degraded) or request "
                         "(score from request-time features only) in the model spec")


def _age_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _show_entity(entity: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in entity.items())


def store_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'the online store is down': OS/socket errors, SQLite and Redis errors."""
    errors: list[type[BaseException]] = [OSError, sqlite3.Error]
    try:
        import redis.exceptions

        errors.append(redis.exceptions.RedisError)
    except ImportError:  # feast[redis] not installed: no Redis store either
        pass
    return tuple(errors)


def serving_store() -> FeatureStore:
    """The Feast store of the serving process, with a fail-fast Redis client.

    Settings: `store_settings.resolve_feast` with the feast_default connection of the environment
    (AIRFLOW_CONN_FEAST_DEFAULT), else MLOPS_FEATURE_REPO / MLOPS_FEAST_ONLINE_STORE, else the embedded
    defaults: what FeastHook resolves outside a task, without importing Airflow.
    """
    from feast import FeatureStore

    from airflow_mlops.core.feast_store import repo_config
    from airflow_mlops.core.store_settings import FEAST_CONN_ID, env_connection, resolve_feast

    settings = resolve_feast(connection=env_connection(FEAST_CONN_ID))
    config = repo_config(settings, FEAST_CONN_ID)
    online = config.online_config
    if isinstance(online, dict) and online.get("type") == "redis" and "retry=" not in online["connection_string"]:
        config.online_config = {**online, "connection_string": online["connection_string"] + REDIS_FAIL_FAST}
    logging.getLogger("feast.infra.registry.registry").setLevel(logging.WARNING)  # INFO on every cache refresh
    return FeatureStore(repo_path=str(settings.repo_path), config=config)


def _direct_read(store: Any) -> DirectRead | None:
    from airflow_mlops.serving.feature_read import DirectRead

    return DirectRead(store) if DirectRead.available(store) else None


def store_label(store: Any) -> str:
    """The online store without credentials: sqlite:///path or redis://host:port (for errors and /ready)."""
    online = getattr(getattr(store, "config", None), "online_store", None)
    kind = str(getattr(online, "type", "") or type(online).__name__).lower()
    if "redis" in kind:
        first = str(getattr(online, "connection_string", "") or "").split(",", 1)[0]
        return f"redis://{first}"
    if "sqlite" in kind:
        return f"sqlite:///{getattr(online, 'path', '')}"
    return kind or "unknown"


class OnlineFeatures:
    """The online features of one feature service, for entity rows (entity keys only)."""

    def __init__(self, store: FeatureStore, feature_service: str, entity_keys: Sequence[str]) -> None:
        self.store = store
        self.name = feature_service
        self.label = store_label(store)
        self.service = self._resolve(feature_service)
        self.features = tuple(f.name for p in self.service.feature_view_projections for f in p.features)
        self.view_features = {p.name: tuple(f.name for f in p.features) for p in self.service.feature_view_projections}
        self.ttls = self._ttls()
        self.key_kinds = self._key_kinds(entity_keys)
        self._errors = store_errors()
        self._direct = _direct_read(store)

    def _resolve(self, name: str) -> Any:
        try:
            return self.store.get_feature_service(name)
        except Exception as exc:  # noqa: BLE001 - not registered, registry missing or unreadable
            try:
                known = sorted(fs.name for fs in self.store.list_feature_services())
            except Exception:  # noqa: BLE001 - the registry itself is unreadable
                known = []
            raise FeatureRepoError(
                f"feature service '{name}' cannot be loaded from the Feast registry ({type(exc).__name__}: {exc}); "
                f"registered services: {known}. Run the feature DAG (feast apply + materialize) against the same "
                "MLOPS_HOME / feast_default connection as this server") from None

    def _ttls(self) -> dict[str, float | None]:
        """View -> its TTL in seconds (None: no TTL, or an on-demand view, whose sources carry their own)."""
        from feast.errors import FeatureViewNotFoundException

        out: dict[str, float | None] = {}
        for view in self.view_features:
            try:
                ttl = getattr(self.store.get_feature_view(view), "ttl", None)  # a store stand-in may have none
            except FeatureViewNotFoundException:
                ttl = None
            out[view] = ttl.total_seconds() if ttl is not None and ttl.total_seconds() > 0 else None
        return out

    def _key_kinds(self, entity_keys: Sequence[str]) -> dict[str, str]:
        """Join key -> kind, from the feature views of the service; the spec's keys must be exactly these."""
        kinds: dict[str, str] = {}
        for projection in self.service.feature_view_projections:
            for column in self._entity_columns(projection.name):
                value_type = str(column.dtype.to_value_type()).split(".")[-1]
                kinds[column.name] = _KINDS.get(value_type, "str")
        if set(kinds) != set(entity_keys):
            raise FeatureRepoError(
                f"spec features.entity_keys {list(entity_keys)} differ from the join keys {sorted(kinds)} of feature "
                f"service '{self.name}'; make the spec list exactly the service's join keys")
        return {key: kinds[key] for key in entity_keys}

    def _entity_columns(self, view: str) -> list[Any]:
        """A view's entity columns; an on-demand view has those of the feature views it reads."""
        from feast.errors import FeatureViewNotFoundException

        try:
            return list(self.store.get_feature_view(view).entity_columns)
        except FeatureViewNotFoundException:
            sources = self.store.get_on_demand_feature_view(view).source_feature_view_projections.values()
            return [column for source in sources for column in self._entity_columns(source.name)]

    def warm_up(self) -> None:
        """One lookup of an unknown entity: connects, loads the registry cache; a down store only logs."""
        probe = {key: 0 if kind == "int" else 0.0 if kind == "float" else "" for key, kind in self.key_kinds.items()}
        try:
            self._read([probe], {})
        except self._errors as exc:
            log.warning("online store %s is not answering at startup (%s); /predict answers 503 until it does",
                        self.label, exc)

    def lookup(self, entities: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """Feature name -> value per entity (None = missing); one online-store call for all entities.

        Raises UnknownEntity when some entity has no feature at all, OnlineStoreDown when the store fails.
        """
        return self.lookup_aged(entities)[0]

    def lookup_aged(self, entities: list[dict[str, Any]],
                    now: float | None = None) -> tuple[dict[str, list[Any]], dict[str, list[float | None]]]:
        """`lookup` plus view -> the age in seconds of each entity's online row (None: no row for that view)."""
        times: dict[str, list[Any]] = {}
        try:
            result = self._read(entities, times)
        except self._errors as exc:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
            log.warning("online store %s failed: %s", self.label, reason)
            raise OnlineStoreDown(self.label, reason) from exc
        columns = {name: result[name] for name in self.features}
        unknown = [entities[i] for i in range(len(entities)) if all(col[i] is None for col in columns.values())]
        if unknown:
            raise UnknownEntity(unknown, self.name)
        return columns, _ages(times, time.time() if now is None else now)

    def stale(self, ages: dict[str, list[float | None]], max_age: float | None) -> dict[str, tuple[float, float]]:
        """View -> (oldest age, allowed age) for views with a row older than min(TTL, max_age)."""
        out = {}
        for view, values in ages.items():
            limits = [x for x in (self.ttls.get(view), max_age) if x is not None]
            known = [a for a in values if a is not None]
            if limits and known and max(known) > min(limits):
                out[view] = (max(known), min(limits))
        return out

    def _read(self, entities: list[dict[str, Any]], times: dict[str, list[Any]]) -> dict[str, list[Any]]:
        result = self._direct.read(self.service, entities, times) if self._direct is not None else None
        if result is None:
            result = self.store.get_online_features(features=self.service, entity_rows=entities,
                                                    full_feature_names=False).to_dict(include_event_timestamps=True)
            for view, names in self.view_features.items():  # Feast gives each feature's event time in seconds
                stamps = result.get(f"{names[0]}__ts") if names else None
                if stamps is not None:
                    times[view] = [s if s and result[names[0]][i] is not None else None for i, s in enumerate(stamps)]
        return result


def apply_stale_policy(features: OnlineFeatures, online: dict[str, list[Any]], ages: dict[str, list[float | None]],
                       policy: str, max_age: float | None,
                       observe: Any = None) -> tuple[dict[str, Any], dict[str, int]]:
    """What the answer says about rows older than their view's TTL (or `max_age`) under `policy`.

    Returns ({degraded, stale_features?}, view -> stale row count); `fail` raises StaleFeatures, `request`
    blanks the stale rows' features in `online` (scored as missing), `serve_stale` leaves them. The same on
    every online store: only the ages come from the store. `observe(ages, counts, policy)` records metrics.
    """
    stale = features.stale(ages, max_age)
    counts = {view: sum(1 for a in ages[view] if a is not None and a > limit) for view, (_, limit) in stale.items()}
    if observe is not None:
        observe(ages, counts, policy)
    if not stale:
        return {"degraded": False}, counts
    if policy == "fail":
        raise StaleFeatures(stale)
    if policy == "request":
        for view, (_, limit) in stale.items():
            old = [i for i, a in enumerate(ages[view]) if a is not None and a > limit]
            for name in features.view_features.get(view, ()):
                for i in old:
                    online[name][i] = None
    return {"degraded": True, "stale_features": sorted(stale)}, counts


def _ages(times: dict[str, list[Any]], now: float) -> dict[str, list[float | None]]:
    """Event times (datetime, naive = UTC, or epoch seconds) -> ages in seconds at `now`."""
    out: dict[str, list[float | None]] = {}
    for view, values in times.items():
        ages: list[float | None] = []
        for value in values:
            if value is None:
                ages.append(None)
                continue
            if isinstance(value, int | float):
                stamp = float(value)
            else:
                stamp = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()
            # Redis answers a key it does not hold with event time 0 (the epoch) and empty values: no row
            ages.append(max(0.0, now - stamp) if stamp > 0 else None)
        out[view] = ages
    return out
