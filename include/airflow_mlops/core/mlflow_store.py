"""MLflow tracking and registry clients for resolved settings, without Airflow.

Settings come from `core.store_settings.resolve_mlflow` (arguments > connection > environment >
SQLite in MLOPS_HOME); `MLflowStore` is what the serving app uses, `hooks.mlflow.MLflowHook` the same
methods (`MLflowStoreMixin`) with the settings of its Airflow connection.

Fail fast: `get_conn()` probes each server-backed store once per process before it makes the client
(one HTTP request to an MLflow server's /health and API, or a TCP connect plus one login to a
database; a few seconds at most, no retries) and raises StoreConfigError (the task fails without
retrying) for a configuration error, StoreUnavailable (retried as usual) for a passing one; the rule
is in `airflow_mlops.profile`. Without it MLflow's HTTP client retries a refused connection 7 times
with exponential back-off (~4 min, MLFLOW_HTTP_REQUEST_MAX_RETRIES) and opens a database store with
~10 retries (~100 s), before each of the task's own retries.

mlflow is imported inside methods only: DAG files and the provider registry import this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from airflow_mlops.exceptions import StoreConfigError, StoreUnavailable
from airflow_mlops.profile import (
    classify_http_status,
    classify_postgres_error,
    mask_url,
    tcp_probe,
    url_problem,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
CONNECT_TIMEOUT_S = 3.0
# MLflow opens a database store with ~10 retries and exponential back-off (~100 s,
# mlflow/store/db/utils.py create_sqlalchemy_engine_with_retry): probe first, fail in seconds.
_PREPARED_STORES: set[tuple[str, str]] = set()
# Stores that answered the preflight in this process: probed once per task process, not per call
# (the serving app and the triggerer make clients again and again).
_VERIFIED: set[str] = set()
DB_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


@dataclass(frozen=True)
class MLflowSettings:
    """Where tracking, registry and artifacts live, and where that was decided."""

    tracking_uri: str
    registry_uri: str
    artifact_root: str | None
    username: str | None = None
    password: str | None = None
    source: str = "defaults"


def scheme_of(uri: str) -> str:
    """'postgresql' for postgresql+psycopg2://..., 'http' for http://..., '' for plain paths."""
    return urlsplit(uri).scheme.split("+", 1)[0].lower()


def with_installed_driver(uri: str) -> str:
    """'postgresql://' -> 'postgresql+psycopg2://' when only psycopg2 is installed.

    SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; this project ships psycopg2-binary,
    so without this a plain URI fails with "No module named 'psycopg'" deep inside MLflow.
    """
    if not uri.startswith("postgresql://"):
        return uri
    from importlib.util import find_spec

    if find_spec("psycopg") is None and find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + uri.removeprefix("postgresql://")
    return uri


