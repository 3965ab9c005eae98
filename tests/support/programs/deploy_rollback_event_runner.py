"""The `RUNNER` program of tests/integration/test_deploy_rollback_event.py.

Run in a child process through `support.dag_runs.run_in_fresh_airflow` in a fresh AIRFLOW_HOME.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import json
import sys
from typing import Any

from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

sys.path.insert(0, sys.argv[1])  # the test's DAG folder: import its DAG file as a module
import rollback_event_dags as module

results: dict[str, Any] = {}
for name, roll_back in (("rolled_back", True), ("healthy", False)):
    dag_run = module.train.test(run_conf={"roll_back": roll_back})
    with create_session() as session:
        tasks = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                     .where(TaskInstance.run_id == dag_run.run_id)).all())
        found = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetModel.name == "mlops.model.rides.champion").order_by(AssetEvent.id))
        events = [{"extra": e.extra, "source_task_id": e.source_task_id, "source_run_id": e.source_run_id}
                  for e in found]
    results[name] = {"state": str(dag_run.state), "run_id": dag_run.run_id,
                     "tasks": {t: str(s) for t, s in tasks.items()}, "events": events}
print("RESULT " + json.dumps(results, default=str))
