"""dag.test() of the real training DAG (`ride_completion__train`, built from the shipped spec) on demo data.

On the session's trained demo state (`support/demo_state.py`; its own Airflow metadata DB, MLOPS_HOME
and SQLite MLflow store):

1. as built: the feature pipeline on 5 days of demo data, then the training DAG: v1 is registered,
   evaluated with no champion (thresholds alone) and promoted to champion;
2. the training DAG again on the same data: v2 is registered as challenger, its roc_auc gain over v1
   on the same held-out rows is 0 with a CI of [0, 0], so the rule "improvement" keeps v1;
3. five more days whose labels are coin flips (label_noise=1): the held-out rows are all noise,
   roc_auc falls below the spec's 0.7 and evaluate fails the run; nothing is registered.

The runner reads task states and asset events from the metadata DB (fine in a test, never in a task).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.demo_state import checkout_trained_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PROJECT = Path(__file__).resolve().parents[2]
MODEL = "ride_completion"

RUNNER = """
import json
import sys

from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from mlflow import MlflowClient
from sqlalchemy import select

from airflow_mlops import demo
from airflow_mlops.core import audit
from airflow_mlops.dags import build_dags
from airflow_mlops.hooks.mlflow import MLflowHook

MODEL = "ride_completion"
dags = build_dags()


def registry():
    client = MLflowHook().get_conn()
    versions = client.search_model_versions(f"name = '{MODEL}'")
    aliases = {}
    for alias in ("champion", "challenger"):
        try:
            aliases[alias] = str(client.get_model_version_by_alias(MODEL, alias).version)
        except Exception:
            aliases[alias] = None
    model = client.get_registered_model(MODEL)
    return {"versions": {str(v.version): dict(v.tags) for v in versions}, "aliases": aliases,
            "history": [e.__dict__ for e in audit.history(model.tags)],
            "descriptions": {str(v.version): v.description for v in versions}}


def described(run_id):
    with create_session() as session:
        tasks = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                     .where(TaskInstance.run_id == run_id)).all())
        events = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetModel.name == f"mlops.model.{MODEL}.champion").order_by(AssetEvent.id))
        events = [e.extra for e in events]
    return {"tasks": {t: str(s) for t, s in tasks.items()}, "events": events}


def run(dag_id):
    dag_run = dags[dag_id].test()
    return {"state": str(dag_run.state), **described(dag_run.run_id)}


results = {}
# the session's trained demo state: its first training run (run id in argv[1]) is done
results["first"] = {**described(sys.argv[1]), "registry": registry()}
results["second"] = {**run(f"{MODEL}__train"), "registry": registry()}
demo.write_demo_batches(days=5, start="2026-10-15", label_noise=1.0)
results["features_noisy"] = run("mlops_features")
results["degraded"] = {**run(f"{MODEL}__train"), "registry": registry()}
print("RESULT " + json.dumps(results, default=str))
"""


@pytest.fixture(scope="module")
def runs() -> dict[str, Any]:
    # dag.test() syncs the DAG from the dags folder's bundle: the project's own DAG file.
    demo = checkout_trained_demo()
    results = demo.run(RUNNER, demo.built["train"]["run_id"], timeout=850)[0]
    results["features"] = demo.built["features"]
    results["first"]["state"] = demo.built["train"]["state"]
    return results


def test_first_run_registers_v1_and_promotes_it_to_champion(runs: dict[str, Any]) -> None:
    assert runs["features"]["state"] == "success", runs["features"]
    first = runs["first"]
    assert first["state"] == "success" and set(first["tasks"].values()) == {"success"}, first["tasks"]
    reg = first["registry"]
    assert reg["aliases"] == {"champion": "1", "challenger": "1"}
    tags = reg["versions"]["1"]
    assert tags["airflow_mlops.evaluation.verdict"] == "promote"
    assert tags["airflow_mlops.evaluation.champion_version"] == "none"
    assert tags[audit_tag("was_champion")] == "true" and tags[audit_tag("previous_champion")] == "none"
    assert tags["airflow_mlops.model_card"].endswith("model_card/model_card.html")
    assert "roc_auc" in reg["descriptions"]["1"]
    [event] = reg["history"]
    assert (event["action"], event["version"], event["previous"]) == ("promote", "1", None)
    # dag.test() triggers as user "dag_test"; a scheduled run would say "airflow:scheduled"
    assert event["dag_id"] == f"{MODEL}__train" and event["actor"] and event["trigger"].startswith("manual")
    [champion_event] = first["events"]
    assert champion_event["version"] == "1" and champion_event["metrics"]["roc_auc"] > 0.7, champion_event


def test_second_run_on_the_same_data_registers_v2_but_keeps_v1_champion(runs: dict[str, Any]) -> None:
    second = runs["second"]
    assert second["state"] == "success", second["tasks"]
    assert second["tasks"]["promote"] == "skipped" and second["tasks"]["register"] == "success"
    reg = second["registry"]
    assert reg["aliases"] == {"champion": "1", "challenger": "2"}
    tags = reg["versions"]["2"]
    assert tags["airflow_mlops.evaluation.verdict"] == "hold"
    assert tags["airflow_mlops.evaluation.champion_version"] == "1"
    assert float(tags["airflow_mlops.evaluation.gain"]) == 0.0
    assert tags[audit_tag("decision")] == "not_promoted" and "not above 0" in tags[audit_tag("decision_reason")]
    assert len(reg["history"]) == 1, "no alias move, no new audit entry"
    assert len(second["events"]) == 1, "no champion event from a skipped promotion"


def test_degraded_data_is_refused_by_thresholds(runs: dict[str, Any]) -> None:
    degraded = runs["degraded"]
    assert degraded["state"] == "failed"
    assert degraded["tasks"]["evaluate"] == "failed", degraded["tasks"]
    assert degraded["tasks"]["register"] == "upstream_failed"
    reg = degraded["registry"]
    assert sorted(reg["versions"]) == ["1", "2"], "nothing registered for a refused model"
    assert reg["aliases"] == {"champion": "1", "challenger": "2"}


def audit_tag(name: str) -> str:
    return f"airflow_mlops.{name}"
