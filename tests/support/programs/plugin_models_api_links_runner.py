"""The `LINKS_RUNNER` program of tests/integration/test_plugin_models_api.py.

Run in a child process through `support.dag_runs.run_script` with the environment the test builds.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import json
from typing import Any

from airflow.dag_processing.dagbag import DagBag
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select

dag = DagBag().get_dag("links_probe")
run = dag.test()
with create_session() as session:
    rows = session.execute(select(XComModel.task_id, XComModel.key, XComModel.value).where(
        XComModel.run_id == run.run_id, XComModel.key.like("_link_%"))).all()
def decoded(value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, (str, bytes)) else value
    except ValueError:
        return value
print("RESULT " + json.dumps({f"{task}:{key}": decoded(value) for task, key, value in rows}))
