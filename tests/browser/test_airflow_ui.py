"""Airflow's own UI shows our DAGs: headless Chromium logs in through the real login page.

A real api-server and dag-processor (the dag-processor is what serializes DAGs for the UI) on a
fresh MLOPS_HOME; Debian's /usr/bin/chromium driven by Playwright (`make browser-deps` installs it;
Playwright downloads no browser). Screenshots of every step go to test-artifacts/browser/
(git-ignored). The page may load nothing from outside the api-server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.airflow_stack import AirflowStack, airflow_stack_for_fixture
from support.browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

DAG_IDS = ("mlops_features", "ride_completion__train")
UI_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("ui") / "home"
    with airflow_stack_for_fixture(request, home, components=("dag-processor", "api-server"), dag_ids=DAG_IDS) as stack:
        yield stack


@dataclass
class UI:
    """One browser context (no cookies yet) on the stack, recording every URL the page requests."""

    page: Any
    stack: AirflowStack
    requested: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        return screenshot(self.page, name)

    def log_in(self) -> None:
        self.page.get_by_label("Username").fill(self.stack.username)
        self.page.get_by_label("Password").fill(self.stack.password)
        self.page.get_by_role("button", name="Sign in").click()

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requested
                if not url.startswith((self.stack.base_url, "data:", "blob:"))]


@pytest.fixture
def ui(ui_stack: AirflowStack, chromium: Any, request: pytest.FixtureRequest) -> Iterator[UI]:
    failed_before = request.session.testsfailed
    context = chromium.new_context(viewport={"width": 1400, "height": 900}, base_url=ui_stack.base_url)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    session = UI(page=page, stack=ui_stack)
    page.on("request", lambda req: session.requested.append(req.url))
    yield session
    if request.session.testsfailed > failed_before:
        print(f"failure screenshot: {session.shot(f'FAILED-{request.node.name}')}")
    context.close()


def _spec_description(model: str) -> str:
    from airflow_mlops.core.spec import load_specs

    return next(spec.description for spec in load_specs() if spec.name == model)


def test_rest_api_answers_401_without_a_session(ui_stack: AirflowStack) -> None:
    for path in ("/api/v2/dags", f"/api/v2/dags/{DAG_IDS[1]}", "/api/v2/assets/events"):
        response = httpx.get(ui_stack.base_url + path, timeout=10)
        assert response.status_code == 401, f"GET {path} without credentials -> {response.status_code}"
    # A token that is not a valid JWT is refused as 403 "Invalid JWT token" (api_fastapi/core_api/security.py).
    forged = httpx.get(ui_stack.base_url + "/api/v2/dags", headers={"Authorization": "Bearer not-a-jwt"}, timeout=10)
    assert forged.status_code == 403, f"a forged token got {forged.status_code}"
    client = ui_stack.client()
    try:
        assert {d["dag_id"] for d in client.request("GET", "/dags")["dags"]} >= set(DAG_IDS)
    finally:
        client.close()


def test_login_page_leads_to_the_dag_list_with_both_mlops_dags(ui: UI) -> None:
    page = ui.page
    page.goto("/dags")
    page.wait_for_url(re.compile(r"/auth/login"))
    page.get_by_role("button", name="Sign in").wait_for()
    ui.shot("01-login")
    ui.log_in()
    page.wait_for_url(re.compile(r"/dags$"))
    cards = page.get_by_test_id("dag-card")
    for dag_id in DAG_IDS:
        card = cards.filter(has=page.get_by_test_id("dag-id").get_by_text(dag_id, exact=True))
        card.get_by_role("link", name="mlops", exact=True).wait_for()
    ui.shot("02-dag-list")
    assert page.context.cookies(), "the login set no session cookie"
    assert ui.foreign_requests() == [], f"the UI loaded from outside: {ui.foreign_requests()}"


def test_training_dag_page_shows_the_generated_doc(ui: UI) -> None:
    page = ui.page
    page.goto(f"/dags/{DAG_IDS[1]}")
    ui.log_in()
    page.wait_for_url(re.compile(rf"/dags/{DAG_IDS[1]}$"))
    for task in ("build_training_set", "train", "register"):
        page.get_by_text(task, exact=True).first.wait_for()
    ui.shot("03-training-dag")
    page.get_by_role("button", name="Dag Docs").click()
    doc = page.get_by_role("dialog")
    doc.get_by_role("heading", name=re.compile(r"Training:\s*ride_completion")).wait_for()
    assert _spec_description("ride_completion") in " ".join(doc.inner_text().split())
    ui.shot("04-training-dag-docs")
    assert ui.foreign_requests() == [], f"the UI loaded from outside: {ui.foreign_requests()}"
    assert ui.stack.network_attempts() == "", f"Airflow tried to reach outside:\n{ui.stack.network_attempts()}"
