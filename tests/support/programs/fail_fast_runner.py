"""The `RUNNER` program of tests/integration/test_fail_fast.py.

Run in a child process through `support.dag_runs.run_script` with the environment the test builds.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import json
import sys
import time

from airflow.dag_processing.dagbag import DagBag
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

dag = DagBag(dag_folder=sys.argv[1]).dags["fail_fast"]
started = time.monotonic()
run = dag.test()
elapsed = time.monotonic() - started
with create_session() as session:
    rows = session.execute(select(TaskInstance.task_id, TaskInstance.state, TaskInstance.try_number,
                                  TaskInstance.max_tries).where(TaskInstance.run_id == run.run_id)).all()
tasks = {task: {"state": str(state), "try_number": tries, "max_tries": most} for task, state, tries, most in rows}
print("RESULT " + json.dumps({"state": str(run.state), "seconds": elapsed, "tasks": tasks}))
