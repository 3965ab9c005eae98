"""Fairness blocks promotion: EvaluateModelOperator on a real SQLite MLflow store and a parquet snapshot.

Generated rides with a `region` column (a request feature of the label table; its numeric code is a model input).
The label does not depend on the region. A challenger fitted on history where the south never completed learns to
predict "no" there: its positive rate differs strongly by region. The same challenger promotes when the spec has
no `evaluation.fairness`, and is held (registered with verdict "hold", a model card with the breach as a caveat)
when it has one; a fair challenger passes the same bounds. Operators run through execute() with the context
Airflow would give them.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops.core.spec import Evaluation
from airflow_mlops.dags.assets import champion_asset
from airflow_mlops.exceptions import FairnessGroupMissing
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.operators.evaluation import EvaluateModelOperator
from airflow_mlops.operators.model_card import MLflowModelCardOperator
from airflow_mlops.operators.promotion import MLflowPromoteModelOperator
from airflow_mlops.operators.registry import MLflowRegisterModelOperator
from support.training_sets import write_training_set

pytestmark = pytest.mark.integration

MODEL = "fair_rides"
SPEC_FILE = "include/models/fair_rides.yaml"
ROWS = 1600
FAIRNESS = {"groups": ["region"], "metrics": ["demographic_parity_difference", "equal_opportunity_difference"],
            "max": 0.15, "min_group_rows": 30}
# non_regression with a wide margin: the champion comparison lets every challenger here through, so the
# verdict turns on the thresholds and fairness alone
BASE = {"primary_metric": "roc_auc", "metrics": ["roc_auc", "accuracy"], "thresholds": {"roc_auc": {"min": 0.6}},
        "rule": "non_regression", "max_regression": 0.5, "bootstrap_samples": 100}


def evaluation(fairness: dict[str, Any] | None) -> dict[str, Any]:
    """The block as the DAG factory passes it: the validated spec model, dumped to JSON."""
    return Evaluation.model_validate({**BASE, **({"fairness": fairness} if fairness else {})}).model_dump(mode="json")


def context(task_id: str, run_id: str = "manual__1") -> dict[str, Any]:
    dag_id = f"{MODEL}__train"
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, try_number=1, run_id=run_id)
    dag_run = SimpleNamespace(dag_id=dag_id, run_id=run_id, run_type="manual", triggering_user_name="alice")
    return {"ti": ti, "dag_run": dag_run, "run_id": run_id, "logical_date": None,
            "outlet_events": defaultdict(SimpleNamespace), "triggering_asset_events": {}}


def rides(seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south"], ROWS)
    x = rng.normal(size=ROWS)
    return pd.DataFrame({
        "driver_id": rng.integers(1000, 1020, ROWS),
        "event_timestamp": pd.date_range("2026-10-01", periods=ROWS, freq="15min", tz="UTC"),
        "region": region, "region_code": (region == "south").astype(float), "conv_rate": x,
        "completed": (x + rng.normal(0, 0.6, ROWS) > 0).astype(int),
    })


@pytest.fixture
def store(mlops_home: Path, migrated_db: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The snapshot, a fair champion (registered and promoted) and two challengers logged as runs."""
    from sklearn.linear_model import LogisticRegression

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    (mlops_home / "mlflow").mkdir()
    shutil.copy(migrated_db, mlops_home / "mlflow" / "mlflow.db")
    frame = rides()
    record = write_training_set(frame, mlops_home / "training_sets" / f"{MODEL}.parquet",
                                columns=list(frame.columns))
    history = rides(seed=6)
    biased_labels = history["completed"] * (history["region"] == "north")  # the south "never completed"
    features = ["conv_rate", "region_code"]
    models = {
        "champion": LogisticRegression().fit(history[["conv_rate"]], history["completed"]),
        "fair": LogisticRegression(C=0.5).fit(history[features], history["completed"]),
        "biased": LogisticRegression().fit(history[features], biased_labels),
    }
    runs = {name: log_model(model) for name, model in models.items()}
    registered = MLflowRegisterModelOperator(task_id="register", model_name=MODEL, **runs["champion"]
                                             ).execute(context("register", "manual__0"))
    MLflowPromoteModelOperator(
        task_id="promote", model_name=MODEL, version=registered["version"], outlets=[champion_asset(MODEL)],
        evaluation={"promote": True, "champion_version": None, "summary": "first", "reasons": []},
    ).execute(context("promote", "manual__0"))
    return {"record": record, "runs": runs, "champion": registered["version"]}


