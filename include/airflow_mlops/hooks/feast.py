"""FeastHook: the `feast_default` connection (or MLOPS_* settings) → a configured `FeatureStore`.

Settings resolve in `core.store_settings.resolve_feast`: explicit argument > connection extras (`repo_path`,
`online_store`, `project`; the password is the Redis password) > environment/embedded default; the hook
reads the connection through Airflow and passes it in. The `RepoConfig` is built by `core.feast_store`
(shared with the serving app, which needs no Airflow). Feast, pandas, pyarrow and duckdb are imported
inside functions: DAG files import operators, operators import this module, so its top must stay light. The repo as
files (parsing it in-process, hashing it, Feast's prints in the log) is `core.feature_repo`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import (
    AirflowNotFoundException,
    AirflowRuntimeError,
    ErrorType,
)

from airflow_mlops import config
from airflow_mlops.core.feast_store import (  # re-exported: tests and benchmarks import them from here
    DEFAULT_PROJECT,
    REDIS_WHAT,
    FeastSettings,
    online_store_config,
    redis_connection_string,
    redis_params,
    repo_config,
    sqlite_online_path,
)
from airflow_mlops.core.feature_repo import (
    definitions_hash,
    feast_output_to_log,
    foreign_source_paths,
    parse_feature_repo,
    rebase_registry,
)
from airflow_mlops.core.offline import atomic_write_bytes, batch_id_from_file
from airflow_mlops.core.store_settings import ConnectionFields, resolve_feast
from airflow_mlops.exceptions import FeatureRepoError, StoreUnavailable
from airflow_mlops.profile import classify_redis_error, tcp_probe

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig
    from feast.repo_contents import RepoContents

__all__ = ["APPLIED_STATE_FILE", "DEFAULT_PROJECT", "FeastHook", "FeastSettings", "redis_connection_string",
           "redis_params", "sqlite_online_path"]

log = logging.getLogger(__name__)

APPLIED_STATE_FILE = "applied_definitions.json"
REDIS_CHECK_TIMEOUT_S = 2.0


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return _utc(value).isoformat() if value is not None else None


class FeastHook(BaseHook):
    """Interact with a Feast feature store (file registry, duckdb offline, SQLite or Redis online).

    :param feast_conn_id: connection with extras `repo_path`, `online_store`, `project`.
    :param repo_path: feature repo directory; overrides the connection and MLOPS_FEATURE_REPO.
    :param online_store: `redis://host:port/db` or `sqlite`; overrides the connection and
        MLOPS_FEAST_ONLINE_STORE.
    """

    conn_name_attr = "feast_conn_id"
    default_conn_name = "feast_default"
    conn_type = "feast"
    hook_name = "Feast"

    @classmethod
    def ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection-form behaviour; declared to Airflow through provider.py (3.2+ declarative style)."""
        from airflow_mlops.provider import CONNECTION_FORMS

        return CONNECTION_FORMS[cls.conn_type]

    def __init__(self, feast_conn_id: str = default_conn_name, repo_path: str | Path | None = None,
                 online_store: str | None = None) -> None:
        super().__init__()
        self.feast_conn_id = feast_conn_id
        self._repo_path = repo_path
        self._online_store = online_store
        self._settings: FeastSettings | None = None
        self._store: FeatureStore | None = None

    # -- configuration ------------------------------------------------------------------------
    def _connection(self) -> ConnectionFields | None:
        try:
            conn = self.get_connection(self.feast_conn_id)
        except AirflowNotFoundException:
            log.info("connection %s is not defined; using the embedded Feast defaults", self.feast_conn_id)
            return None
        except AirflowRuntimeError as err:  # a raw "not found" from the task runtime's API comms
            if err.error.error != ErrorType.CONNECTION_NOT_FOUND:
                raise
            return None
        return ConnectionFields.of(conn)

    @property
    def settings(self) -> FeastSettings:
        if self._settings is None:
            self._settings = resolve_feast(self._repo_path, self._online_store, self._connection())
        return self._settings

    def _online_store_config(self) -> dict[str, Any]:
        return online_store_config(self.settings, self.feast_conn_id)

    def repo_config(self) -> RepoConfig:
        """The Feast config, built in code (the repo's feature_store.yaml is for the `feast` CLI only)."""
        return repo_config(self.settings, self.feast_conn_id)

    def get_store(self) -> FeatureStore:
        """The configured FeatureStore (created once per hook).

        Every path comes from MLOPS_HOME now: a registry carried over from another state dir first
        gets its online tables pointed here (`rebase_registry`), so nothing touches the original's files.
        """
        if self._store is None:
            from feast import FeatureStore

            if not self.settings.is_redis:
                online_db = sqlite_online_path(self.settings.online_store)
                rebase_registry(config.paths().feast_dir / "registry.db", online_db)

            # Feast logs "Registry cache expired, so refreshing" at INFO on nearly every registry read.
            logging.getLogger("feast.infra.registry.registry").setLevel(logging.WARNING)
            self._store = FeatureStore(repo_path=str(self.settings.repo_path), config=self.repo_config())
        return self._store

    def get_conn(self) -> FeatureStore:
        return self.get_store()

    def check_online_store(self) -> dict[str, Any]:
        """Fail fast (one connect, 2 s at most, no retries) if a Redis online store cannot be used.

        StoreConfigError (the task fails without retrying) for a configuration error: connection refused,
        unknown host, password or database refused; StoreUnavailable (retried) for a timeout or anything
        else (the rule: `airflow_mlops.profile`).
        """
        s = self.settings
        if not s.is_redis:
            self._online_store_config()  # an unsupported scheme is a StoreConfigError here too
            return {"type": "sqlite", "url": s.online_store_label}
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        params = redis_params(s.redis_url, s.redis_password)
        fix = (f"Start Redis: `redis-server --port {params['port']} --daemonize yes` (or the compose stack's "
               f"redis service), or unset MLOPS_FEAST_ONLINE_STORE / the `online_store` extra of connection "
               f"'{self.feast_conn_id}' to use the embedded SQLite online store.")
        found = tcp_probe(params["host"], params["port"], REDIS_CHECK_TIMEOUT_S)
        if found is not None:
            raise StoreUnavailable.of(REDIS_WHAT, s.online_store_label, found.reason, fix,
                                      config_error=found.config_error) from None
        # redis-py retries refused connections with backoff (~8 s) by default: one try is enough here.
        client = redis.Redis(**params, socket_connect_timeout=REDIS_CHECK_TIMEOUT_S,
                             socket_timeout=REDIS_CHECK_TIMEOUT_S, retry=Retry(NoBackoff(), 0))
        try:
            client.ping()
        except (redis.exceptions.RedisError, OSError) as err:
            reason = str(err) or type(err).__name__
            refused_login = isinstance(err, redis.exceptions.AuthenticationError) or any(
                marker in reason.upper() for marker in ("WRONGPASS", "NOAUTH", "AUTHENTICATION"))
            config_error = refused_login or classify_redis_error(reason)
            if refused_login:
                fix = ("Give the right password (the connection's password, or redis://:PASSWORD@host:port/db) "
                       f"or {fix[0].lower()}{fix[1:]}")
            elif "DB index" in reason:
                fix = ("Use a database the server has (0-15 unless redis.conf sets `databases`) or "
                       f"{fix[0].lower()}{fix[1:]}")
            raise StoreUnavailable.of(REDIS_WHAT, s.online_store_label, reason, fix, config_error=config_error) \
                from None  # the message says it all; redis-py's stack adds nothing
        finally:
            client.close()
        return {"type": "redis", "url": s.online_store_label}

    # -- definitions --------------------------------------------------------------------------
    def parse_definitions(self) -> RepoContents:
        """Parse the feature repo with Feast's own parser; errors name the repo and the fix."""
        repo = self.settings.repo_path
        if not repo.is_dir():
            raise FeatureRepoError(f"feature repo {repo} does not exist; set MLOPS_FEATURE_REPO or the "
                                   f"`repo_path` extra of connection '{self.feast_conn_id}'")
        return parse_feature_repo(repo, project=self.settings.project)

    def apply(self, *, force: bool = False) -> dict[str, Any]:
        """Register the repo's definitions, only if they changed since the last apply.

        Unchanged definitions are not re-applied, so materialization state is never touched
        (feast#2905). Returns {applied, hash, feature_views, feature_services}.
        """
        from airflow_mlops.core.feast_internals import repo_operations

        apply_total_with_repo_instance = repo_operations().apply_total_with_repo_instance

        s = self.settings
        # The state dir is part of the hash: definitions parsed under another MLOPS_HOME read its offline files.
        digest = definitions_hash(s.repo_path, project=s.project, online_store=s.online_store_label,
                                  state_dir=str(config.paths().home))
        contents = self.parse_definitions()
        summary = {"hash": digest, "feature_views": sorted(fv.name for fv in contents.feature_views),
                   "feature_services": sorted(fs.name for fs in contents.feature_services)}
        state = config.paths().feast_dir / APPLIED_STATE_FILE
        registry = config.paths().feast_dir / "registry.db"
        foreign = foreign_source_paths(registry, config.paths().offline_dir)
        if foreign:
            log.warning("Feast registry reads offline sources outside this state dir %s; re-applying", foreign)
        if not force and not foreign and registry.exists() and state.exists() and \
                json.loads(state.read_text()).get("hash") == digest:
            log.info("Feast definitions unchanged (%s); apply skipped, materialization state kept", digest[:12])
            return {"applied": False, **summary}
        self.check_online_store()
        store = self.get_store()
        # What `feast apply` does, minus its sys.exit() on repo errors. Source validation is skipped: for
        # a FileSource it only logs, and logs a false "path does not exist" for our `**` glob
        # (feast/infra/offline_stores/file_source.py `validate`); duckdb reads the glob fine.
        with feast_output_to_log(log):
            apply_total_with_repo_instance(store, s.project, store.registry, contents, skip_source_validation=True)
        record = {**summary, "applied_at": datetime.now(UTC).isoformat(), "online_store": s.online_store_label}
        atomic_write_bytes(state, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))
        log.info("applied Feast definitions %s: views %s", digest[:12], summary["feature_views"])
        return {"applied": True, **summary}

    # -- materialization ----------------------------------------------------------------------
    def feature_view_names(self, feature_views: list[str] | None = None) -> list[str]:
        names = sorted(fv.name for fv in self.get_store().list_feature_views())
        unknown = sorted(set(feature_views or []) - set(names))
        if unknown:
            raise FeatureRepoError(f"feature views {unknown} are not registered (registered: {names}); "
                                   "run FeastApplyOperator first")
        return list(feature_views) if feature_views is not None else names

    def source_window(self, view: str, start: datetime | None = None, end: datetime | None = None,
                      *, after: datetime | None = None) -> dict[str, Any]:
        """Rows, event-time bounds, batch ids and partition dirs of a view's offline source in [start | >after, end].

        `partitions` (the directories of the files read) is the OpenLineage input of materialization.
        """
        import duckdb

        source = self.get_store().get_feature_view(view).batch_source
        raw_path = str(getattr(source, "path", "") or "")
        if source is None or not raw_path:
            raise FeatureRepoError(f"feature view {view} has no file source; the offline store here is parquet files")
        path = raw_path if Path(raw_path).is_absolute() else str(self.settings.repo_path / raw_path)
        ts = '"' + source.timestamp_field.replace('"', '""') + '"'
        bounds = [(op, _utc(v)) for op, v in ((">=", start), (">", after), ("<=", end)) if v is not None]
        where = " AND ".join(["TRUE", *(f"{ts} {op} ?" for op, _ in bounds)])
        sql = (f"SELECT count(*), min({ts}), max({ts}), list(DISTINCT filename) FROM "
               f"read_parquet(?, filename=true, hive_partitioning=false) WHERE {where}")
        try:
            with duckdb.connect() as con:
                con.execute("SET TimeZone='UTC'")
                rows, first, last, files = con.execute(sql, [path, *(v for _, v in bounds)]).fetchone() or (0,) * 4
        except duckdb.IOException as err:  # no file matches the glob yet: an empty source
            log.info("offline source of %s has no data yet (%s)", view, err)
            rows, first, last, files = 0, None, None, []
        return {"rows": int(rows), "start": _iso(first), "end": _iso(last),
                "batch_ids": sorted({batch_id_from_file(f) for f in files or []}),
                "partitions": sorted({str(Path(f).parent) for f in files or []})}

    def _last_interval(self, view: str) -> tuple[datetime, datetime] | None:
        fv = self.get_store().registry.get_feature_view(view, self.settings.project, allow_cache=False)
        return (fv.materialization_intervals[-1][0], fv.materialization_intervals[-1][1]) \
            if fv.materialization_intervals else None

    def materialize(self, start: datetime, end: datetime, feature_views: list[str] | None = None) -> dict[str, Any]:
        """Load [start, end] of the views' offline data into the online store."""
        self.check_online_store()
        views = self.feature_view_names(feature_views)
        with feast_output_to_log(log):
            self.get_store().materialize(_utc(start), _utc(end), feature_views=views)
        return self._summary({v: self._view_result(v, "full", _utc(start), _utc(end)) for v in views})

    def materialize_incremental(self, end: datetime, feature_views: list[str] | None = None) -> dict[str, Any]:
        """Load what came after each view's last materialized end, up to `end` (Feast's incremental mode)."""
        self.check_online_store()
        views = self.feature_view_names(feature_views)
        before = {v: self._last_interval(v) for v in views}
        with feast_output_to_log(log):
            self.get_store().materialize_incremental(_utc(end), feature_views=views)
        results = {}
        for view in views:
            start, stop = self._last_interval(view) or (_utc(end), _utc(end))  # Feast records one per run
            previous = before[view]
            after = previous[1] if previous else None  # Feast re-reads `after` itself; count only new rows
            results[view] = self._view_result(view, "incremental", None if after else start, stop, after=after)
        return self._summary(results)

    def materialize_new(self, feature_views: list[str] | None = None, end: datetime | None = None) -> dict[str, Any]:
        """First run: materialize from the data's earliest event time; later runs: incremental.

        `materialize_incremental` alone starts a view's first run at now - ttl and silently skips
        older data (ARCHITECTURE §9), so a never-materialized view gets `materialize(earliest, end)`.
        `end` defaults to the newest event time in the offline store.
        """
        self.check_online_store()
        results: dict[str, dict[str, Any]] = {}
        names = self.feature_view_names(feature_views)
        healed = self.heal_online_tables(names)
        for view in names:
            data = self.source_window(view)
            until = _utc(end) if end else (datetime.fromisoformat(data["end"]) if data["end"] else None)
            last = None if view in healed else self._last_interval(view)
            if not data["rows"] or until is None or (last is not None and until <= _utc(last[1])):
                log.info("feature view %s: no new data to materialize", view)
                results[view] = {"mode": "up_to_date", "rows": 0, "start": _iso(last[1]) if last else None,
                                 "end": _iso(last[1]) if last else None, "batch_ids": []}
            elif last is None:
                results.update(self.materialize(datetime.fromisoformat(data["start"]), until, [view])["views"])
            else:
                results.update(self.materialize_incremental(until, [view])["views"])
        return self._summary(results)

    def missing_online_tables(self, feature_views: list[str]) -> list[str]:
        """Views whose SQLite online table is gone (file deleted, table dropped); Redis has no tables: []."""
        import sqlite3

        if self.settings.is_redis:
            return []
        path = sqlite_online_path(self.settings.online_store)
        if not path.is_file():
            return list(feature_views)
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return [view for view in feature_views if f"{self.settings.project}_{view}" not in tables]

    def heal_online_tables(self, feature_views: list[str]) -> list[str]:
        """Re-create missing online tables (a forced apply) and return their views, to be materialized in full.

        Without this, serving answers 503 (or nulls) for a deleted online store until someone
        repairs it by hand, while incremental runs report "up to date".
        """
        missing = self.missing_online_tables(feature_views)
        if missing:
            log.warning("online tables of %s are missing from %s; re-creating them and materializing in full",
                        missing, self.settings.online_store_label)
            store = self.get_store()
            views = [store.get_feature_view(view) for view in missing]
            # An apply would not do it: the registry still lists the tables, so Feast's diff is empty.
            store._get_provider().update_infra(self.settings.project, tables_to_delete=[], tables_to_keep=views,
                                               entities_to_delete=[], entities_to_keep=store.list_entities(),
                                               partial=True)
        return missing

    def rematerialize_corrections(self, corrected_since: dict[str, str],
                                  feature_views: list[str] | None = None) -> dict[str, Any]:
        """Redo the materialized window of every view reading a dataset whose landed rows were corrected.

        Incremental materialization only reads event times after the last run, so a row replaced
        in place (`corrections: replace`) would stay stale online. The window [earliest corrected
        event time, last materialized end] is written again: Feast writes the newest row per entity
        of that window, which now carries the corrected values.
        """
        results: dict[str, dict[str, Any]] = {}
        for view in self.feature_view_names(feature_views):
            source = self.get_store().get_feature_view(view).batch_source
            path = str(getattr(source, "path", "") or "")
            hits = [since for dataset, since in corrected_since.items() if f"/{dataset}/" in f"/{path}"]
            last = self._last_interval(view)
            if not hits or last is None:
                continue
            start = min(datetime.fromisoformat(h) for h in hits)
            log.warning("feature view %s: landed rows since %s were corrected; re-materializing %s → %s", view,
                        start.isoformat(), start.isoformat(), _iso(last[1]))
            results.update(self.materialize(start, _utc(last[1]), [view])["views"])
        return self._summary(results)

    def _view_result(self, view: str, mode: str, start: datetime | None, end: datetime,
                     *, after: datetime | None = None) -> dict[str, Any]:
        window = self.source_window(view, start, end, after=after)
        return {"mode": mode, "rows": window["rows"], "start": _iso(after or start), "end": _iso(end),
                "batch_ids": window["batch_ids"], "partitions": window["partitions"]}

    @staticmethod
    def _summary(views: dict[str, dict[str, Any]]) -> dict[str, Any]:
        starts = [datetime.fromisoformat(v["start"]) for v in views.values() if v["start"]]
        ends = [datetime.fromisoformat(v["end"]) for v in views.values() if v["end"]]
        return {"feature_views": sorted(views), "rows": sum(v["rows"] for v in views.values()),
                "start": _iso(min(starts)) if starts else None, "end": _iso(max(ends)) if ends else None,
                "views": views}
