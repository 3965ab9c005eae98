"""ServingHook: the serving app's admin API (airflow_mlops.serving) as a client, from a connection.

Connection (conn_type "mlops_serving"): host = base URL of the app (http://serving:8000), password =
its admin token (the server's MLOPS_SERVING_ADMIN_TOKEN). Explicit arguments override the
connection; without a connection the token comes from the MLOPS_SERVING_ADMIN_TOKEN environment
variable. httpx is imported inside functions.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_mlops.exceptions import DeploymentFailed  # re-exported: the deploy client raises it

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "MLOPS_SERVING_ADMIN_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8000"


class ServingHook(BaseHook):
    """Turns a `mlops_serving` connection (or the arguments/env) into a ServingAdminClient.

    :param serving_conn_id: connection holding the URL (host) and admin token (password); optional.
    :param url: overrides the connection's host.
    :param admin_token: overrides the connection's password and the environment.
    """

    conn_name_attr = "serving_conn_id"
    default_conn_name = "mlops_serving_default"
    conn_type = "mlops_serving"
    hook_name = "MLOps serving app"

    def __init__(self, serving_conn_id: str = default_conn_name, *, url: str | None = None,
                 admin_token: str | None = None, timeout: float = 60.0) -> None:
        super().__init__()
        self.serving_conn_id = serving_conn_id
        self.url = url
        self.admin_token = admin_token
        self.timeout = timeout

    @classmethod
    def ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection-form behaviour; declared to Airflow through provider.py (3.2+ declarative style)."""
        from airflow_mlops.provider import CONNECTION_FORMS

        return CONNECTION_FORMS[cls.conn_type]

    def get_conn(self) -> ServingAdminClient:
        conn = None if self.url and self.admin_token else self._connection()
        url = self.url or _conn_url(conn) or DEFAULT_URL
        token = self.admin_token or (conn.password if conn is not None else None) or os.environ.get(ADMIN_TOKEN_ENV)
        return ServingAdminClient(url, token, self.timeout)

    def _connection(self) -> Any | None:
        try:
            return self.get_connection(self.serving_conn_id)
        except Exception as exc:  # noqa: BLE001 - missing connection, or no Airflow API here: arguments/env decide
            log.debug("No serving connection %r (%s); using arguments and %s", self.serving_conn_id, exc,
                      ADMIN_TOKEN_ENV)
            return None


def _conn_url(conn: Any | None) -> str | None:
    """host holds the full URL; a bare host (from a URI-style connection string) means http://host:port."""
    host = (getattr(conn, "host", None) or "").strip()
    if not host or "://" in host:
        return host or None
    port = getattr(conn, "port", None)
    return f"http://{host}:{port}" if port else f"http://{host}"


class ServingAdminClient:
    """The serving app's HTTP API, as far as deployments need it (one keep-alive httpx.Client; a context
    manager that closes it)."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._http: httpx.Client | None = None

    def __enter__(self) -> ServingAdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import httpx

        if self._http is None:  # one client: a new one per call costs ~150 ms (it builds an SSL context)
            self._http = httpx.Client(timeout=self.timeout)
        headers = {"Authorization": f"Bearer {self.token}"} if path.startswith("/admin") and self.token else {}
        try:
            return self._http.request(method, f"{self.url}{path}", headers=headers, **kwargs)
        except httpx.HTTPError as err:
            raise DeploymentFailed(
                f"serving app at {self.url} did not answer {method} {path} ({type(err).__name__}: {err}); "
                "start it (`airflow-mlops serve`) or fix serving.url in the model spec"
            ) from None

    @staticmethod
    def reason(response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return response.text[:500] or response.reason_phrase
        detail = body.get("detail", body) if isinstance(body, dict) else body
        return detail if isinstance(detail, str) else str(detail)[:500]

    def deploy(self, version: str, mode: str, fraction: float = 0.0) -> dict[str, Any]:
        body = {"version": str(version), "mode": mode, **({"fraction": fraction} if mode == "canary" else {})}
        response = self._call("POST", "/admin/deploy", json=body)
        if response.status_code == 200:
            return dict(response.json())
        fixes = {401: f"the admin token is wrong: set {ADMIN_TOKEN_ENV} (or the serving connection's password) "
                      "to the server's token",
                 403: f"the server has no admin token: start it with {ADMIN_TOKEN_ENV} set"}
        fix = fixes.get(response.status_code, "the previous model keeps serving; see the serving app's log")
        raise DeploymentFailed(f"{self.url}/admin/deploy refused v{version} (mode {mode}): HTTP "
                               f"{response.status_code}: {self.reason(response)}; {fix}", response.status_code)

    def status(self) -> dict[str, Any]:
        response = self._call("GET", "/ready")
        try:
            return dict(response.json())
        except ValueError:
            return {"ready": False, "detail": response.text[:200]}

    def wait_ready(self, version: str, slot: str, timeout: float, poll: float) -> dict[str, Any]:
        """Until /ready reports `version` in `slot` ("primary" | "secondary"); DeploymentFailed after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            loaded = (status.get(slot) or {}).get("version")
            if status.get("ready") and str(loaded) == str(version):
                return status
            if time.monotonic() >= deadline:
                raise DeploymentFailed(
                    f"{self.url}/ready still reports {slot} v{loaded} after {timeout:.0f}s, not v{version} "
                    f"(last error: {status.get('last_error')}); raise ready_timeout or check the serving app's log"
                )
            time.sleep(poll)

    def wait_experiment(self, experiment_id: str | None, timeout: float, poll: float) -> dict[str, Any]:
        """Until /ready shows experiment `experiment_id` routing (None: no experiment); DeploymentFailed after
        `timeout`. The app reads the registry's experiment record in its alias poll (serving.poll_seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            routing = (status.get("experiment") or {}).get("id")
            if status.get("ready") and routing == experiment_id:
                return status
            if time.monotonic() >= deadline:
                raise DeploymentFailed(
                    f"{self.url}/ready still shows experiment {routing} after {timeout:.0f}s, not {experiment_id} "
                    f"(last error: {status.get('last_error')}); the record is in the registry: check that the app "
                    "follows the champion alias (not pinned to a version) and its log, or raise ready_timeout")
            time.sleep(poll)

    def predict(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        response = self._call("POST", "/predict", json=dict(payload))
        if response.status_code != 200:
            raise DeploymentFailed(f"smoke request POST {self.url}/predict answered HTTP {response.status_code}: "
                                   f"{self.reason(response)}", response.status_code)
        return dict(response.json())

    def infer_rows(self, name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """POST /v2/models/<name>/infer with one FP64 tensor per feature column (None = missing value)."""
        columns = list(rows[0])
        body = {"inputs": [{"name": c, "shape": [len(rows)], "datatype": "FP64", "data": [r.get(c) for r in rows]}
                           for c in columns]}
        response = self._call("POST", f"/v2/models/{name}/infer", json=body)
        if response.status_code != 200:
            raise DeploymentFailed(f"smoke request POST {self.url}/v2/models/{name}/infer (the version's input "
                                   f"example) answered HTTP {response.status_code}: {self.reason(response)}",
                                   response.status_code)
        return dict(response.json())

    def metrics(self) -> str:
        response = self._call("GET", "/metrics")
        if response.status_code != 200:
            raise DeploymentFailed(f"GET {self.url}/metrics answered HTTP {response.status_code}; the canary "
                                   "cannot be measured")
        return response.text
