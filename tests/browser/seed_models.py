"""A model registry and monitoring history as the pipeline writes them, for the Models pages' tests.

Everything goes through the project's real write paths on the current MLOPS_HOME's SQLite MLflow
store: tiny real sklearn models logged with MLflow, `core.evaluation.evaluate` on held-out rows and
its HTML report (as EvaluateModelOperator logs it), `MLflowRegisterModelOperator` (lineage and
verdict tags), `core.model_card` (as MLflowModelCardOperator logs it), `MLflowPromoteModelOperator`
(aliases + audit trail) and `core.monitoring_history.append` (drift and performance records).

Result for MODEL: v1 promoted, then v2 promoted over it (champion), v3 registered as challenger with
verdict "hold"; 6 drift checks (the last one detected) and 3 performance checks.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

MODEL = "ride_completion"
TRAIN_DAG = f"{MODEL}__train"
MONITOR_DAG = f"{MODEL}__monitor"
RETRAIN_REASON = "drift: share 0.45 >= 0.30 (trip_distance_km, surge_multiplier)"
RUN_IDS = ("manual__2026-11-01T08:00:00+00:00", "asset_triggered__2026-11-10T08:00:00+00:00",
           "scheduled__2026-11-20T08:00:00+00:00")
IMPORTANCE_FEATURES = ("trip_distance", "rating")  # the seeded models' two columns: the first carries the label
DRIFT_SHARES = (0.05, 0.08, 0.1, 0.12, 0.2, 0.45)
DRIFT_THRESHOLD = 0.3
START = datetime(2026, 11, 15, 6, tzinfo=UTC)


def use_fresh_home(mp: Any, home: Path) -> None:
    """Point MLOPS_HOME at `home` (a pytest MonkeyPatch) and drop what would send MLflow or history elsewhere."""
    mp.setenv("MLOPS_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT", "MLOPS_MONITORING_DB"):
        mp.delenv(name, raising=False)


@dataclass(frozen=True)
class Seeded:
    champion: str
    challenger: str
    versions: list[str]
    mlflow_runs: dict[str, str]
    drift_points: int


def _context(run_id: str, task_id: str) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id=TRAIN_DAG, task_id=task_id, try_number=1, run_id=run_id)
    dag_run = SimpleNamespace(dag_id=TRAIN_DAG, run_id=run_id, run_type=run_id.split("__")[0],
                              triggering_user_name="alice")
    return {"ti": ti, "dag_run": dag_run, "run_id": run_id, "outlet_events": defaultdict(SimpleNamespace),
            "triggering_asset_events": {}}


def _train_and_evaluate(hook: Any, experiment: str, seed: int, champion: str | None) -> tuple[str, str, dict]:
    """Log one model, evaluate it against the champion on held-out rows, log the report like the operator."""
    import mlflow
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from airflow_mlops.core.evaluation import evaluate
    from airflow_mlops.core.evaluation_report import render_html

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] + rng.normal(scale=1.5 - seed * 0.4, size=400) > 0).astype(int)
    model = LogisticRegression(random_state=seed).fit(x[:300], y[:300])
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                        pip_requirements=["scikit-learn"])
    champion_proba = None
    if champion:
        champion_proba = mlflow.sklearn.load_model(f"models:/{MODEL}/{champion}").predict_proba(x[300:])[:, 1]
    result = evaluate(y[300:], model.predict_proba(x[300:])[:, 1], champion_proba, metrics=["roc_auc", "accuracy"],
                      primary_metric="roc_auc", thresholds={"roc_auc": {"min": 0.5}}, bootstrap_samples=50, seed=7,
                      champion_version=champion)
    report = result.to_dict()
    report["summary"] = result.summary()
    client = hook.get_conn()
    client.log_dict(run.info.run_id, report, "evaluation/report.json")
    client.log_text(run.info.run_id, render_html(report, title=f"{MODEL}: challenger evaluation"),
                    "evaluation/report.html")
    if seed < 2:  # the training job's global importance (v3 has none: the page's empty state)
        _log_importance(client, run.info.run_id, seed, x, y)
    return run.info.run_id, info.model_uri, report


def _log_importance(client: Any, run_id: str, seed: int, x: Any, y: Any) -> None:
    """As jobs/training.py logs it: held_out_importance on the held-out rows, artifact + tag. The seeded model was
    fitted on a bare array; the same fit on named columns (identical coefficients) is what gets explained."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from airflow_mlops.core.explanations import IMPORTANCE_ARTIFACT, TAG_IMPORTANCE, held_out_importance

    frame = pd.DataFrame(x, columns=list(IMPORTANCE_FEATURES))
    named = LogisticRegression(random_state=seed).fit(frame.iloc[:300], y[:300])
    found = held_out_importance(named, frame.iloc[300:], y[300:], metric="roc_auc", seed=7, repeats=3)
    client.log_dict(run_id, found, IMPORTANCE_ARTIFACT)
    client.set_tag(run_id, TAG_IMPORTANCE, IMPORTANCE_ARTIFACT)