def log_model(model: Any) -> dict[str, str]:
    import mlflow
    import mlflow.sklearn

    hook = MLflowHook()
    with hook.activated(), mlflow.start_run(experiment_id=hook.experiment_id(MODEL)) as run:
        info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                        pip_requirements=["scikit-learn"])
    return {"run_id": run.info.run_id, "model_uri": info.model_uri}


def judge(store: dict[str, Any], challenger: str, fairness: dict[str, Any] | None) -> dict[str, Any]:
    return EvaluateModelOperator(
        task_id="evaluate", model_name=MODEL, training_set=store["record"], challenger=store["runs"][challenger],
        evaluation=evaluation(fairness), label="completed", split={"method": "time", "test_size": 0.25},
        spec_file=SPEC_FILE,
    ).execute(context("evaluate"))


def artifact(run_id: str, path: str) -> Any:
    import mlflow.artifacts

    with MLflowHook().activated():
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")


def test_a_biased_challenger_is_held_by_fairness_and_would_promote_without_it(store: dict[str, Any]) -> None:
    run_id = store["runs"]["biased"]["run_id"]
    assert judge(store, "biased", None)["promote"] is True

    held = judge(store, "biased", FAIRNESS)
    assert held["promote"] is False and held["passed_fairness"] is False and held["passed_thresholds"] is True
    assert held["champion_version"] == store["champion"]
    breach = next(r for r in held["reasons"] if r.startswith("fairness region: challenger demographic_parity"))
    assert breach.endswith("breaks evaluation.fairness.max 0.15") and float(breach.split()[4]) > 0.3

    report = json.loads(artifact(run_id, "evaluation/report.json"))
    parity = next(g for g in report["fairness"]["groups"] if g["metric"] == "demographic_parity_difference")
    assert parity["champion"] < 0.15 < parity["challenger"] and parity["breached"] is True
    assert "<h2>Fairness</h2>" in artifact(run_id, "evaluation/report.html")
    with MLflowHook().activated() as client:
        assert client.get_run(run_id).data.tags["airflow_mlops.evaluation.verdict"] == "hold"

    registered = MLflowRegisterModelOperator(task_id="register", model_name=MODEL, evaluation=held,
                                             **store["runs"]["biased"]).execute(context("register"))
    MLflowModelCardOperator(task_id="model_card", model_name=MODEL, registered=registered,
                            training_set=store["record"], model_info={}).execute(context("model_card"))
    card = json.loads(artifact(run_id, "model_card/model_card.json"))
    assert any(c.startswith("fairness region: challenger demographic_parity_difference") for c in card["caveats"])
    assert "## Fairness" in artifact(run_id, "model_card/model_card.md")


def test_a_fair_challenger_passes_the_same_bounds(store: dict[str, Any]) -> None:
    result = judge(store, "fair", FAIRNESS)
    assert result["promote"] is True and result["passed_fairness"] is True, result["reasons"]
    report = json.loads(artifact(store["runs"]["fair"]["run_id"], "evaluation/report.json"))
    assert not report["fairness"]["breaches"] and report["fairness"]["skipped_groups"] == {"region": []}


def test_a_group_column_absent_from_the_held_out_rows_fails_naming_column_spec_and_columns(
        store: dict[str, Any]) -> None:
    with pytest.raises(FairnessGroupMissing) as caught:
        judge(store, "fair", {**FAIRNESS, "groups": ["region", "gender"]})
    message = str(caught.value)
    assert isinstance(caught.value, AirflowFailException)  # no retry: the snapshot's columns do not change
    assert message.startswith(f"{SPEC_FILE}: evaluation.fairness.groups: column(s) ['gender'] are not on the "
                              "held-out rows of the training set")
    assert "available columns: ['completed', 'conv_rate', 'driver_id', 'event_timestamp', 'region'" in message
    with MLflowHook().activated() as client:  # refused before any model was scored or anything logged
        tags = client.get_run(store["runs"]["fair"]["run_id"]).data.tags
        assert "airflow_mlops.evaluation.verdict" not in tags
