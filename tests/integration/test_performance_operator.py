"""dag.test() of DelayedLabelPerformanceOperator: a real SQLite MLflow champion, a real prediction log, label files.

The test process trains a small real sklearn model, registers it as champion with its evaluation
metric (`eval.roc_auc`, as EvaluateModelOperator logs it), serves it "offline" by writing its
predictions through the real PredictionLog, and writes two label files: one drawn from the rule the
model learnt (healthy) and one from a changed rule plus request ids nobody served (degraded). A
subprocess with its own migrated Airflow metadata DB runs three one-task DAGs with `dag.test()`
(healthy, degraded, empty window) and reads states, XComs and `mlops.performance.<model>` events.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops import config
from airflow_mlops.core import monitoring_history
from airflow_mlops.core.training import compute_metrics
from airflow_mlops.serving.prediction_log import PredictionLog
from support.airflow_db import migrated_airflow_home
from support.dag_runs import dag_file, program, run_script

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MODEL = "perf_model"
END = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ROWS = 600

DAG_FILE = dag_file("perf")

RUNNER = program("performance_operator_runner")


def _champion(rng: np.random.Generator) -> Any:
    """A real LogisticRegression registered as champion, with the evaluation metric on its run."""
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    from airflow_mlops.hooks.mlflow import MLflowHook

    x = rng.normal(size=(2000, 2))
    y = (x[:, 0] + rng.normal(0, 0.7, 2000) > 0).astype(int)
    model = LogisticRegression().fit(x[:1500], y[:1500])
    holdout = compute_metrics(y[1500:], model.predict_proba(x[1500:])[:, 1], ["roc_auc"])["roc_auc"]
    hook = MLflowHook()
    with hook.activated() as client:
        with mlflow.start_run(experiment_id=hook.experiment_id(MODEL)) as run:
            info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                            pip_requirements=["scikit-learn"])
            mlflow.log_metric("eval.roc_auc", holdout)
        version = mlflow.register_model(info.model_uri, MODEL).version
        client.set_model_version_tag(MODEL, version, "source_run", run.info.run_id)
        client.set_registered_model_alias(MODEL, "champion", version)
    return model, holdout, str(version)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("perf")
    home = tmp / "home"
    old = os.environ.get("MLOPS_HOME")
    os.environ["MLOPS_HOME"] = str(home)
    try:
        return _scenario(tmp, home)
    finally:
        if old is not None:
            os.environ["MLOPS_HOME"] = old


def _scenario(tmp: Path, home: Path) -> dict[str, Any]:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        os.environ.pop(name, None)
    rng = np.random.default_rng(4)
    model, holdout, version = _champion(rng)
    x = rng.normal(size=(ROWS, 2))
    proba = model.predict_proba(x)[:, 1]
    start = END - timedelta(hours=23)
    with PredictionLog(config.paths().predictions_dir, flush_rows=1000) as log:
        for i in range(ROWS):
            log.append({"request_id": f"req-{i}", "time": start + timedelta(seconds=120 * i), "model": MODEL,
                        "model_version": version, "route": "champion", "entity_key": {"driver_id": 1001 + i % 30},
                        "features": {"x0": float(x[i, 0]), "x1": float(x[i, 1])}, "prediction": float(proba[i]),
                        "protocol": "predict"})
    ids = [f"req-{i}" for i in range(ROWS)]
    same_rule = (x[:, 0] + rng.normal(0, 0.7, ROWS) > 0).astype(int)
    new_rule = (x[:, 1] > 0).astype(int)  # the world changed: the model's feature no longer decides
    labels = {"healthy": str(home / "labels" / "healthy"), "degraded": str(home / "labels" / "degraded")}
    Path(labels["healthy"]).mkdir(parents=True)
    Path(labels["degraded"]).mkdir(parents=True)
    pd.DataFrame({"request_id": ids, "completed": same_rule}).to_parquet(Path(labels["healthy"]) / "l.parquet")
    unknown = pd.DataFrame({"request_id": [f"nobody-{i}" for i in range(7)], "completed": [1] * 7})
    pd.concat([pd.DataFrame({"request_id": ids, "completed": new_rule}), unknown]).to_csv(
        Path(labels["degraded"]) / "l.csv", index=False)

    dags = tmp / "dags"
    dags.mkdir()
    (dags / "perf.py").write_text(DAG_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "MLFLOW_TRACKING"))}
    env.update(AIRFLOW_HOME=str(tmp / "airflow"), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", MLOPS_HOME=str(home),
               TEST_DAG_PARAMS=json.dumps({"labels": labels, "end": END.isoformat(), "model": MODEL}))
    migrated_airflow_home(Path(env["AIRFLOW_HOME"]))  # one migrate per session, copied
    done = run_script(RUNNER, str(dags), env=env, cwd=tmp, timeout=400)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (done.stdout + done.stderr)[-6000:]
    result = json.loads(lines[-1][len("RESULT "):])
    result.update(holdout=holdout, version=version, log=done.stdout + done.stderr,
                  healthy_truth=compute_metrics(same_rule, proba, ["roc_auc"])["roc_auc"],
                  degraded_truth=compute_metrics(new_rule, proba, ["roc_auc"])["roc_auc"],
                  history=monitoring_history.history(MODEL, "performance"))
    return result


def test_healthy_labels_emit_nothing(runs: dict[str, Any]) -> None:
    healthy = runs["healthy"]
    assert healthy["state"] == "success" and healthy["events"] == [], healthy
    xcom = healthy["xcom"]
    assert xcom["status"] == "ok" and xcom["champion_version"] == runs["version"]
    assert xcom["value"] == pytest.approx(runs["healthy_truth"]) and xcom["rows"] == ROWS
    assert xcom["threshold"] == pytest.approx(runs["holdout"] - 0.05)
    assert xcom["counts"]["unknown_request_ids"] == 0 and xcom["counts"]["matched"] == ROWS


def test_degraded_labels_emit_exactly_one_performance_event_and_report_unknown_ids(runs: dict[str, Any]) -> None:
    degraded = runs["degraded"]
    assert degraded["state"] == "success", degraded
    assert [e["name"] for e in degraded["events"]] == [f"mlops.performance.{MODEL}"], degraded["events"]
    extra = degraded["events"][0]["extra"]
    assert extra["metric"] == "roc_auc" and extra["value"] == pytest.approx(runs["degraded_truth"])
    assert extra["value"] < extra["threshold"] == pytest.approx(runs["holdout"] - 0.05)
    xcom = degraded["xcom"]
    assert xcom["status"] == "detected" and xcom["counts"]["unknown_request_ids"] == 7
    assert sorted(xcom["unknown_request_id_sample"]) == [f"nobody-{i}" for i in range(7)]
    assert "7 label(s) name request ids with no prediction in the window" in runs["log"]


def test_an_empty_window_is_skipped_with_a_clear_line_and_no_event(runs: dict[str, Any]) -> None:
    empty = runs["empty"]
    assert empty["state"] == "success" and empty["events"] == []
    assert empty["xcom"]["status"] == "skipped" and "no predictions of perf_model logged" in empty["xcom"]["reason"]
    assert "performance check skipped: no predictions of perf_model" in runs["log"]


def test_every_run_is_in_the_monitoring_history(runs: dict[str, Any]) -> None:
    assert [(r["status"], r["detected"]) for r in runs["history"]] == [
        ("ok", False), ("detected", True), ("skipped", False)]
    assert runs["history"][1]["details"]["counts"]["unknown_request_ids"] == 7
    assert runs["history"][1]["model_version"] == runs["version"]
