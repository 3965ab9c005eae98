"""The `RUNNER` program of tests/integration/test_freshness_dag.py.

Run in a child process through `support.dag_runs.run_script` with the environment the test builds.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import json
import sys

from airflow.dag_processing.dagbag import DagBag
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select

dag = DagBag(dag_folder=sys.argv[1]).dags["freshness_gate"]
run = dag.test()
with create_session() as session:
    states = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                  .where(TaskInstance.run_id == run.run_id)).all())
    xcom = session.scalars(select(XComModel.value).where(XComModel.run_id == run.run_id,
                                                         XComModel.task_id == "check_tag_rule")).first()
print("RESULT " + json.dumps({"state": str(run.state), "tasks": {k: str(v) for k, v in states.items()},
                              "check": xcom if not isinstance(xcom, str) else json.loads(xcom)}))
