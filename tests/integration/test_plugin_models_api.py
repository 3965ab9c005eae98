"""The Models pages' JSON API and documents against a real SQLite MLflow registry and monitoring history.

The registry is written by the project's own write paths (`browser/seed_models.py`: real sklearn
models, evaluation reports, `MLflowRegisterModelOperator`, model cards, `MLflowPromoteModelOperator`,
`monitoring_history.append`); Airflow's real API app (with the plugin from its entry point and the
auth manager of test_plugin_auth.py) serves it in-process. What the API answers is compared with
what the registry and history say, read back independently through MlflowClient and the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_plugin_auth import Api, _airflow_api, use_test_auth

from browser.seed_models import (
    DRIFT_SHARES,
    DRIFT_THRESHOLD,
    IMPORTANCE_FEATURES,
    MODEL,
    MONITOR_DAG,
    RETRAIN_REASON,
    RUN_IDS,
    TRAIN_DAG,
    Seeded,
    seed_models,
    use_fresh_home,
)
from support.airflow_db import migrated_airflow_home
from support.dag_runs import dag_file, program, run_script

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def seeded_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, Seeded]]:
    root = tmp_path_factory.mktemp("models_api")
    home = root / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        use_fresh_home(mp, home)
        use_test_auth(mp, root / "passwords.json")
        seeded = seed_models()
        with _airflow_api(home, {}) as api:
            yield api, seeded


def get(seeded_api: tuple[Api, Seeded], path: str, user: str = "viewer") -> Any:
    response = seeded_api[0].get(path, user)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
    return response.json()


def registry() -> Any:
    from airflow_mlops.hooks.mlflow import MLflowHook

    return MLflowHook().get_conn()


def test_models_table_row_matches_the_registry_and_history(seeded_api: tuple[Api, Seeded]) -> None:
    seeded = seeded_api[1]
    rows = {row["name"]: row for row in get(seeded_api, "/mlops/api/models")["models"]}
    assert set(rows) == {MODEL, "ride_duration"}  # every shipped spec, registered or not
    # a regression model reads as one: its task and that its primary metric falls when it gets better
    other = rows["ride_duration"]
    assert (other["task"], other["primary_metric"], other["lower_is_better"], other["registered"]) == (
        "regression", "rmse", True, False)
    row = rows[MODEL]
    assert (row["task"], row["lower_is_better"]) == ("binary", False)
    client = registry()
    assert row["champion"]["version"] == str(client.get_model_version_by_alias(MODEL, "champion").version)
    assert row["champion"]["version"] == seeded.champion == "2"
    assert row["challenger"]["version"] == seeded.challenger == "3"
    champion_tags = client.get_model_version(MODEL, seeded.champion).tags
    assert row["champion"]["verdict"]["value"] == pytest.approx(float(champion_tags["airflow_mlops.evaluation.value"]))
    assert row["primary_metric"] == "roc_auc" and row["version_count"] == 3
    assert (row["last_drift"]["value"], row["last_drift"]["status"]) == (DRIFT_SHARES[-1], "detected")
    assert row["last_drift"]["threshold"] == DRIFT_THRESHOLD
    retrain = row["last_retrain"]
    assert (retrain["version"], retrain["trigger"], retrain["airflow"]["run_id"]) == ("3", "scheduled", RUN_IDS[2])
    assert retrain["retrain_reason"] is None  # a scheduled run: nothing triggered it
    assert row["champion"]["retrain_reason"] == RETRAIN_REASON  # v2 came from a drift event


def test_model_has_versions_newest_first_with_lineage_and_the_audit_trail(seeded_api: tuple[Api, Seeded]) -> None:
    model = get(seeded_api, f"/mlops/api/models/{MODEL}")
    assert [v["version"] for v in model["versions"]] == ["3", "2", "1"]
    assert [v["aliases"] for v in model["versions"]] == [["challenger"], ["champion"], []]
    by_version = {v["version"]: v for v in model["versions"]}
    for version, run_id in zip(("1", "2", "3"), RUN_IDS, strict=True):
        assert by_version[version]["airflow"] == {"dag_id": TRAIN_DAG, "run_id": run_id, "task_id": "register"}
        assert by_version[version]["mlflow_run_id"] == seeded_api[1].mlflow_runs[version]
    assert by_version["1"]["promotion"]["demoted_at"] and by_version["2"]["promotion"]["promoted_by"] == "alice"
    audit = [(e["action"], e["version"], e["previous"]) for e in model["audit"]]
    assert audit == [("promote", "1", None), ("promote", "2", "1")]
    assert model["checks"]["performance"]["value"] == pytest.approx(0.74)


def test_version_detail_has_the_card_and_the_evaluation_summary(seeded_api: tuple[Api, Seeded]) -> None:
    detail = get(seeded_api, f"/mlops/api/models/{MODEL}/versions/2")
    assert detail["aliases"] == ["champion"] and detail["documents"] == {"model_card": True, "evaluation": True}
    assert detail["model_card"]["model"]["version"] == "2"
    assert detail["model_card"]["intended_use"] == "Dispatch prioritisation"
    evaluation = detail["evaluation"]
    assert evaluation["primary_metric"] == "roc_auc" and "curves" not in evaluation
    assert evaluation["champion"]["version"] == "1"  # v2 was judged against the champion of its time
    assert evaluation["challenger"]["metrics"]["roc_auc"] == pytest.approx(detail["verdict"]["value"])
    assert [(e["action"], e["version"]) for e in detail["audit"]] == [("promote", "2")]


def test_version_detail_has_the_global_importance_the_run_logged(seeded_api: tuple[Api, Seeded]) -> None:
    from airflow_mlops.core.explanations import IMPORTANCE_ARTIFACT

    run_id = seeded_api[1].mlflow_runs["2"]
    logged = json.loads(Path(registry().download_artifacts(run_id, IMPORTANCE_ARTIFACT)).read_text())
    found = get(seeded_api, f"/mlops/api/models/{MODEL}/versions/2")["explanations"]
    assert found == logged and [f["feature"] for f in found["features"]] == list(IMPORTANCE_FEATURES)
    assert found["scoring"] == "roc_auc" and found["features"][0]["importance"] > 0
    assert get(seeded_api, f"/mlops/api/models/{MODEL}/versions/3")["explanations"] is None  # the empty state
    script = seeded_api[0].get("/mlops/ui/static/mlops.js", "viewer").text
    assert 'id: "importance"' in script and "importance-chart" in script  # the model page draws it


def test_drift_time_series_is_oldest_first_with_thresholds(seeded_api: tuple[Api, Seeded]) -> None:
    series = get(seeded_api, f"/mlops/api/models/{MODEL}/monitoring?kind=drift")["records"]
    assert [r["value"] for r in series] == list(DRIFT_SHARES)
    assert {r["threshold"] for r in series} == {DRIFT_THRESHOLD} and {r["dag_id"] for r in series} == {MONITOR_DAG}
    assert [r["status"] for r in series][-2:] == ["ok", "detected"]
    assert len(get(seeded_api, f"/mlops/api/models/{MODEL}/monitoring?kind=drift&limit=2")["records"]) == 2
    assert get(seeded_api, f"/mlops/api/models/{MODEL}/monitoring?kind=skew")["records"] == []


def test_documents_are_the_logged_html_and_a_missing_one_is_an_empty_state(seeded_api: tuple[Api, Seeded]) -> None:
    api, seeded = seeded_api
    report = api.get(f"/mlops/ui/models/{MODEL}/versions/2/evaluation", "viewer")
    assert report.status_code == 200 and "<svg" in report.text and "challenger evaluation" in report.text
    assert "script-src" not in report.headers["content-security-policy"]
    card = api.get(f"/mlops/ui/models/{MODEL}/runs/{seeded.mlflow_runs['3']}/model_card", "viewer")
    assert card.status_code == 200 and "Dispatch prioritisation" in card.text
    missing = api.get(f"/mlops/ui/models/{MODEL}/versions/1/no_such", "viewer")
    assert missing.status_code == 404 and "unknown document 'no_such'" in missing.json()["detail"]


def test_a_version_without_logged_documents_answers_with_an_empty_state(seeded_api: tuple[Api, Seeded],
                                                                         tmp_path: Path) -> None:
    import mlflow

    from airflow_mlops.hooks.mlflow import MLflowHook

    api, _ = seeded_api
    hook = MLflowHook()
    with hook.activated():
        with mlflow.start_run(experiment_id=hook.experiment_id(MODEL)) as run:
            mlflow.log_param("note", "no documents")
    page = api.get(f"/mlops/ui/models/{MODEL}/runs/{run.info.run_id}/evaluation", "viewer")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert f"No evaluation for {MODEL} run {run.info.run_id}" in page.text
    assert "evaluation/report.html" in page.text
    other = hook.get_conn().create_experiment("someone_else")
    with hook.activated(), mlflow.start_run(experiment_id=other) as foreign:
        pass
    refused = api.get(f"/mlops/ui/models/{MODEL}/runs/{foreign.info.run_id}/evaluation", "viewer")
    assert refused.status_code == 404 and "is not a training run of model" in refused.json()["detail"]


def test_run_reports_list_the_versions_a_training_run_registered(seeded_api: tuple[Api, Seeded]) -> None:
    run = get(seeded_api, f"/mlops/api/runs/{TRAIN_DAG}/{RUN_IDS[1]}")
    assert run["model"] == MODEL and [v["version"] for v in run["versions"]] == ["2"]
    monitor = get(seeded_api, f"/mlops/api/runs/{MONITOR_DAG}/scheduled__5")
    assert [(c["kind"], c["status"]) for c in monitor["checks"]] == [("drift", "detected")]
    assert monitor["versions"] == [] and monitor["validation"] == []


def test_model_page_and_dag_tab(seeded_api: tuple[Api, Seeded]) -> None:
    api, _ = seeded_api
    page = api.get(f"/mlops/ui/models/{MODEL}", "viewer")
    assert page.status_code == 200 and f'data-model="{MODEL}"' in page.text
    assert '<script src="/mlops/ui/static/mlops.js">' in page.text
    tab = api.client.get(f"/mlops/ui/dags/{TRAIN_DAG}", headers={"Authorization": f"Bearer {api.tokens['viewer']}"},
                         follow_redirects=False)
    assert tab.status_code == 307 and tab.headers["location"] == f"/mlops/ui/models/{MODEL}"
    other = api.get("/mlops/ui/dags/mlops_features", "viewer")
    assert other.status_code == 200 and "belongs to no model" in other.text
    script = api.get("/mlops/ui/static/mlops.js", "viewer")
    assert script.status_code == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "innerHTML" not in script.text and "http://" not in script.text.replace("http://www.w3.org/2000/svg", "")


def test_experiment_readout_page_follows_the_experiment_record(seeded_api: tuple[Api, Seeded]) -> None:
    """No experiment: an empty state (404); started by the start task: the readout with its arms and trail."""
    from types import SimpleNamespace

    from airflow_mlops.operators.experiments import StartExperimentOperator
    from airflow_mlops.plugin.files import HTML_CSP

    api, seeded = seeded_api
    empty = api.get(f"/mlops/ui/models/{MODEL}/experiment", "viewer")
    assert empty.status_code == 404 and "No online experiment for" in empty.text
    assert get(seeded_api, f"/mlops/api/models/{MODEL}")["experiment"] is None
    run = SimpleNamespace(dag_id=TRAIN_DAG, run_id="manual__experiment", run_type="manual", triggering_user_name="ann")
    ti = SimpleNamespace(dag_id=TRAIN_DAG, task_id="start_experiment", try_number=1, run_id=run.run_id)
    started = StartExperimentOperator(
        task_id="start_experiment", model_name=MODEL, version=seeded.challenger, wait_for_serving=False,
        experiment={"type": "ab", "traffic": 0.2, "metric": "accuracy"},
        evaluation={"promote": True, "champion_version": seeded.champion, "summary": "passed"},
    ).execute({"ti": ti, "dag_run": run, "run_id": run.run_id, "triggering_asset_events": {}})  # type: ignore[arg-type]
    record = started["experiment"]
    page = api.get(f"/mlops/ui/models/{MODEL}/experiment", "viewer")
    assert page.status_code == 200 and page.headers["content-security-policy"] == HTML_CSP
    assert record["id"] in page.text and "<script" not in page.text
    assert f"v{seeded.champion}</td><td class=\"muted\">champion</td><td class=\"n\">80.0 %" in page.text
    assert "experiment_start</b> v3" in page.text and "by ann" in page.text
    summary = get(seeded_api, f"/mlops/api/models/{MODEL}")["experiment"]
    assert (summary["id"], summary["status"], summary["arms"]) == (record["id"], "running", {"2": 0.8, "3": 0.2})
    assert api.get(f"/mlops/ui/models/{MODEL}/experiment").status_code == 401


# -- operator extra links, computed by Airflow's real task runner -------------------------------------------
LINKS_DAG = dag_file("links_probe")

LINKS_RUNNER = program("plugin_models_api_links_runner")


def test_extra_links_are_computed_by_the_task_runner(tmp_path: Path) -> None:
    import os

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "links_probe.py").write_text(LINKS_DAG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "MLOPS_"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(dags), MLOPS_HOME=str(tmp_path / "home"),
               AIRFLOW__API__BASE_URL="http://localhost:8080/airflow/")
    migrated_airflow_home(Path(env["AIRFLOW_HOME"]))  # one migrate per session, copied
    done = run_script(LINKS_RUNNER, env=env, cwd=tmp_path, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, (done.stdout + done.stderr)[-4000:]
    links = json.loads(lines[-1][len("RESULT "):])
    prefix = "/airflow/mlops/ui/models/ride_completion"  # under [api] base_url's path
    assert links == {
        "train:_link_ModelPageLink": f"{prefix}?mlflow_run=abc123",
        "evaluate:_link_EvaluationReportLink": f"{prefix}/runs/abc123/evaluation",
        "register:_link_ModelVersionLink": f"{prefix}?version=3",
        "drift:_link_DriftHistoryLink": f"{prefix}#drift",
    }
    # the failed evaluate's link comes from its own argument: no lookup of the result it never pushed
    assert "XCom not found" not in done.stdout + done.stderr, (done.stdout + done.stderr)[-4000:]
