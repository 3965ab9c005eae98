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

from support.dag_runs import run_in_fresh_airflow

pytestmark = pytest.mark.integration

MODEL = "rides"
DAG_FILE = '''
from datetime import datetime, timezone

from airflow.sdk import DAG, AssetAlias, task

from airflow_mlops.dags.assets import champion_asset
from airflow_mlops.exceptions import CanaryFailed
from airflow_mlops.operators.deployment import ChampionRollbackEventOperator, _record_rollback

START = datetime(2026, 1, 1, tzinfo=timezone.utc)

with DAG("rides__train", schedule=None, start_date=START, catchup=False, params={"roll_back": True}) as train:
    @task(task_id="deploy", retries=0)
    def deploy(**context):
        if context["params"]["roll_back"]:
            _record_rollback(context, "rides", "1", "2", "canary breached: error rate 0.2000 > 0.01", 3)
            raise CanaryFailed("rides v2: canary breached; champion alias restored from v2 to v1", restored="1")
        return {"version": "2"}

    restored = ChampionRollbackEventOperator(
        task_id="champion_restored", model_name="rides", deploy_task_id="deploy",
        outlets=[AssetAlias(name="mlops.model.rides.champion.restored", group="mlops")]).as_teardown()
    deploy() >> restored

# A DAG scheduled on the champion (like <model>__batch_predict): the asset is registered in the metadata DB.
with DAG("rides__batch_predict", schedule=champion_asset("rides"), start_date=START, catchup=False) as batch:
    @task
    def score():
        return None

    score()
'''

RUNNER = r"""
import json
import sys

sys.path.insert(0, sys.argv[1])
from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

import rollback_event_dags as module

results = {}
for name, roll_back in (("rolled_back", True), ("healthy", False)):
    dag_run = module.train.test(run_conf={"roll_back": roll_back})
    with create_session() as session:
        tasks = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                     .where(TaskInstance.run_id == dag_run.run_id)).all())
        events = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetModel.name == "mlops.model.rides.champion").order_by(AssetEvent.id))
        events = [{"extra": e.extra, "source_task_id": e.source_task_id, "source_run_id": e.source_run_id}
                  for e in events]
    results[name] = {"state": str(dag_run.state), "run_id": dag_run.run_id,
                     "tasks": {t: str(s) for t, s in tasks.items()}, "events": events}
print("RESULT " + json.dumps(results, default=str))
"""


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
