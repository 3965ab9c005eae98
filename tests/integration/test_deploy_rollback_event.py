"""dag.test() of a rolled-back canary: the champion asset gets an event although the deploy task fails.

Airflow 3.3 sends outlet events only with a successful task (task_runner.py: `SucceedTask` carries
`outlet_events`, a failed `TaskState` carries none), so DeployModelOperator cannot emit the champion
event itself when it fails with CanaryFailed. It records the rollback in XCom (`champion_rollback`,
kept for a failed try) and ChampionRollbackEventOperator, a teardown after it, adds the event for
`mlops.model.<name>.champion` through its AssetAlias outlet. A teardown does not decide the DAG run's
state, so the run still fails.

One subprocess with its own migrated metadata DB and a DAG file in its own dags folder runs the DAG
twice: once the deploy task rolls back (records the rollback with the operator's own `_record_rollback`
and raises the operator's CanaryFailed; a live serving app for a real canary is what
tests/integration/test_deploy_operator.py covers), once it succeeds. The asset events are read back
from the metadata DB.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.dag_runs import dag_file, program, run_in_fresh_airflow

pytestmark = pytest.mark.integration

MODEL = "rides"
DAG_FILE = dag_file("rollback_event_dags")

RUNNER = program("deploy_rollback_event_runner")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp_path = tmp_path_factory.mktemp("rollback_event")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "rollback_event_dags.py").write_text(DAG_FILE)
    return run_in_fresh_airflow(tmp_path, RUNNER, str(dags), dags_folder=dags, timeout=300)[0]


def test_a_rolled_back_canary_fails_the_run_but_the_champion_asset_gets_the_restored_version(
        runs: dict[str, Any]) -> None:
    rolled = runs["rolled_back"]
    assert rolled["tasks"] == {"deploy": "failed", "champion_restored": "success"}, rolled
    assert rolled["state"] == "failed", "the teardown must not turn a failed deploy into a successful run"
    [event] = [e for e in rolled["events"] if e["source_run_id"] == rolled["run_id"]]
    assert event["source_task_id"] == "champion_restored"
    assert event["extra"] == {"action": "rollback", "version": "1", "rolled_back_from": "2",
                              "reason": "canary breached: error rate 0.2000 > 0.01", "audit_seq": 3}


def test_a_deploy_without_rollback_emits_no_champion_event(runs: dict[str, Any]) -> None:
    healthy = runs["healthy"]
    assert healthy["state"] == "success" and healthy["tasks"] == {"deploy": "success", "champion_restored": "success"}
    assert [e for e in healthy["events"] if e["source_run_id"] == healthy["run_id"]] == [], (
        "no rollback, no event: the promote task already announced the new champion")


def test_the_event_task_refuses_a_static_outlet_only() -> None:
    from airflow.sdk import DAG

    from airflow_mlops.dags.assets import champion_asset
    from airflow_mlops.operators.deployment import ChampionRollbackEventOperator

    with DAG("x"), pytest.raises(ValueError, match=r"champion_restored: outlets must include an AssetAlias"):
        ChampionRollbackEventOperator(task_id="champion_restored", model_name=MODEL,
                                      outlets=[champion_asset(MODEL)])