def _register(run_id: str, model_uri: str, report: dict, champion: str | None, airflow_run: str) -> str:
    from airflow_mlops.operators.registry import MLflowRegisterModelOperator

    comparison = report.get("comparison") or {}
    evaluation = {"promote": report["verdict"]["promote"], "champion_version": champion,
                  "primary_metric": "roc_auc", "challenger_value": report["challenger"]["metrics"]["roc_auc"],
                  "gain": comparison.get("gain"), "ci": [comparison.get("ci_low"), comparison.get("ci_high")],
                  "reasons": report["verdict"]["reasons"], "summary": report["summary"]}
    retrain = None
    if airflow_run.startswith("asset_triggered__"):  # what the retrain gate hands over for a drift-started run
        retrain = {"reason": RETRAIN_REASON, "trigger": "asset",
                   "events": [{"asset": f"mlops.drift.{MODEL}", "extra": {"share": 0.45}}]}
    op = MLflowRegisterModelOperator(task_id="register", model_name=MODEL, run_id=run_id, model_uri=model_uri,
                                     evaluation=evaluation, retrain=retrain)
    return str(op.execute(_context(airflow_run, "register"))["version"])


def _model_card(hook: Any, version: str, run_id: str, report: dict) -> None:
    from airflow_mlops.core.model_card import build_model_card, render_html

    card = build_model_card(model={"name": MODEL, "description": "Will a requested ride be completed?",
                                   "intended_use": "Dispatch prioritisation", "limitations": "Demo data only"},
                            version=version, run_id=run_id, lineage={"path": "train.parquet", "sha256": "ab" * 32,
                                                                     "rows": 400},
                            evaluation=report, training={"estimator": "sklearn.linear_model.LogisticRegression"})
    client = hook.get_conn()
    client.log_dict(run_id, card, "model_card/model_card.json")
    client.log_text(run_id, render_html(card), "model_card/model_card.html")


def _promote(version: str, champion: str | None, airflow_run: str) -> None:
    from airflow_mlops.operators.promotion import MLflowPromoteModelOperator

    evaluation = {"promote": True, "champion_version": champion, "reasons": [],
                  "summary": f"v{version} beats {('v' + champion) if champion else 'no champion'}"}
    op = MLflowPromoteModelOperator(task_id="promote", model_name=MODEL, version=version, evaluation=evaluation)
    op.execute(_context(airflow_run, "promote"))


def _history(champion: str) -> None:
    from airflow_mlops.core.monitoring_history import CheckRecord, append

    for i, share in enumerate(DRIFT_SHARES):
        status = "detected" if share >= DRIFT_THRESHOLD else "ok"
        append(CheckRecord(model=MODEL, kind="drift", status=status, value=share, threshold=DRIFT_THRESHOLD,
                           rows=1000, model_version=champion, dag_id=MONITOR_DAG, run_id=f"scheduled__{i}",
                           details={"drifted_columns": ["trip_distance"] if status == "detected" else []},
                           time=START + timedelta(hours=6 * i)))
    for i, value in enumerate((0.81, 0.79, 0.74)):
        append(CheckRecord(model=MODEL, kind="performance", status="ok", value=value, threshold=0.7, rows=500,
                           model_version=champion, dag_id=MONITOR_DAG, run_id=f"scheduled__{i}",
                           time=START + timedelta(hours=12 * i)))


def seed_models() -> Seeded:
    """Seed the registry and history of the current MLOPS_HOME (MLFLOW_TRACKING_URI must be unset)."""
    from airflow_mlops.hooks.mlflow import MLflowHook

    hook = MLflowHook()
    experiment = hook.experiment_id(MODEL)
    versions: list[str] = []
    runs: dict[str, str] = {}
    champion: str | None = None
    with hook.activated():
        for seed, airflow_run in enumerate(RUN_IDS):
            run_id, uri, report = _train_and_evaluate(hook, experiment, seed, champion)
            version = _register(run_id, uri, report, champion, airflow_run)
            _model_card(hook, version, run_id, report)
            versions.append(version)
            runs[version] = run_id
            if seed < 2:
                _promote(version, champion, airflow_run)
                champion = version
    assert champion is not None
    _history(champion)
    return Seeded(champion=champion, challenger=versions[-1], versions=versions, mlflow_runs=runs,
                  drift_points=len(DRIFT_SHARES))
