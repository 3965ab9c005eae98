"""dag.test() of EvidentlyDriftCheckOperator against a real SQLite MLflow registry and a real prediction log.

Setup (in a subprocess with its own migrated Airflow metadata DB, MLOPS_HOME and MLflow store):
model `drift_demo` v1 is champion, trained on a 2,000-row parquet snapshot recorded in its tag
`airflow_mlops.training_set.path`; its training run logged `training/summary.json` with the four
feature columns. PredictionLog (the serving app's writer) logs predictions in four 6-hour windows:

- drifted: 1,500 rows, trip_km and surge shifted, avg_rating never sent (sample_rows=1000 → sampled);
- quiet: 400 rows drawn like the snapshot;
- empty: no rows; few: 20 rows (< min_rows=100).

One small DAG per window runs the operator with `outlets=[drift_alias(model)]`; then the snapshot is
moved away and the drifted DAG runs again. The runner reads task states, asset events, the extra
link XCom and the monitoring history (fine in a test, never in a task).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.dag_runs import dag_file, program, run_in_fresh_airflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MODEL = "drift_demo"

DAG_FILE = dag_file("drift_dags")

RUNNER = program("drift_operator_runner")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("drift_operator")
    (tmp / "dags").mkdir()
    (tmp / "dags" / "drift_dags.py").write_text(DAG_FILE)
    result, output = run_in_fresh_airflow(tmp, RUNNER, str(tmp / "dags"), dags_folder=tmp / "dags", timeout=540)
    return {**result, "home": tmp / "home", "output": output}


def test_drift_emits_exactly_one_event_with_share_columns_report_and_window(runs: dict[str, Any]) -> None:
    drifted = runs["drifted"]
    assert (drifted["state"], drifted["task"]) == ("success", "success")
    assert [e["asset"] for e in drifted["events"]] == [f"mlops.drift.{MODEL}"]
    event = drifted["events"][0]
    extra = event["extra"]
    assert event["aliases"] == [f"mlops.drift.{MODEL}.detected"]
    assert extra["share"] == 0.75 and extra["threshold"] == 0.5 and extra["model_version"] == "1"
    assert set(extra["drifted_columns"]) == {"trip_km", "surge", "avg_rating"}
    trip, surge, rating = (extra["drifted_columns"][c] for c in ("trip_km", "surge", "avg_rating"))
    assert trip["method"] == "ks" and trip["threshold"] == 0.01 and trip["score"] < 0.01  # a p-value
    assert surge["method"] == "psi" and surge["threshold"] == 0.2 and surge["score"] >= 0.2  # a distance
    assert rating == {"method": "psi", "score": None, "threshold": 0.2, "reason": "missing in current data"}
    assert extra["window"] == {"start": "2026-11-20T00:00:00+00:00", "end": "2026-11-20T06:00:00+00:00"}
    # The log read samples to about sample_rows (core.prediction_window): fewer rows, the window size stated.
    assert extra["sampled_from"] == 1500 and 300 < extra["rows"] <= 1000
    relpath = f"{MODEL}/drift_drifted/{drifted['run_id']}".replace(":", "_").replace("+", "_")
    assert extra["report_uri"] == f"/mlops/reports/drift/{relpath}/report.html"
    assert drifted["link"] == extra["report_uri"]
    result = drifted["result"]
    assert result["status"] == "detected" and result["report"]["url"] == extra["report_uri"]
    page = Path(result["report"]["html"]).read_text()
    assert "uniform random sample (seed 0" in page and "of 1,500 rows" in page
    stored = json.loads(Path(result["report"]["json"]).read_text())
    assert stored["drifted_columns"] == extra["drifted_columns"] and stored["model_version"] == "1"
    assert {c["column"]: c["evidently_status"] for c in stored["columns"]} == {
        "trip_km": "FAIL", "surge": "FAIL", "conv_rate": "SUCCESS", "avg_rating": None}
    logged = [f"monitoring/drift/{stamp}/{name}" for stamp in ("2026-11-20T060000Z", "2026-11-20T120000Z")
              for name in ("report.html", "result.json")]  # the drifted and the quiet run, on the champion's run
    assert sorted(runs["artifacts"]) == logged


def test_no_drift_emits_no_event_but_is_recorded(runs: dict[str, Any]) -> None:
    quiet = runs["quiet"]
    assert (quiet["state"], quiet["task"], quiet["events"]) == ("success", "success", [])
    assert quiet["result"]["status"] == "ok" and quiet["result"]["share"] < 0.5
    assert quiet["result"]["sampled_from"] == 400 and quiet["result"]["sampling"]["current_total"] == 400
    assert 0 < quiet["result"]["rows"] == quiet["result"]["sampling"]["current_rows"] <= 400
    assert Path(quiet["result"]["report"]["html"]).is_file() and quiet["link"] == quiet["result"]["report"]["url"]


@pytest.mark.parametrize(("name", "rows"), [("empty", 0), ("few", 20)])
def test_a_window_below_min_rows_is_skipped_with_a_clear_reason_and_no_event(runs: dict[str, Any], name: str,
                                                                             rows: int) -> None:
    got = runs[name]
    assert (got["state"], got["task"], got["events"]) == ("success", "success", [])
    assert got["result"]["status"] == "skipped" and got["result"]["report"] is None and not got["link"]
    assert f"holds {rows} predictions of {MODEL}, fewer than monitoring.min_rows=100" in got["result"]["reason"]
    assert f"drift check skipped: {got['result']['reason']}" in runs["output"]  # the task log says it


def test_a_missing_snapshot_fails_naming_the_model_version_and_the_path(runs: dict[str, Any]) -> None:
    missing = runs["missing"]
    assert (missing["state"], missing["task"], missing["events"]) == ("failed", "failed", [])
    error = runs["missing_error"]
    assert error.startswith("DriftReferenceMissing: drift_demo version 1 (champion): training-set snapshot ")
    assert "snapshot.parquet" in error and "does not exist" in error and "retrain" in error


def test_every_run_appends_one_history_record(runs: dict[str, Any]) -> None:
    history = runs["history"]
    assert [r["status"] for r in history] == ["detected", "ok", "skipped", "skipped", "error", "error"]
    detected = history[0]
    assert detected["value"] == 0.75 and detected["threshold"] == 0.5 and detected["model_version"] == "1"
    assert detected["details"]["report_uri"] == runs["drifted"]["result"]["report_uri"]
    assert detected["details"]["sampling"]["sampled"] is True and detected["dag_id"] == "drift_drifted"
    assert history[2]["details"]["reason"].startswith("window 2026-11-20T12:00:00+00:00 → ")
    assert "does not exist" in history[4]["details"]["error"]
