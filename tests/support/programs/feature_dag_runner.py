"""The `RUNNER` program of tests/integration/test_feature_dag.py.

Run in a child process through `support.dag_runs.run_script` with the environment the test builds:
`feature_dag_runner.py <dags folder> <next day's parquet> <view>` runs the tiny feature DAG twice, lands the
parquet as a new batch of <view>, runs it a third time and prints the three runs as one `RESULT <json>` line.
"""

import json
import shutil
import sys
from typing import Any

from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetAliasModel, AssetDagRunQueue, AssetEvent, AssetModel
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import delete, select

from airflow_mlops import config

dag = DagBag(dag_folder=sys.argv[1]).dags["tiny_features"]


def run() -> dict[str, Any]:
    dag_run = dag.test()
    with create_session() as session:
        tasks = session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                .where(TaskInstance.run_id == dag_run.run_id)).all()
        events = session.execute(select(AssetModel.name, AssetModel.uri, AssetEvent)
                                 .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetEvent.source_run_id == dag_run.run_id).order_by(AssetEvent.id)).all()
        queued = session.scalars(select(AssetDagRunQueue.target_dag_id)).all()
        session.execute(delete(AssetDagRunQueue))  # the scheduler would consume them; start the next run clean
        aliases = {a.name: sorted(m.name for m in a.assets) for a in session.scalars(select(AssetAliasModel))}
        return {"state": str(dag_run.state), "tasks": {t: str(s) for t, s in tasks},
                "events": [{"asset": name, "uri": uri, "extra": e.extra,
                            "aliases": sorted(a.name for a in e.source_aliases)} for name, uri, e in events],
                "queued": sorted(queued), "aliases": aliases}


results = [run(), run()]
landing = config.paths().landing_dir / sys.argv[3]  # the view that gets a new batch
shutil.copy(sys.argv[2], landing / "next_day.parquet")
results.append(run())
print("RESULT " + json.dumps(results))
