"""The `RUNNER` program of tests/adapter/test_mlflow_alias_sensor.py.

Run in a child process through `support.dag_runs.run_script` with the environment the test builds.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import json
import sys
import threading
import time
from typing import Any

from airflow.dag_processing.dagbag import DagBag
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select

from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.sensors import mlflow as sensor_module
from airflow_mlops.triggers import mlflow as trigger_module
from airflow_mlops.triggers.mlflow import AliasState

client = MLflowHook().get_conn()
client.create_registered_model("alias_model")
for _ in range(3):
    client.create_model_version("alias_model", sys.argv[2])
client.set_registered_model_alias("alias_model", "champion", "1")

checks: list[AliasState] = []  # every AliasState the sensor or its trigger computed, in order
real_check = trigger_module.check_alias


def recording_check(*args: Any, **kwargs: Any) -> AliasState:
    state = real_check(*args, **kwargs)
    checks.append(state)
    return state


sensor_module.check_alias = trigger_module.check_alias = recording_check  # type: ignore[attr-defined]


def move_when_waiting(wanted: str, version: str) -> None:
    # Move the alias only once a check for `wanted` has said "still waiting": a condition, not a delay.
    while not any(c.wanted == wanted and not c.done for c in checks):
        time.sleep(0.05)
    client.set_registered_model_alias("alias_model", "champion", version)


def mover() -> None:
    move_when_waiting("any version other than 1", "2")  # the poking sensor
    move_when_waiting("version 3", "3")  # the deferred one (dag.test() runs its trigger inline)


threading.Thread(target=mover, daemon=True).start()
dag = DagBag(dag_folder=sys.argv[1]).dags["alias_wait"]
run = dag.test()
with create_session() as session:
    states = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                  .where(TaskInstance.run_id == run.run_id)).all())
    raw_xcoms: dict[str, Any] = dict(session.execute(select(XComModel.task_id, XComModel.value).where(
        XComModel.run_id == run.run_id, XComModel.key == "return_value")).all())
xcoms = {k: v if not isinstance(v, str) else json.loads(v) for k, v in raw_xcoms.items()}
print("RESULT " + json.dumps({"state": str(run.state), "tasks": {k: str(v) for k, v in states.items()},
                              "xcoms": xcoms}))
