"""Manual approval in a real Airflow: the HITL task waits, a human answers over the REST API.

The spec under test is the shipped ride_completion spec with `promotion.approval: manual` and rule
`non_regression` (so a retrain on the same data is promotable and a human is asked again):

1. the feature pipeline runs on 4 days of demo data and emits `mlops.features.driver_hourly_stats`
   (rows > 0); that event alone makes the scheduler start the training DAG (run type asset_triggered,
   no catch-up run), whose MLflow run is tagged with that Airflow run. It stops at `approve` awaiting
   input; the question's body carries the evaluation summary and the model-card
   link; `PATCH …/hitlDetails` with Approve + reason resumes it and v1 becomes champion, with the
   approver and reason in the registry;
2. after a spec edit (its description: a new fingerprint, the same model), a manual training run asks
   again (on unchanged data and spec it would be a repeat: nothing registered, nothing asked); Reject +
   reason skips `promote`:
   v2 stays challenger, tagged rejected with who and why, and the audit trail has the rejection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.airflow_client import AirflowClient, wait_for
from support.airflow_stack import PROJECT, AirflowStack, airflow_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

MODEL = "ride_completion"
FEATURES, TRAINING = "mlops_features", f"{MODEL}__train"
FEATURE_ASSET = "mlops.features.driver_hourly_stats"
RUN_TIMEOUT_S = 420
# Airflow 3.3.2 race: the worker that parks the task in awaiting_input reports "success" to the
# executor after the TI is parked. If the answer has already resumed the task by then, the scheduler
# sees "executor says success, TI is running" and marks the resumed try FAILED. A human is slower
# than that; a script instead waits for the observable state that closes the race: the scheduler has
# processed that executor event (its "TaskInstance Finished" line for the parked try), so no late
# "success" is left to collide with the resumed try.
PARKED_EVENT = "TaskInstance Finished: dag_id={dag_id}, task_id=approve, run_id={run_id}, "


def _manual_spec(folder: Path) -> Path:
    text = (PROJECT / "include" / "models" / f"{MODEL}.yaml").read_text()
    assert "approval: auto" in text and "rule: improvement" in text
    folder.mkdir(parents=True)
    (folder / f"{MODEL}.yaml").write_text(
        text.replace("approval: auto", "approval: manual").replace("rule: improvement", "rule: non_regression"))
    return folder


def _question(client: AirflowClient, stack: AirflowStack, run_id: str) -> dict[str, Any]:
    def asked() -> dict[str, Any] | None:
        stack.check_alive()
        details = client.request("GET", f"/dags/{TRAINING}/dagRuns/{run_id}/hitlDetails")["hitl_details"]
        waiting = [d for d in details if d["task_instance"]["task_id"] == "approve"]
        return waiting[0] if waiting and waiting[0]["task_instance"]["state"] == "awaiting_input" else None

    question = dict(wait_for(asked, RUN_TIMEOUT_S, f"{TRAINING} {run_id} to ask for approval", interval=1.0))
    scheduler_log = stack.log_dir / "scheduler.log"
    parked = PARKED_EVENT.format(dag_id=TRAINING, run_id=run_id)
    wait_for(lambda: parked in scheduler_log.read_text(errors="replace"), RUN_TIMEOUT_S,
             f"the scheduler to process the executor event of the parked approve task ({parked!r})",
             interval=0.5, on_poll=stack.check_alive)
    return question


def _answer(client: AirflowClient, run_id: str, option: str, reason: str) -> dict[str, Any]:
    return dict(client.request(
        "PATCH", f"/dags/{TRAINING}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails",
        json={"chosen_options": [option], "params_input": {"reason": reason}}))


def _states(client: AirflowClient, run_id: str) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in client.task_instances(TRAINING, run_id)}


def _registry(home: Path) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")


def test_a_human_approves_then_rejects_over_the_rest_api(tmp_path: Path) -> None:
    from airflow_mlops.core import audit

    home = tmp_path / "home"
    models = _manual_spec(tmp_path / "models")
    with airflow_stack(home, components=("scheduler", "dag-processor", "api-server"), dag_ids=[FEATURES, TRAINING],
                       extra_env={"MLOPS_MODELS_DIR": str(models)}) as stack:
        stack.run(["generate-data", "--days", "4"], name="generate-data", exe="airflow-mlops")
        client = stack.client()
        placeholder = client.unpause_without_catchup(TRAINING)
        feature_run = client.trigger_due_run(FEATURES)
        client.unpause(FEATURES)
        feature_run = client.wait_for_run(FEATURES, feature_run["dag_run_id"], RUN_TIMEOUT_S, on_poll=stack.check_alive)
        client.set_paused(FEATURES, True)
        assert feature_run["state"] == "success", feature_run
        run_id = _first_asset_run(client, stack)

        question = _question(client, stack, run_id)
        assert question["subject"] == f"Promote {MODEL} to champion?"
        assert "no champion yet" in question["body"] and "model_card.html" in question["body"], question["body"]
        answer = _answer(client, run_id, "Approve", "first model, thresholds met")
        assert answer["responded_by"]["name"] == stack.username
        finished = client.wait_for_run(TRAINING, run_id, RUN_TIMEOUT_S, on_poll=stack.check_alive)
        states = _states(client, run_id)
        assert finished["state"] == "success" and states["promote"] == "success", states
        _assert_feature_event_started(client, feature_run, run_id)
        runs = [r for r in client.dag_runs(TRAINING) if r["dag_run_id"] != placeholder]
        assert [r["run_type"] for r in runs] == ["asset_triggered"], "no catch-up or other run, only the event's"

        registry = _registry(home)
        run_tags = registry.get_run(registry.get_model_version(MODEL, "1").run_id).data.tags
        assert (run_tags.get("airflow_mlops.airflow.dag_id"), run_tags.get("airflow_mlops.airflow.run_id")) == (
            TRAINING, run_id), run_tags
        assert str(registry.get_model_version_by_alias(MODEL, "champion").version) == "1"
        tags = registry.get_model_version(MODEL, "1").tags
        assert (tags[audit.TAG_DECISION], tags[audit.TAG_DECIDED_BY]) == ("approved", stack.username)
        assert tags[audit.TAG_DECISION_REASON] == "first model, thresholds met"

        # The task re-reads the spec when it runs: an edited description is a new spec hash, hence a new
        # fingerprint, while the model (same data, seed and params) is the same one, so non_regression holds.
        spec = models / f"{MODEL}.yaml"
        text = spec.read_text()
        assert "\ndescription: " in text
        spec.write_text(text.replace("\ndescription: ", "\ndescription: (edited) ", 1))
        second = client.trigger(TRAINING)["dag_run_id"]
        _question(client, stack, second)
        _answer(client, second, "Reject", "night slice regressed")
        finished = client.wait_for_run(TRAINING, second, RUN_TIMEOUT_S, on_poll=stack.check_alive)
        states = _states(client, second)
        assert finished["state"] == "success" and states["promote"] == "skipped", states
        assert str(registry.get_model_version_by_alias(MODEL, "champion").version) == "1"
        assert str(registry.get_model_version_by_alias(MODEL, "challenger").version) == "2"
        tags = registry.get_model_version(MODEL, "2").tags
        assert (tags[audit.TAG_DECISION], tags[audit.TAG_DECIDED_BY]) == ("rejected", stack.username)
        assert tags[audit.TAG_DECISION_REASON] == "night slice regressed"
        actions = [(e.action, e.version, e.actor) for e in audit.history(registry.get_registered_model(MODEL).tags)]
        assert actions == [("approve", "1", stack.username), ("promote", "1", "airflow:asset_triggered"),
                           ("reject", "2", stack.username)], actions
        assert stack.network_attempts() == "", stack.network_attempts()
        client.close()


def _assert_feature_event_started(client: AirflowClient, feature_run: dict[str, Any], training_run_id: str) -> None:
    events = [e for e in client.asset_events(FEATURE_ASSET) if e["source_run_id"] == feature_run["dag_run_id"]]
    assert len(events) == 1, f"expected one {FEATURE_ASSET} event from {feature_run['dag_run_id']}, got {events}"
    event = events[0]
    assert (event["source_dag_id"], event["source_task_id"]) == (FEATURES, "materialize"), event
    assert event["extra"]["feature_view"] == "driver_hourly_stats", event
    assert event["extra"]["rows"] > 0, f"materialize emitted an event without new rows: {event['extra']}"
    created = {(r["dag_id"], r["run_id"]) for r in event["created_dagruns"]}
    assert (TRAINING, training_run_id) in created, f"event {event['id']} did not create the run: {created}"


def _first_asset_run(client: AirflowClient, stack: AirflowStack) -> str:
    def started() -> str | None:
        stack.check_alive()
        runs = client.dag_runs(TRAINING, run_type="asset_triggered")
        return runs[0]["dag_run_id"] if runs else None

    return str(wait_for(started, RUN_TIMEOUT_S, f"{TRAINING} to be started by the feature event", interval=2.0))

