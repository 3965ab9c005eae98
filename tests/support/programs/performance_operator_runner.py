"""The `RUNNER` program of tests/integration/test_performance_operator.py.

Run in a child process through `support.dag_runs.run_script` with the environment the test builds.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import json
import sys

from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select

dags = DagBag(dag_folder=sys.argv[1]).dags
out = {}
for name in ("healthy", "degraded", "empty"):
    run = dags[f"perf_{name}"].test()
    with create_session() as session:
        state = session.scalars(select(TaskInstance.state).where(TaskInstance.run_id == run.run_id)).first()
        xcom = session.scalars(select(XComModel.value).where(XComModel.run_id == run.run_id,
                                                             XComModel.task_id == "performance")).first()
        events = session.execute(select(AssetModel.name, AssetEvent.extra)
                                 .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetEvent.source_run_id == run.run_id)).all()
    out[name] = {"state": str(state), "xcom": json.loads(xcom) if isinstance(xcom, str) else xcom,
                 "events": [{"name": n, "extra": e} for n, e in events]}
print("RESULT " + json.dumps(out, default=str))
