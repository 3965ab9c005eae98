"""The build of the trained demo state (tests/support/demo_state.py, `BUILD`).

Run once per session in a child process through `support.dag_runs.run_script`, with the build's environment
(`_build_env`) in the state's root: `demo_state_build.py <days> <model>` installs the network audit hook
(support/netaudit), writes <days> of demo batches, runs the feature DAG and <model>'s training DAG, and prints
both runs as one `RESULT <json>` line.
"""

# ruff: noqa: E402 - the audit hook is installed before Airflow and the project are imported, so it sees them
import json
import runpy
import sys
from pathlib import Path
from typing import Any

NETAUDIT = Path(__file__).resolve().parents[1] / "netaudit" / "sitecustomize.py"

runpy.run_path(str(NETAUDIT))  # installs the audit hook: MLOPS_NETAUDIT_LOG is set (see _build_env)

from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

from airflow_mlops import demo
from airflow_mlops.dags import build_dags

dags = build_dags()


def run(dag_id: str) -> dict[str, Any]:
    dag_run = dags[dag_id].test()
    with create_session() as session:
        tasks = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                     .where(TaskInstance.run_id == dag_run.run_id)).all())
    return {"state": str(dag_run.state), "run_id": dag_run.run_id, "tasks": {t: str(s) for t, s in tasks.items()}}


demo.write_demo_batches(days=int(sys.argv[1]), start="2026-10-01")  # fixed times: the modules assume this history
print("RESULT " + json.dumps({"features": run("mlops_features"), "train": run(f"{sys.argv[2]}__train")}))
