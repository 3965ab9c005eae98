"""The Models pages in Airflow's own UI: headless Chromium, a real api-server, a real registry.

A fresh MLOPS_HOME is seeded through the project's real write paths (`seed_models.py`: MLflow
models, evaluation reports, registration, model cards, promotions, monitoring history), then a real
dag-processor + api-server run on it (Airflow loads the plugin from its entry point). Chromium logs
in through the login page, opens "Models" from the nav (our page in the UI's iframe), then a model
page, and checks what a person would look at: the champion version and the drift chart's points.
Screenshots go to test-artifacts/browser/. Without a session, our pages and API answer 401.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from seed_models import (
    DRIFT_SHARES,
    IMPORTANCE_FEATURES,
    MODEL,
    RETRAIN_REASON,
    RUN_IDS,
    TRAIN_DAG,
    Seeded,
    seed_models,
    use_fresh_home,
)

from support.airflow_stack import AirflowStack, airflow_stack_for_fixture
from support.browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def seeded_stack(tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Iterator[tuple[AirflowStack, Seeded]]:
    home = tmp_path_factory.mktemp("mlops_ui") / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        use_fresh_home(mp, home)
        seeded = seed_models()
    with airflow_stack_for_fixture(request, home, components=("dag-processor", "api-server"),
                                   dag_ids=(TRAIN_DAG,)) as stack:
        yield stack, seeded


def test_pages_and_api_answer_401_without_a_session(seeded_stack: tuple[AirflowStack, Seeded]) -> None:
    stack, _ = seeded_stack
    for path in ("/mlops/ui/models", f"/mlops/ui/models/{MODEL}", "/mlops/api/models", f"/mlops/api/models/{MODEL}",
                 f"/mlops/api/models/{MODEL}/monitoring?kind=drift", "/mlops/ui/static/mlops.js",
                 f"/mlops/ui/models/{MODEL}/versions/2/evaluation"):
        anonymous = httpx.get(stack.base_url + path, timeout=10)
        assert anonymous.status_code == 401, f"GET {path} without a session -> {anonymous.status_code}"
        assert "Airflow authentication required" in anonymous.json()["detail"]
        forged = httpx.get(stack.base_url + path, cookies={"_token": "not-a-jwt"}, timeout=10)
        assert forged.status_code == 401, f"GET {path} with a forged cookie -> {forged.status_code}"
        assert "Champion" not in forged.text and "ride_completion__train" not in forged.text


def test_models_page_from_the_nav_then_the_model_page(seeded_stack: tuple[AirflowStack, Seeded],
                                                      chromium: Any) -> None:
    stack, seeded = seeded_stack
    context = chromium.new_context(viewport={"width": 1440, "height": 1000}, base_url=stack.base_url)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    try:
        _log_in(page, stack)
        page.get_by_role("link", name="Models").first.click()
        page.wait_for_url(re.compile(r"/plugin/mlops-models"))
        frame = page.frame_locator('iframe[title="Models"]')
        row = frame.locator(f'#models tr[data-model="{MODEL}"]')
        champion = row.locator("td.champion")
        champion.get_by_text(f"v{seeded.champion}", exact=True).wait_for()
        screenshot(page, "10-models-page")

        row.get_by_role("link", name=MODEL, exact=True).click()
        frame.locator("#champion-version").get_by_text(f"v{seeded.champion}", exact=True).wait_for()
        # no experiment here: nothing where its line would be (replaceChildren once wrote a null as "null")
        assert "null" not in frame.locator("body").inner_text().split()
        points = frame.locator("#drift-chart circle.point")
        points.nth(len(DRIFT_SHARES) - 1).wait_for()
        assert points.count() == len(DRIFT_SHARES)
        assert frame.locator("#drift-chart circle.point.detected").count() == 1
        assert frame.locator("#metric-chart circle.point").count() == len(seeded.versions)
        timeline = frame.locator("#versions > li")
        assert timeline.count() == len(seeded.versions)
        assert "champion" in (timeline.nth(1).get_attribute("class") or "")
        timeline.nth(1).get_by_text(f"Retrained because {RETRAIN_REASON}").wait_for()  # v2: a drift-started run
        frame.locator("#model-card").get_by_text("Dispatch prioritisation").wait_for()
        bars = frame.locator("#importance-chart rect.bar")  # the champion's global importance, one bar a feature
        bars.nth(len(IMPORTANCE_FEATURES) - 1).wait_for()
        assert [bars.nth(i).get_attribute("data-feature") for i in range(bars.count())] == list(IMPORTANCE_FEATURES)
        assert re.search(rf"/plugin/mlops-models/mlops/ui/models/{MODEL}$", page.url), page.url
        screenshot(page, "11-model-page")
        foreign = [url for url in requested if not url.startswith((stack.base_url, "data:", "blob:"))]
        assert foreign == [], f"the pages loaded from outside: {foreign}"
    except BaseException:
        screenshot(page, "FAILED-mlops-ui")
        raise
    finally:
        context.close()
    assert stack.network_attempts() == "", f"Airflow tried to reach outside:\n{stack.network_attempts()}"


def test_dag_and_dag_run_tabs_show_the_model_and_what_the_run_registered(
        seeded_stack: tuple[AirflowStack, Seeded], chromium: Any) -> None:
    """The training DAG's "MLOps model" tab is the model page; the (manual) run that registered v1 lists v1."""
    stack, seeded = seeded_stack
    client = stack.client()
    try:  # the Airflow run that registered v1 (seeded with this run id), so the UI can show its page
        client.request("POST", f"/dags/{TRAIN_DAG}/dagRuns",
                       json={"dag_run_id": RUN_IDS[0], "logical_date": None, "conf": {}})
    finally:
        client.close()
    context = chromium.new_context(viewport={"width": 1440, "height": 1000}, base_url=stack.base_url)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        _log_in(page, stack)
        page.goto(f"/dags/{TRAIN_DAG}/plugin/mlops-model")
        page.frame_locator('iframe[title="MLOps model"]').locator("#champion-version").get_by_text(
            f"v{seeded.champion}", exact=True).wait_for()
        screenshot(page, "12-dag-tab-model")
        page.goto(f"/dags/{TRAIN_DAG}/runs/{quote(RUN_IDS[0], safe='')}")
        page.get_by_role("button", name="MLOps reports").or_(page.get_by_role("link", name="MLOps reports")) \
            .first.click()
        frame = page.frame_locator('iframe[title="MLOps reports"]')
        frame.get_by_role("link", name=f"{MODEL} v{seeded.versions[0]}", exact=True).wait_for()
        frame.get_by_role("link", name="evaluation report").wait_for()
        screenshot(page, "13-dag-run-tab-reports")
    except BaseException:
        screenshot(page, "FAILED-mlops-tabs")
        raise
    finally:
        context.close()


def _log_in(page: Any, stack: AirflowStack) -> None:
    page.goto("/")
    page.wait_for_url(re.compile(r"/auth/login"))
    page.get_by_label("Username").fill(stack.username)
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
