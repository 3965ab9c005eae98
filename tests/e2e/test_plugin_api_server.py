"""The mlops UI plugin in a real `airflow api-server` (uvicorn), reached over HTTP like a browser would.

Only the api-server runs (on a fresh MLOPS_HOME, simple auth manager, user `admin`): Airflow loads
the plugin from the installed entry point and mounts it at `/mlops`. Requests the in-process
tests cannot make go over a raw socket here: literal `..` segments (httpx would normalize them)
and double-encoded dots (the real server decodes once).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from support.airflow_stack import AirflowStack, airflow_stack_for_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SECRET = "TOP-SECRET-NOT-A-REPORT"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[AirflowStack]:
    from airflow_mlops.core.validation_report import write_run_index

    home = tmp_path_factory.mktemp("plugin") / "home"
    home.mkdir()
    (home / "secret.txt").write_text(SECRET)
    write_run_index(
        [],
        home / "reports" / "validation",
        dag_id="mlops_features",
        run_id="manual__1",
        task_id="validate_raw_batches",
        title="Raw batch validation",
    )
    with airflow_stack_for_fixture(request, home, components=("api-server",)) as running:
        yield running


@pytest.fixture(scope="module")
def token(stack: AirflowStack) -> str:
    client = stack.client()
    try:
        return client.login()
    finally:
        client.close()


def _raw_get(base_url: str, target: str, token: str) -> tuple[int, str]:
    """GET `target` byte for byte (no client-side normalization); returns (status, whole response)."""
    port = urlsplit(base_url).port
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks).decode(errors="replace")
    return int(response.split(" ", 2)[1]), response


def test_airflow_lists_the_plugin_once_with_its_app(stack: AirflowStack) -> None:
    client = stack.client()
    try:
        plugins = client.request("GET", "/plugins")["plugins"]
        errors = client.request("GET", "/plugins/importErrors")["import_errors"]
    finally:
        client.close()
    ours = [p for p in plugins if p["name"] == "airflow_mlops"]
    assert len(ours) == 1, [p["name"] for p in plugins]
    assert [(a["url_prefix"], a["name"]) for a in ours[0]["fastapi_apps"]] == [("/mlops", "airflow-mlops")]
    assert errors == [], errors
    views = [(v["name"], v["destination"], v["url_route"], v["href"]) for v in ours[0]["external_views"]]
    assert views == [
        ("Models", "nav", "mlops-models", "/mlops/ui/models"),
        ("MLOps model", "dag", "mlops-model", "/mlops/ui/dags/{DAG_ID}"),
        ("MLOps reports", "dag_run", "mlops-run", "/mlops/ui/runs/{DAG_ID}/{RUN_ID}"),
    ]


def test_the_views_pages_are_served_to_a_session_and_401_without(stack: AirflowStack, token: str) -> None:
    """What the UI's iframes load: our HTML shells, their script and style, with a CSP that allows no CDN."""
    for path in ("/mlops/ui/models", "/mlops/ui/dags/mlops_features", "/mlops/ui/runs/mlops_features/manual__1"):
        assert httpx.get(stack.base_url + path, timeout=10).status_code == 401
        page = httpx.get(stack.base_url + path, cookies={"_token": token}, timeout=10)
        assert page.status_code == 200, f"{path}: {page.status_code} {page.text[:200]}"
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "http" not in csp
    for asset, media_type in (("mlops.js", "text/javascript"), ("mlops.css", "text/css"), ("models.svg", "image/svg")):
        response = httpx.get(f"{stack.base_url}/mlops/ui/static/{asset}", cookies={"_token": token}, timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith(media_type)
    status, response = _raw_get(stack.base_url, "/mlops/ui/static/../../../secret.txt", token)
    assert status in (400, 404) and SECRET not in response


def test_health_is_401_without_and_200_with_a_token_or_the_ui_cookie(stack: AirflowStack, token: str) -> None:
    from airflow_mlops import __version__

    url = f"{stack.base_url}/mlops/api/health"
    anonymous = httpx.get(url, timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["content-type"] == "application/json"
    assert "Airflow authentication required" in anonymous.json()["detail"]
    forged = httpx.get(url, headers={"Authorization": "Bearer not-a-jwt"}, timeout=10)
    assert forged.status_code == 401, "an invalid token is an authentication failure here"

    ok = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["version"] == __version__ and ok.json()["user"] == stack.username
    by_cookie = httpx.get(url, cookies={"_token": token}, timeout=10)
    assert by_cookie.status_code == 200, by_cookie.text


def test_reports_are_served_and_traversal_is_refused_by_the_real_server(stack: AirflowStack, token: str) -> None:
    page = "/mlops/reports/validation/_runs/mlops_features/manual__1/validate_raw_batches/index.html"
    assert httpx.get(stack.base_url + page, timeout=10).status_code == 401
    status, response = _raw_get(stack.base_url, page, token)
    assert status == 200 and "content-type: text/html; charset=utf-8" in response.lower()
    assert "content-security-policy: default-src 'none'" in response.lower()

    for target in (
        "/mlops/reports/validation/../../secret.txt",
        "/mlops/reports/validation/_runs/../../../secret.txt",
        "/mlops/reports/validation/%2e%2e/%2e%2e/secret.txt",
        "/mlops/reports/validation/%252e%252e/%252e%252e/secret.txt",
        "/mlops/reports/validation/..%2f..%2fsecret.txt",
        "/mlops/reports/validation//" + str(Path(stack.home, "secret.txt")).lstrip("/"),
    ):
        status, response = _raw_get(stack.base_url, target, token)
        assert status in (400, 404), f"{target}: {status}"
        assert SECRET not in response, f"{target} leaked a file outside the reports folder"