class MLflowStoreMixin:
    """MlflowClient making, store preparation and health checks for resolved settings.

    Needs `settings` (an MLflowSettings) and `mlflow_conn_id` (named in fixes) on the object: `MLflowStore`
    takes them as arguments (the serving app), `hooks.mlflow.MLflowHook` resolves them from its Airflow
    connection (core.store_settings.resolve_mlflow either way).
    """

    settings: MLflowSettings
    mlflow_conn_id: str

    @property
    def tracking_uri(self) -> str:
        return self.settings.tracking_uri

    @property
    def registry_uri(self) -> str:
        return self.settings.registry_uri

    # ----------------------------------------------------------------------------- clients
    def get_conn(self) -> MlflowClient:
        """An MlflowClient for the resolved tracking and registry URIs (stores prepared first)."""
        self._apply_credentials()
        self._preflight()
        tracking, registry = with_installed_driver(self.tracking_uri), with_installed_driver(self.registry_uri)
        for uri in dict.fromkeys((tracking, registry)):
            self._prepare_store(uri)
        log.info(
            "MLflow tracking %s, registry %s (from %s)",
            mask_url(self.tracking_uri),
            mask_url(self.registry_uri),
            self.settings.source,
        )
        return _client(tracking, registry, self._source())

    def _preflight(self) -> None:
        """check_backend() for the stores not yet verified in this process."""
        for uri in dict.fromkeys((self.tracking_uri, self.registry_uri)):
            if uri not in _VERIFIED:
                self._check_uri(uri, CONNECT_TIMEOUT_S)

    def _apply_credentials(self) -> None:
        # MLflow's REST client reads credentials only from these variables, at request time.
        if self.settings.username:
            os.environ["MLFLOW_TRACKING_USERNAME"] = self.settings.username
        if self.settings.password:
            os.environ["MLFLOW_TRACKING_PASSWORD"] = self.settings.password

    def _prepare_store(self, uri: str) -> None:
        """Create a database store with OUR artifact root before MlflowClient opens it.

        MlflowClient opens database stores with the artifact root "./mlruns": on a fresh database the
        Default experiment (id 0) would point into the working directory. Opening it once here with
        the state-dir root creates that experiment in the right place; later opens only verify.
        """
        root = self.settings.artifact_root
        if scheme_of(uri) not in DB_SCHEMES or root is None or (uri, root) in _PREPARED_STORES:
            return
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        if scheme_of(uri) == "sqlite":
            Path(unquote(urlsplit(uri).path)).parent.mkdir(parents=True, exist_ok=True)
        # other databases were probed by _preflight: seconds, instead of MLflow's ~100 s of retries
        SqlAlchemyStore(uri, _as_uri(root))
        _PREPARED_STORES.add((uri, root))

    def experiment_id(self, name: str) -> str:
        """Id of experiment `name`, created if absent (artifacts under the state dir for DB stores)."""
        client = self.get_conn()
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
                log.info("Restored deleted MLflow experiment %s (%s)", name, found.experiment_id)
            return str(found.experiment_id)
        root = self.settings.artifact_root
        location = f"{_as_uri(root).rstrip('/')}/{_safe_dir(name)}" if root else None
        return str(client.create_experiment(name, artifact_location=location))

    @contextmanager
    def activated(self) -> Iterator[MlflowClient]:
        """Point MLflow's fluent API (start_run, log_model, load_model) at this hook's stores.

        mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI to os.environ (for subprocesses);
        restoring both on exit keeps one task's URIs from leaking into the next hook's defaults.
        """
        import mlflow

        client = self.get_conn()
        saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(with_installed_driver(self.tracking_uri))
        mlflow.set_registry_uri(with_installed_driver(self.registry_uri))
        try:
            yield client
        finally:
            mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])  # type: ignore[arg-type]  # None = unset
            mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])  # type: ignore[arg-type]
            if saved["MLFLOW_REGISTRY_URI"] is None:
                os.environ.pop("MLFLOW_REGISTRY_URI", None)

    # ----------------------------------------------------------------------------- health
    def check_backend(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Fail fast when the tracking or registry backend cannot be used: StoreConfigError (no retry)
        for a configuration error, StoreUnavailable (retried) for a passing one. Always probes."""
        self._apply_credentials()
        for uri in dict.fromkeys((self.tracking_uri, self.registry_uri)):
            self._check_uri(uri, timeout)

    def _check_uri(self, uri: str, timeout: float) -> None:
        scheme = scheme_of(uri)
        if scheme in ("http", "https"):
            _check_http(uri, timeout, self._fix())
        elif scheme in DB_SCHEMES and scheme != "sqlite":
            _check_database(uri, timeout, self._fix())
        _VERIFIED.add(uri)  # embedded and plugin stores have nothing to probe here; _client checks the scheme

    def _source(self) -> str:
        """Where the URI came from, for the fix: the connection, MLFLOW_TRACKING_URI or the hook's arguments."""
        if self.settings.source.startswith("connection"):
            return f"the {self.mlflow_conn_id} connection"
        return "the hook's arguments" if self.settings.source == "arguments" else "MLFLOW_TRACKING_URI"

    def _fix(self) -> str:
        return f"point {self._source()} at a running store, or unset it to use the embedded SQLite store"

    def test_connection(self) -> tuple[bool, str]:
        """Airflow UI "Test" button."""
        try:
            self.check_backend()
            self.get_conn().search_experiments(max_results=1)
        except StoreUnavailable as exc:
            return False, str(exc)
        return True, f"MLflow reachable at {mask_url(self.tracking_uri)}"



class MLflowStore(MLflowStoreMixin):
    """MLflow tracking and registry of resolved settings, without Airflow (the serving app's).

    :param settings: default: `store_settings.resolve_mlflow(connection=env_connection("mlflow_default"))`,
        i.e. AIRFLOW_CONN_MLFLOW_DEFAULT, else MLFLOW_TRACKING_URI, else SQLite in MLOPS_HOME.
    """

    def __init__(self, settings: MLflowSettings | None = None, mlflow_conn_id: str = "mlflow_default") -> None:
        if settings is None:
            from airflow_mlops.core.store_settings import env_connection, resolve_mlflow

            settings = resolve_mlflow(connection=env_connection(mlflow_conn_id), conn_id=mlflow_conn_id)
        self.settings = settings
        self.mlflow_conn_id = mlflow_conn_id

def _as_uri(root: str) -> str:
    """Local directories become file:// URIs; anything with a scheme is used as given."""
    if "://" in root:
        return root
    return Path(root).expanduser().resolve().as_uri()


def _safe_dir(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "experiment"


def _client(tracking: str, registry: str, source: str = "the mlflow_default connection or MLFLOW_TRACKING_URI"
            ) -> MlflowClient:
    """MlflowClient(...); a URI scheme MLflow has no store for is a StoreConfigError, not a retried failure."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(tracking_uri=tracking, registry_uri=registry)
    except MlflowException as exc:
        text = str(exc)
        if "unsupported URI" not in text and "Could not find a registered" not in text:
            raise
        listed = text.split("Supported URI schemes are:", 1)[-1].split("]", 1)[0] if "Supported URI" in text else ""
        supported = ", ".join(x.strip(" '\"[") for x in listed.split(",") if x.strip(" '\"[")) or \
            "http, https, postgresql, mysql, mssql, sqlite, file"
        bad = registry if scheme_of(registry) != scheme_of(tracking) and "registry" in text else tracking
        raise StoreConfigError(
            "MLflow tracking/registry store", bad, f"MLflow has no store for the scheme {scheme_of(bad)!r}",
            f"Use one of {supported}, e.g. http://mlflow:5000 or postgresql://user@host/mlflow, in {source}.",
        ) from None


def _check_http(uri: str, timeout: float, source_fix: str = "") -> None:
    """TCP connect, GET /health (reachable?), then GET the experiments API (credentials? MLflow at all?).

    Through MLflow's own `http_request` (so its token / basic auth, TLS and auth-plugin settings apply)
    with max_retries=0: one attempt per request, where MLflow's client would retry 7 times (~4 min).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    what = "MLflow tracking server"
    elsewhere = source_fix or "point the mlflow_default connection / MLFLOW_TRACKING_URI elsewhere"
    fix = (
        "Start it (`docker compose -f docker/compose.yaml up -d mlflow`, or `mlflow server --workers 1` with "
        f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false) or {elsewhere}."
    )
    default_port = 443 if scheme_of(uri) == "https" else 80
    invalid = url_problem(uri, default_port=default_port)
    if invalid is not None:
        raise StoreConfigError(what, uri, invalid.reason, fix)
    parts = urlsplit(uri)
    found = tcp_probe(parts.hostname or "localhost", parts.port or default_port, timeout)  # refused: 1 connect
    if found is not None:
        raise StoreUnavailable.of(what, uri, found.reason, fix, config_error=found.config_error)
    creds = get_default_host_creds(uri)
    for path, params in (("/health", None), ("/api/2.0/mlflow/experiments/search", {"max_results": 1})):
        try:
            response = http_request(creds, path, "GET", max_retries=0, backoff_factor=0, timeout=timeout,
                                    raise_on_status=False, params=params)
        except MlflowException as exc:  # it wraps the requests error (with the unmasked URL in its text)
            cause = exc.__cause__ or exc.__context__ or exc
            raise StoreUnavailable.of(what, uri, _request_reason(cause, timeout), fix,
                                      config_error=_request_config_error(cause)) from None
        verdict = classify_http_status(response.status_code)
        if verdict is not None:
            meaning = {401: "credentials missing or refused", 403: "credentials refused"}.get(
                response.status_code, "not an MLflow tracking server at this URL" if verdict else "server error")
            credentials = (" Set login/password on the connection (or MLFLOW_TRACKING_USERNAME/PASSWORD, "
                           "MLFLOW_TRACKING_TOKEN)."
                           if response.status_code in (401, 403) else "")
            raise StoreUnavailable.of(what, uri, f"GET {path} answered HTTP {response.status_code}: {meaning}",
                                      fix + credentials, config_error=verdict)


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps: requests -> urllib3 MaxRetryError.reason -> NewConnectionError -> OSError."""
    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 20:
        cause = pending.pop(0)
        if any(cause is earlier for earlier in seen):
            continue
        seen.append(cause)
        linked = [cause.__cause__, cause.__context__, getattr(cause, "reason", None), *getattr(cause, "args", ())]
        pending.extend(a for a in linked if isinstance(a, BaseException))
    return seen


def _request_reason(exc: BaseException, timeout: float) -> str:
    """requests' nested 'HTTPConnectionPool(...): Max retries exceeded ... (Caused by ...)' in a few words."""
    import requests
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    causes = _causes(exc)
    if any(isinstance(c, requests.exceptions.SSLError) for c in causes):
        return "TLS handshake failed: an https:// URL for a plain-http server, or a certificate problem"
    if any(isinstance(c, requests.exceptions.Timeout | Urllib3Timeout | TimeoutError) for c in causes):
        return f"no answer within {timeout:g} s"
    text = mask_url(_first_line(exc))
    return text.rsplit("Caused by ", 1)[-1].rstrip(")") if "Caused by " in text else text


def _request_config_error(exc: BaseException) -> bool:
    """A requests error's root cause, classified as in profile.tcp_probe (refused / unknown host: config).

    Configuration: an invalid URL, a TLS handshake that fails (https:// on a plain-http port, or an
    untrusted certificate: MLFLOW_TRACKING_INSECURE_TLS / MLFLOW_TRACKING_SERVER_CERT_PATH), refused,
    unknown host. Anything else (timeouts, resets) may pass.
    """
    import socket

    import requests
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    for cause in _causes(exc):
        if isinstance(cause, requests.exceptions.Timeout | Urllib3Timeout | TimeoutError):
            return False
        if isinstance(cause, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema |
                      requests.exceptions.MissingSchema | requests.exceptions.SSLError | ConnectionRefusedError):
            return True
        if isinstance(cause, socket.gaierror):
            return cause.errno not in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None))
    return False


