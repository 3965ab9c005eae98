"""The retrain gate: cooldown, "retrained because..." lineage, and one winner among concurrent gates.

dag.test() runs, in a subprocess with its own migrated Airflow metadata DB, SQLite MLflow store and a
dags folder holding the project's DAG file plus a small `gate_test` DAG (gate -> register -> after):

1. a manual run passes (log says so), registers v1 with `retrain.trigger=manual`;
2. a drift-triggered run right after is skipped by the gate, and so is everything downstream;
3. the real `ride_completion__train` DAG, drift-triggered within its cooldown, skips every task;
4. a drift-triggered run 7 h after the last start passes; v2 carries the reason line and the events;
5. a feature-triggered run inside the cooldown passes (new data is a reason of its own).

`dag.test()` can only create manual runs. The runner turns its run into what the scheduler makes
for an asset-triggered run (run_type asset_triggered, real AssetEvent rows attached as the run's
consumed events) by wrapping `get_or_create_dagrun`; the task then reads
`context["triggering_asset_events"]` through the real execution API, as under a scheduler.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from support.dag_runs import dag_file, program, run_in_fresh_airflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PROJECT = Path(__file__).resolve().parents[2]

GATE_DAG = dag_file("retrain_gate")

RUNNER = program("retrain_gate_runner")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    tmp_path = tmp_path_factory.mktemp("retrain_gate")
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(PROJECT / "dags" / "mlops_models.py", dags / "mlops_models.py")
    (dags / "gate_test.py").write_text(GATE_DAG)
    return run_in_fresh_airflow(tmp_path, RUNNER, dags_folder=dags, timeout=500)


def test_manual_run_passes_and_the_version_says_why(runs: tuple[dict[str, Any], str]) -> None:
    results, log = runs
    manual = results["manual"]
    assert manual["tasks"] == {"retrain_gate": "success", "register": "success", "after": "success"}, manual
    tags = manual["registry"]["versions"]["1"]
    assert tags["airflow_mlops.retrain.trigger"] == "manual"
    assert tags["airflow_mlops.retrain.reason"].startswith(f"manual: run {manual['run_id']}")
    assert "airflow_mlops.retrain.events" not in tags
    assert manual["registry"]["last_started"]["run_id"] == manual["run_id"]
    assert "manual run: the cooldown applies only to runs started by" in log


def test_drift_event_within_cooldown_skips_the_whole_run(runs: tuple[dict[str, Any], str]) -> None:
    results, log = runs
    within = results["drift_within"]
    assert within["state"] == "success"
    assert within["tasks"] == {"retrain_gate": "skipped", "register": "skipped", "after": "skipped"}, within
    assert sorted(within["registry"]["versions"]) == ["1"], "nothing registered"
    assert within["registry"]["last_started"]["run_id"] == results["manual"]["run_id"], "a skip is no start"
    # the age depends on how fast this machine ran the two runs: read it, never assume it
    ages = re.findall(r"gate_model: not retraining — the last retrain started (\d+) min ago", log)
    assert ages and all(int(age) < 6 * 60 for age in ages), f"no skip line naming an age within the cooldown: {ages}"
    assert "within the cooldown of 6h" in log


def test_real_training_dag_is_skipped_by_its_gate_within_cooldown(runs: tuple[dict[str, Any], str]) -> None:
    training = runs[0]["training_within"]
    assert training["state"] == "success"
    assert training["tasks"] and set(training["tasks"].values()) == {"skipped"}, training["tasks"]
    assert "retrain_gate" in training["tasks"] and "build_training_set" in training["tasks"]


def test_drift_event_after_cooldown_retrains_and_records_the_reason(runs: tuple[dict[str, Any], str]) -> None:
    after = runs[0]["drift_after"]
    assert after["tasks"] == {"retrain_gate": "success", "register": "success", "after": "success"}, after
    tags = after["registry"]["versions"]["2"]
    assert tags["airflow_mlops.retrain.trigger"] == "asset"
    reason = tags["airflow_mlops.retrain.reason"]
    assert reason.startswith("drift: share 0.45 >= 0.3 (trip_distance_km, surge_multiplier) at 20"), reason
    [event] = json.loads(tags["airflow_mlops.retrain.events"])["events"]
    assert event["asset"] == "mlops.drift.gate_model" and event["extra"]["share"] == 0.45
    assert event["extra"]["drifted_columns"]["trip_distance_km"]["score"] == 0.41
    assert after["registry"]["last_started"]["run_id"] == after["run_id"]
    assert after["registry"]["last_started"]["trigger"] == "asset"


def test_feature_event_within_cooldown_passes(runs: tuple[dict[str, Any], str]) -> None:
    features = runs[0]["features_within"]
    assert features["tasks"]["retrain_gate"] == "success" and features["tasks"]["register"] == "success"
    tags = features["registry"]["versions"]["3"]
    assert tags["airflow_mlops.retrain.reason"].startswith("features: gate_view got new rows at "), tags


def gate_context(run_id: str, events: list[Any]) -> dict[str, Any]:
    dag_run = SimpleNamespace(dag_id="gate_dag", run_id=run_id, run_type="asset_triggered", triggering_user_name=None)
    ti = SimpleNamespace(dag_id="gate_dag", task_id="retrain_gate", try_number=1, run_id=run_id)
    return {"ti": ti, "dag_run": dag_run, "run_id": run_id, "triggering_asset_events": {"drift": events}}


def test_two_concurrent_drift_gates_let_exactly_one_retrain_start(mlops_home: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    from airflow_mlops.exceptions import PromotionConflict
    from airflow_mlops.operators.retraining import MLflowRetrainGateOperator

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    event = SimpleNamespace(asset=SimpleNamespace(name="mlops.drift.race"), extra={"share": 0.5, "threshold": 0.3},
                            timestamp=datetime.now(UTC) - timedelta(minutes=1))
    outcomes: dict[str, Any] = {}

    def gate(run_id: str) -> None:
        op = MLflowRetrainGateOperator(task_id="retrain_gate", model_name="race", cooldown="6h",
                                       gated_assets=["mlops.drift.race"])
        try:
            outcomes[run_id] = op.execute(gate_context(run_id, [event]))["trigger"]
        except (AirflowSkipException, PromotionConflict) as exc:
            outcomes[run_id] = type(exc).__name__

    from airflow_mlops.hooks.mlflow import MLflowHook

    MLflowHook().get_conn().create_registered_model("race")
    threads = [threading.Thread(target=gate, args=(f"asset_triggered__{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()).count("asset") == 1, outcomes
    # a third, later drift event inside the cooldown is refused
    gate("asset_triggered__later")
    assert outcomes["asset_triggered__later"] == "AirflowSkipException"


def test_retrain_events_tag_is_capped_and_stays_json() -> None:
    from airflow_mlops.core.lineage import MAX_TAG_VALUE, TAG_RETRAIN_EVENTS, TAG_RETRAIN_REASON, retrain_tags

    events = [{"asset": "mlops.drift.m", "extra": {"share": 0.5, "note": "x" * 300}, "timestamp": f"t{i}"}
              for i in range(100)]
    tags = retrain_tags({"reason": "drift: " + "y" * 9000, "trigger": "asset", "events": events})
    stored = json.loads(tags[TAG_RETRAIN_EVENTS])
    assert len(tags[TAG_RETRAIN_EVENTS]) <= MAX_TAG_VALUE and len(tags[TAG_RETRAIN_REASON]) <= MAX_TAG_VALUE
    assert stored["events"] == events[: len(stored["events"])] and stored["dropped"] == 100 - len(stored["events"])
    assert retrain_tags(None) == {} and retrain_tags(json.dumps({"reason": "manual: r", "trigger": "manual"})) == {
        "airflow_mlops.retrain.reason": "manual: r", "airflow_mlops.retrain.trigger": "manual"}


def test_performance_event_reads_as_one_line() -> None:
    from airflow_mlops.operators.retraining import describe_event

    line = describe_event({"asset": "mlops.performance.m", "timestamp": "2026-11-25T09:00:00+00:00",
                           "extra": {"metric": "roc_auc", "value": 0.6123, "threshold": 0.7,
                                     "champion_version": "3", "champion_value": 0.75}})
    assert line == "performance: roc_auc 0.612 < 0.7 (champion v3 0.75) at 2026-11-25T09:00:00+00:00"
