"""dag.test() of the real training DAG (`ride_completion__train`, built from the shipped spec) on demo data.

On the session's trained demo state (`support/demo_state.py`; its own Airflow metadata DB, MLOPS_HOME
and SQLite MLflow store):

1. as built: the feature pipeline on 5 days of demo data, then the training DAG: v1 is registered,
   evaluated with no champion (thresholds alone) and promoted to champion;
2. the training DAG again, twice, on the same data, spec, code and params: each run's training fingerprint
   equals v1's, so `register` registers nothing (the run is tagged `repeat_of=1`), `model_card` skips with
   the reason and `promote` is skipped: the registry (versions and their tags, aliases, audit trail) is
   exactly as after step 1;
3. five more days whose labels are coin flips (label_noise=1): the held-out rows are all noise,
   roc_auc falls below the spec's 0.7 and evaluate fails the run; nothing is registered.

The runner reads task states and asset events from the metadata DB (fine in a test, never in a task).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.dag_runs import program
from support.demo_state import checkout_trained_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PROJECT = Path(__file__).resolve().parents[2]
MODEL = "ride_completion"

RUNNER = program("training_dag_runner")


@pytest.fixture(scope="module")
def runs() -> dict[str, Any]:
    # dag.test() syncs the DAG from the dags folder's bundle: the project's own DAG file.
    demo = checkout_trained_demo()
    results, log = demo.run(RUNNER, demo.built["train"]["run_id"], timeout=850)
    results["log"] = log
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


def test_identical_retrains_register_nothing_and_leave_the_registry_as_it_was(runs: dict[str, Any]) -> None:
    first = runs["first"]["registry"]
    fingerprint = first["versions"]["1"]["airflow_mlops.fingerprint"]
    assert len(fingerprint) == 64 and len(first["versions"]["1"]["airflow_mlops.spec_sha256"]) == 64
    for name in ("second", "third"):
        again = runs[name]
        assert again["state"] == "success", again["tasks"]
        assert again["tasks"]["register"] == "success" and again["tasks"]["evaluate"] == "success", again["tasks"]
        assert again["tasks"]["model_card"] == "skipped" and again["tasks"]["promote"] == "skipped", again["tasks"]
        assert again["run_tags"]["airflow_mlops.fingerprint"] == fingerprint
        assert again["run_tags"]["airflow_mlops.repeat_of"] == "1"
        reg = again["registry"]
        # The retrain gate records each run's start on the registered model (the cooldown clock); nothing else moves.
        started = "airflow_mlops.retrain.last_started"
        assert {k: v for k, v in reg["model_tags"].items() if k != started} == {
            k: v for k, v in first["model_tags"].items() if k != started}
        assert {k: v for k, v in reg.items() if k != "model_tags"} == {
            k: v for k, v in first.items() if k != "model_tags"}, "versions, tags, aliases, audit as before"
        assert len(again["events"]) == 1, "no champion event from a repeat"


def test_a_repeat_says_why_in_the_log(runs: dict[str, Any]) -> None:
    assert "model card skipped: ride_completion v1 (run " in runs["log"], runs["log"][-3000:]


def test_degraded_data_is_refused_by_thresholds(runs: dict[str, Any]) -> None:
    assert runs["features_noisy"]["state"] == "success", runs["features_noisy"]  # else nothing new to train on
    degraded = runs["degraded"]
    assert degraded["state"] == "failed"
    assert degraded["tasks"]["evaluate"] == "failed", degraded["tasks"]
    assert degraded["tasks"]["register"] == "upstream_failed"
    reg = degraded["registry"]
    assert sorted(reg["versions"]) == ["1"], "nothing registered for a refused model"
    assert reg["aliases"] == {"champion": "1", "challenger": "1"}


def audit_tag(name: str) -> str:
    return f"airflow_mlops.{name}"