def _check_database(uri: str, timeout: float, source_fix: str = "") -> None:
    """TCP probe (fast 'connection refused'), then one real login for auth/database errors."""
    scheme = scheme_of(uri)
    what = "MLflow backend store"
    invalid = url_problem(uri, default_port=DB_DEFAULT_PORTS[scheme])
    elsewhere = source_fix or "point the mlflow_default connection / MLFLOW_TRACKING_URI at a reachable store"
    fix = f"Start {scheme} (e.g. `docker compose -f docker/compose.yaml up -d postgres`) or {elsewhere}."
    if invalid is not None:
        raise StoreConfigError(what, uri, invalid.reason, fix)
    parts = urlsplit(uri)
    port = parts.port or DB_DEFAULT_PORTS[scheme]
    host = parts.hostname
    fix = fix.replace(f"Start {scheme} ", f"Start {scheme} on {host or 'the local socket'}:{port} ", 1)
    if host:  # no host = Unix socket (postgresql:///mlflow): only the login below can tell
        found = tcp_probe(host, port, timeout)
        if found is not None:
            raise StoreUnavailable.of(what, uri, found.reason, fix, config_error=found.config_error)
    if scheme == "postgresql":
        _login_postgres(uri, timeout, fix)


def _login_postgres(uri: str, timeout: float, fix: str) -> None:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        engine = sqlalchemy.create_engine(
            with_installed_driver(uri), poolclass=NullPool, connect_args={"connect_timeout": max(1, int(timeout))}
        )
    except (sqlalchemy.exc.ArgumentError, ImportError, ValueError) as exc:  # unknown driver, bad URL
        raise StoreConfigError("MLflow backend store", uri, _first_line(exc), fix) from None
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = _first_line(getattr(exc, "orig", None) or exc)
        if "does not exist" in reason:
            fix = "Create the database or role first, or " + fix[0].lower() + fix[1:]
        raise StoreUnavailable.of("MLflow backend store", uri, reason, fix,
                                  config_error=classify_postgres_error(str(getattr(exc, "orig", None) or exc))) \
            from None
    finally:
        engine.dispose()


def _first_line(exc: BaseException | object) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
