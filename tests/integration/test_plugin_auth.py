"""The mlops UI plugin inside Airflow's real API app: authentication, authorization, report serving.

Airflow's own `airflow.api_fastapi.app.create_app()` is built in-process (it mounts our plugin
from the installed `airflow.plugins` entry point, exactly as the api-server does) on a migrated
metadata DB, with the simple auth manager and real users who log in through `POST /auth/token`:

    admin:admin   viewer:viewer   limited:viewer   nobody:(no role)

`nobody` is refused by SimpleAuthManager's own code (a user without a role has no permission).
SimpleAuthManager cannot grant one DAG but not another, so the configured auth manager is
`DagGrantsAuthManager`, SimpleAuthManager plus one FAB-like rule: `limited` may read only the DAGs
in `DAG_GRANTS` and, like a FAB user without the global "DAGs" permission, not "every DAG". It is
configured through `[core] auth_manager` like any auth manager, and records what it was asked.

Reports are written by the core code the DAGs run (`core.gate.check_batch` with a real GX suite,
`core.validation_report.write_run_index`) into a temp MLOPS_HOME; the URL they carry is what the
task's "Validation report" extra link opens.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from support.dag_runs import program

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PASSWORDS = {"admin": "admin-pw", "viewer": "viewer-pw", "limited": "limited-pw", "nobody": "nobody-pw"}
USERS = "admin:admin,viewer:viewer,limited:viewer,nobody:"
DAG_GRANTS = {"limited": {"mlops_features"}}
SECRET = "TOP-SECRET-NOT-A-REPORT"


class DagGrantsAuthManager(SimpleAuthManager):
    """SimpleAuthManager, except users in DAG_GRANTS read only their DAGs (FAB-style: no global DAG read)."""

    asked: list[tuple[str, str, str | None]] = []

    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        dag_id = details.id if details else None
        self.asked.append((user.get_name(), method, dag_id))
        if user.get_name() in DAG_GRANTS:
            return method == "GET" and dag_id in DAG_GRANTS[user.get_name()]
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)


@dataclass
class Api:
    client: TestClient
    app: FastAPI
    home: Path
    urls: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, user: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return self.client.get(path, headers=headers, **kwargs)


def _write_reports(home: Path, small_demo: tuple) -> dict[str, str]:
    """Reports as the DAGs write them; returns their URLs."""
    from airflow_mlops.core.gate import Gate, check_batch
    from airflow_mlops.core.suites import load_suite
    from airflow_mlops.core.validation_report import write_run_index

    gate = Gate.from_state_dir(label_columns=("completed",))
    bad = small_demo[1]["driver_hourly_stats"].head(50).assign(conv_rate=2.0)
    entry = check_batch(bad, load_suite("driver_hourly_stats"), gate, source="upstream <b>batch</b>", quarantine=False)
    runs = {
        dag: write_run_index(
            [{**entry, "dataset": "driver_hourly_stats"}],
            gate.reports_root,
            dag_id=dag,
            run_id="manual__2026-11-01T00:00:00+00:00",
            task_id="validate_raw_batches",
            title="Raw batch validation",
        )
        for dag in ("mlops_features", "secret_dag")
    }
    # Things that must never be served: a file outside the reports folder, links pointing to it, a dotfile.
    (home / "secret.txt").write_text(SECRET)
    validation = gate.reports_root
    (validation / "escape.html").symlink_to(home / "secret.txt")
    (validation / "linked").symlink_to(home, target_is_directory=True)
    (validation / ".hidden.html").write_text(SECRET)
    return {
        "batch": entry["report"]["url"],
        "batch_json": entry["report"]["url"].replace("report.html", "result.json"),
        "run": runs["mlops_features"]["url"],
        "secret_run": runs["secret_dag"]["url"],
    }


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, small_demo: tuple) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("plugin")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(root / "home"))
        use_test_auth(mp, root / "passwords.json", API__HOST="127.0.0.1")
        (root / "home").mkdir()
        urls = _write_reports(root / "home", small_demo)
        with _airflow_api(root / "home", urls) as api:
            yield api


def use_test_auth(mp: pytest.MonkeyPatch, password_file: Path, **settings: str) -> None:
    """Configure DagGrantsAuthManager with USERS and PASSWORDS (written to password_file), fresh secrets.

    `settings` are further `[section] key` options as `SECTION__KEY=value`.
    """
    password_file.write_text(json.dumps(PASSWORDS))
    for key, value in {
        "CORE__AUTH_MANAGER": f"{DagGrantsAuthManager.__module__}.{DagGrantsAuthManager.__qualname__}",
        "CORE__SIMPLE_AUTH_MANAGER_USERS": USERS,
        "CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
        "API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "API__SECRET_KEY": secrets.token_urlsafe(32),
        **settings,
    }.items():
        mp.setenv(f"AIRFLOW__{key}", value)


@contextlib.contextmanager
def _airflow_api(home: Path, urls: dict[str, str]) -> Iterator[Api]:
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
    from airflow.utils.db import initdb

    initdb()  # the metadata DB this process uses (token revocation is looked up there)
    caches = (BaseAuthManager._get_token_signer, BaseAuthManager._get_token_validator)
    for cached in caches:
        cached.__func__.cache_clear()  # signer/validator: this module's JWT secret
    app = create_app()
    try:
        with TestClient(app) as client:
            api = Api(client=client, app=app, home=home, urls=urls)
            for user, password in PASSWORDS.items():
                response = client.post("/auth/token", json={"username": user, "password": password})
                assert response.status_code == 201, response.text
                api.tokens[user] = response.json()["access_token"]
            yield api
    finally:
        purge_cached_app()
        for cached in caches:
            cached.__func__.cache_clear()


def _mounted(app: FastAPI) -> FastAPI:
    """Our sub-app as Airflow mounted it (the one object its routes come from)."""
    mounts = [r for r in app.routes if isinstance(r, Mount) and r.path == "/mlops"]
    assert len(mounts) == 1, f"/mlops mounted {len(mounts)} times in Airflow's API app"
    assert isinstance(mounts[0].app, FastAPI)
    return mounts[0].app


def _dependency_calls(dependant: Any) -> set[Any]:
    calls = set()
    for dep in dependant.dependencies:
        calls |= {dep.call} | _dependency_calls(dep)
    return calls


def unguarded_routes(app: FastAPI) -> list[str]:
    """Every route of `app` that does not run `require_ui_access` (a mount or plain route cannot)."""
    from airflow_mlops.plugin.auth import authenticated_user, require_ui_access

    bad = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            bad.append(f"{getattr(route, 'path', route)} ({type(route).__name__}: no dependencies run)")
        elif not {require_ui_access, authenticated_user} <= _dependency_calls(route.dependant):
            bad.append(f"{sorted(route.methods)} {route.path}")
    return bad


# -- the invariant: no route without Airflow auth ---------------------------------------------------------
def test_every_route_of_the_mounted_app_requires_airflow_auth(api: Api) -> None:
    from airflow_mlops.plugin.app import create_app, get_app

    mounted = _mounted(api.app)
    assert mounted is get_app(), "Airflow must mount the plugin's app instance"
    paths = {route.path for route in mounted.routes}
    assert {"/api/health", "/reports/{kind}/{path:path}", "/api/models", "/api/models/{name}",
            "/api/models/{name}/versions/{version}", "/api/models/{name}/monitoring", "/api/runs/{dag_id}/{run_id}",
            "/ui/models", "/ui/models/{name}", "/ui/dags/{dag_id}", "/ui/runs/{dag_id}/{run_id}",
            "/ui/models/{name}/versions/{version}/{document}", "/ui/static/{name}"} <= paths
    assert unguarded_routes(mounted) == [] and unguarded_routes(create_app()) == []
    # FastAPI's own docs routes would be unguarded: they are off.
    assert not paths & {"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}

    # The check is not vacuous: a route added without the app's dependency, or a mount, is caught.
    rogue = create_app()
    rogue.router.routes.append(APIRoute("/rogue", lambda: "data"))
    rogue.mount("/static", FastAPI())
    assert unguarded_routes(rogue) == ["['GET'] /rogue", "/static (Mount: no dependencies run)"]


# A value for each path parameter of our routes, so every route can be requested.
PATH_VALUES = {"{kind}": "validation", "{path:path}": "x/report.html", "{name}": "ride_completion",
               "{version}": "1", "{document}": "evaluation", "{mlflow_run_id}": "0" * 32,
               "{dag_id}": "mlops_features", "{run_id}": "manual__1"}


def concrete(route_path: str) -> str:
    for param, value in PATH_VALUES.items():
        route_path = route_path.replace(param, value)
    assert "{" not in route_path, f"add a value for the parameter of {route_path} to PATH_VALUES"
    return "/mlops" + route_path


def test_every_route_answers_401_without_credentials(api: Api) -> None:
    for route in _mounted(api.app).routes:
        path = concrete(route.path)
        response = api.get(path)
        assert response.status_code == 401, f"GET {path} without credentials -> {response.status_code}"
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Airflow authentication required" in response.json()["detail"]


# -- authentication ---------------------------------------------------------------------------------------
def test_health_needs_a_valid_token_or_the_ui_cookie(api: Api) -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from airflow_mlops import __version__

    def detail(response: Any) -> str:
        assert response.status_code == 401, response.text
        return response.json()["detail"]

    assert "(Not authenticated)" in detail(api.get("/mlops/api/health"))
    assert "(Invalid JWT token)" in detail(
        api.client.get("/mlops/api/health", headers={"Authorization": "Bearer x.y.z"})
    )
    forged = api.tokens["admin"][:-4] + ("AAAA" if not api.tokens["admin"].endswith("AAAA") else "BBBB")
    assert "(Invalid JWT token)" in detail(
        api.client.get("/mlops/api/health", headers={"Authorization": f"Bearer {forged}"})
    )
    expired = get_auth_manager().generate_jwt(
        SimpleAuthManagerUser(username="admin", role="admin"), expiration_time_in_seconds=-3600
    )
    assert "(Token Expired)" in detail(
        api.client.get("/mlops/api/health", headers={"Authorization": f"Bearer {expired}"})
    )
    assert "(Not authenticated)" in detail(api.client.get("/mlops/api/health", headers={"Authorization": "Basic YTpi"}))

    ok = api.get("/mlops/api/health", "admin")
    assert ok.status_code == 200 and ok.json() == {
        "status": "ok",
        "plugin": "airflow_mlops",
        "version": __version__,
        "user": "admin",
        "report_kinds": ["drift", "validation"],
    }
    # The UI's session: the `_token` cookie (what the browser sends after logging in), no header.
    api.client.cookies.set("_token", api.tokens["viewer"])
    try:
        by_cookie = api.client.get("/mlops/api/health")
    finally:
        api.client.cookies.clear()
    assert by_cookie.status_code == 200 and by_cookie.json()["user"] == "viewer"


def test_a_user_the_auth_manager_refuses_gets_403(api: Api) -> None:
    response = api.get("/mlops/api/health", "nobody")
    assert response.status_code == 403
    assert (
        response.json()["detail"] == "user 'nobody' is not allowed to use the Airflow UI (Airflow auth manager refused)"
    )
    assert api.get(api.urls["run"], "nobody").status_code == 403
    assert api.get("/mlops/api/openapi.json", "nobody").status_code == 403


# -- authorization per DAG --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user", "report", "status"),
    [
        ("admin", "run", 200),
        ("admin", "secret_run", 200),
        ("admin", "batch", 200),
        ("viewer", "run", 200),
        ("viewer", "secret_run", 200),
        ("viewer", "batch", 200),
        ("limited", "run", 200),  # its DAG
        ("limited", "secret_run", 403),  # another DAG's run page
        ("limited", "batch", 403),  # a batch report names no DAG: needs read access to every DAG
    ],
)
def test_reports_are_authorized_by_the_dag_they_belong_to(api: Api, user: str, report: str, status: int) -> None:
    DagGrantsAuthManager.asked.clear()
    response = api.get(api.urls[report], user)
    assert response.status_code == status, response.text
    expected_dag = {"run": "mlops_features", "secret_run": "secret_dag", "batch": None}[report]
    assert (user, "GET", expected_dag) in DagGrantsAuthManager.asked
    if status == 403:
        assert SECRET not in response.text and "Validation" not in response.text
        assert response.json()["detail"].startswith(f"user '{user}' is not allowed to read validation report")


def test_403_comes_before_404_so_existence_does_not_leak(api: Api) -> None:
    missing = "/mlops/reports/validation/_runs/secret_dag/other_run/validate_raw_batches/index.html"
    assert api.get(missing, "limited").status_code == 403
    assert api.get(missing, "viewer").status_code == 404


# -- serving ----------------------------------------------------------------------------------------------
def test_a_real_validation_report_is_served_as_html_with_a_restrictive_csp(api: Api) -> None:
    from airflow_mlops.operators.validation import report_link

    url = report_link({"report": {"url": api.urls["batch"]}})  # what the task's extra link opens
    assert url.startswith("/mlops/reports/validation/driver_hourly_stats/")
    page = api.get(url, "viewer")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "Validation of upstream &lt;b&gt;batch&lt;/b&gt;" in page.text and "conv_rate" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "style-src 'unsafe-inline'" in csp and "sandbox" in csp
    assert "script-src" not in csp and "allow-same-origin" not in csp and "allow-scripts" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "private" in page.headers["cache-control"]

    result = api.get(api.urls["batch_json"], "viewer")
    assert result.status_code == 200 and result.headers["content-type"] == "application/json"
    assert result.json()["dataset"] == "driver_hourly_stats" and not result.json()["success"]
    assert result.headers["content-security-policy"] == "default-src 'none'; sandbox"

    index = api.get(api.urls["run"], "viewer")  # the run page links to the batch report, relative
    assert index.status_code == 200 and "../../../../driver_hourly_stats/" in index.text


def test_unknown_kind_and_missing_file_say_what_is_missing(api: Api) -> None:
    unknown = api.get("/mlops/reports/evidently/ride_completion/report.html", "admin")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "unknown report kind 'evidently'; known kinds: drift, validation"
    missing = api.get("/mlops/reports/validation/rides/0123456789abcdef/report.html", "admin")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no validation report 'rides/0123456789abcdef/report.html'"
    folder = api.get("/mlops/reports/validation/driver_hourly_stats", "admin")
    assert folder.status_code == 404 and "(it is a directory)" in folder.json()["detail"]
    assert api.get("/mlops/reports/validation/", "admin").status_code == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("%2e%2e/%2e%2e/secret.txt", 400),  # encoded dots reach the app as '..'
        ("..%2f..%2fsecret.txt", 400),  # encoded slashes too
        ("driver_hourly_stats/%2e%2e/%2e%2e/%2e%2e/secret.txt", 400),
        ("%2f" + "%2f".join(["tmp", "x"]), 400),  # absolute
        ("a%00b.html", 400),  # NUL
        ("..%5c..%5csecret.txt", 400),  # backslash
        ("%2e/escape.html", 400),  # encoded "."
        ("escape.html", 404),  # symlink to a file outside the base
        ("linked/secret.txt", 404),  # symlinked directory leading outside
        (".hidden.html", 404),  # dotfiles (temp files of atomic writes)
    ],
)
def test_path_traversal_never_serves_a_file_outside_the_reports_folder(api: Api, path: str, status: int) -> None:
    """httpx drops literal `..` segments and TestClient decodes the path a second time: raw and
    double-encoded paths go over a socket to a real api-server in tests/e2e/test_plugin_api_server.py."""
    response = api.get(f"/mlops/reports/validation/{path}", "admin")
    assert response.status_code == status, f"{path}: {response.status_code} {response.text[:200]}"
    assert SECRET not in response.text
    assert "detail" in response.json()


# -- registration -----------------------------------------------------------------------------------------
def _airflow_env(home: Path, **extra: str) -> dict[str, str]:
    from support.airflow_stack import project_env

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS", "MLFLOW"))}
    env.update(project_env(home))
    env.update(extra)
    return env


def test_airflow_plugins_cli_lists_the_plugin_once_from_the_entry_point(tmp_path: Path) -> None:
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run(
        [str(airflow), "plugins", "--output", "json"],
        env=_airflow_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    plugins = json.loads(done.stdout[done.stdout.index("[") :])
    ours = [p for p in plugins if p["name"] == "airflow_mlops"]
    assert len(ours) == 1, [p["name"] for p in plugins]
    assert ours[0]["source"].startswith("airflow-mlops==") and "group='airflow.plugins'" in ours[0]["source"]
    assert ours[0]["fastapi_apps"] == [
        {"app": "fastapi.applications.FastAPI", "url_prefix": "/mlops", "name": "airflow-mlops"}
    ]
    assert [(v["name"], v["url_route"]) for v in ours[0]["external_views"]] == [
        ("Models", "mlops-models"), ("MLOps model", "mlops-model"), ("MLOps reports", "mlops-run")]


PROBE = program("plugin_auth_probe")


def test_plugin_loads_once_even_with_provider_plugins_and_without_building_the_app(tmp_path: Path) -> None:
    """Provider-declared plugins load too with lazy_discover_providers=False: still one, no duplicate error.

    Loading plugins (what every task process does) does not build the FastAPI app.
    """
    env = _airflow_env(tmp_path / "home", AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS="False")
    done = subprocess.run(
        [sys.executable, str(PROBE)], env=env, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["names"].count("airflow_mlops") == 1, result
    # Airflow itself reports another provider's plugin (OpenLineage's, declared both as an entry point and in its
    # provider info) as "already registered" when lazy discovery is off; ours must not be among any error
    assert not any("airflow_mlops" in f"{name} {error}" for name, error in result["errors"].items()), result["errors"]
    assert all("already registered" in error for error in result["errors"].values()), result["errors"]
    assert "airflow_mlops.plugin.app" not in result["heavy"], "plugin loading must not build the app"


def test_the_openapi_document_is_served_only_authenticated(api: Api) -> None:
    assert api.get("/mlops/api/openapi.json").status_code == 401
    document = api.get("/mlops/api/openapi.json", "viewer")
    assert document.status_code == 200
    assert {"/api/health", "/reports/{kind}/{path}"} <= set(document.json()["paths"])


# -- the Models pages and their JSON API ------------------------------------------------------------------
MODEL_ROUTES = ("/mlops/api/models/ride_completion", "/mlops/api/models/ride_completion/versions/1",
                "/mlops/api/models/ride_completion/monitoring?kind=drift", "/mlops/ui/models/ride_completion",
                "/mlops/ui/models/ride_completion/versions/1/evaluation",
                "/mlops/ui/models/ride_completion/runs/" + "0" * 32 + "/model_card")


@pytest.mark.parametrize("path", MODEL_ROUTES)
def test_model_routes_need_read_access_to_the_training_dag(api: Api, path: str) -> None:
    DagGrantsAuthManager.asked.clear()
    response = api.get(path, "limited")
    assert response.status_code == 403, response.text
    assert ("limited", "GET", "ride_completion__train") in DagGrantsAuthManager.asked
    assert response.json()["detail"] == (
        "user 'limited' is not allowed to read model 'ride_completion': it needs read access to DAG "
        "'ride_completion__train' (Airflow auth manager refused)")
    assert api.get(path).status_code == 401


def test_models_list_shows_only_readable_models(api: Api) -> None:
    assert api.get("/mlops/api/models", "limited").json() == {"models": []}
    [model] = api.get("/mlops/api/models", "viewer").json()["models"]
    assert model["name"] == "ride_completion" and model["registered"] is False and model["champion"] is None


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/mlops/api/models/no_such_model", "unknown model 'no_such_model'; known models: ride_completion"),
        ("/mlops/api/models/no_such_model/versions/1", "unknown model 'no_such_model'"),
        ("/mlops/api/models/ride_completion/versions/7", "model 'ride_completion' has no version '7'; existing "
         "versions: none (nothing registered yet)"),
        ("/mlops/api/models/ride_completion/versions/v1", "has no version 'v1'"),
        ("/mlops/api/models/ride_completion/versions/%D9%A3", "has no version '\u0663'"),  # not read as 3
        ("/mlops/api/models/ride_completion/versions/12345678901234567890123", "has no version '1234567"),
        ("/mlops/ui/models/ride_completion/versions/1/secret", "unknown document 'secret'"),
        ("/mlops/ui/models/ride_completion/runs/" + "0" * 32 + "/evaluation", "no MLflow run"),
        ("/mlops/ui/static/%2e%2e", "invalid file path"),
        ("/mlops/ui/static/..%2f..%2fauth.py", "Not Found"),  # not one segment: no route matches
        ("/mlops/ui/static/app.py", "no UI asset 'app.py'"),
        ("/mlops/ui/static/nothing.js", "no UI asset 'nothing.js'"),
    ],
)
def test_unknown_models_versions_and_files_are_404_with_a_message(api: Api, path: str, detail: str) -> None:
    response = api.get(path, "viewer")
    assert response.status_code in (400, 404), response.text
    assert detail in response.json()["detail"]


# Values a client (or an attacker) may put in any path parameter: none may cause a 500.
HOSTILE_VALUES = ["12345678901234567890123", "-1", "0", "1.5", "\u0663", "%00", "x" * 5000, "%27%3B--",
                  "%E2%80%AE", "%F0%9F%92%A5", "..", "%2e%2e", "a%2fb", "NaN", "00000000000000000000000000000000"]


def test_every_route_answers_hostile_path_parameters_without_a_server_error(api: Api) -> None:
    routes = [route for route in _mounted(api.app).routes if "{" in route.path]
    assert routes, "no route with a path parameter found"
    failures = []
    for route in routes:
        for param in (p for p in PATH_VALUES if p in route.path):
            for value in HOSTILE_VALUES:
                path = concrete(route.path.replace(param, value))
                response = api.get(path, "admin")
                if response.status_code >= 500:
                    failures.append(f"GET {path[:120]} -> {response.status_code}: {response.text[:160]}")
    assert failures == [], "\n".join(failures)


def test_unknown_model_page_is_a_404_page_and_unknown_kind_a_400(api: Api) -> None:
    page = api.get("/mlops/ui/models/no_such_model", "viewer")
    assert page.status_code == 404 and "unknown model 'no_such_model'" in html.unescape(page.text)
    assert "'no_such_model'" not in page.text, "the quotes of the message reach the page escaped"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    bad = api.get("/mlops/api/models/ride_completion/monitoring?kind=vibes", "viewer")
    assert bad.status_code == 400 and "use one of ['drift', 'performance', 'skew', 'freshness']" in bad.text


def test_run_reports_are_authorized_by_their_dag(api: Api) -> None:
    assert api.get("/mlops/api/runs/secret_dag/manual__1", "limited").status_code == 403
    assert api.get("/mlops/ui/runs/secret_dag/manual__1", "limited").status_code == 403
    own = api.get("/mlops/api/runs/mlops_features/manual__2026-11-01T00:00:00+00:00", "limited")
    assert own.status_code == 200, own.text
    assert own.json()["model"] is None and [p["task_id"] for p in own.json()["validation"]] == ["validate_raw_batches"]
    assert own.json()["validation"][0]["url"] == api.urls["run"]


def test_drift_reports_belong_to_the_monitor_dag_and_may_run_their_scripts_sandboxed(api: Api) -> None:
    folder = api.home / "reports" / "drift" / "ride_completion" / "ride_completion__monitor" / "scheduled__1"
    folder.mkdir(parents=True)  # core.drift's layout: <model>/<dag_id>/<run_id>/report.html
    (folder / "report.html").write_text("<html><script>document.title='drift'</script></html>")
    url = "/mlops/reports/drift/ride_completion/ride_completion__monitor/scheduled__1/report.html"
    DagGrantsAuthManager.asked.clear()
    assert api.get(url, "limited").status_code == 403
    assert ("limited", "GET", "ride_completion__monitor") in DagGrantsAuthManager.asked
    page = api.get(url, "viewer")
    assert page.status_code == 200 and "<script>" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'unsafe-inline'" in csp and "sandbox allow-scripts" in csp
    assert "allow-same-origin" not in csp and "connect-src" not in csp
    assert api.get("/mlops/reports/drift/ride_completion/%2e%2e/%2e%2e/secret.txt", "viewer").status_code == 400


def test_the_plugin_declares_its_views_for_the_airflow_ui(api: Api) -> None:
    plugins = api.get("/api/v2/plugins", "admin").json()["plugins"]
    [ours] = [p for p in plugins if p["name"] == "airflow_mlops"]
    views = {v["url_route"]: v for v in ours["external_views"]}
    assert set(views) == {"mlops-models", "mlops-model", "mlops-run"}
    assert (views["mlops-models"]["destination"], views["mlops-models"]["href"]) == ("nav", "/mlops/ui/models")
    assert views["mlops-run"]["href"] == "/mlops/ui/runs/{DAG_ID}/{RUN_ID}"
    for view in views.values():  # every view's page is one of our guarded routes
        assert api.get(view["href"].replace("{DAG_ID}", "mlops_features").replace("{RUN_ID}", "r")).status_code == 401
    icon = api.get(views["mlops-models"]["icon"], "viewer")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
