"""The `RUNNER` program of tests/integration/test_corrupt_batches.py.

Run in a child process through `support.dag_runs.run_script` with the environment the test builds.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select

from airflow_mlops import config
from airflow_mlops.dags import build_dags

dag = build_dags()["mlops_features"]
home = config.paths()
plan = json.loads(Path(sys.argv[1]).read_text())


def digest() -> dict[str, str]:
    files = [p for root in (home.offline_dir, home.feast_dir) if root.exists() for p in sorted(root.rglob("*"))]
    return {str(p.relative_to(home.home)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def xcom(run_id: str, key: str) -> Any:
    with create_session() as session:
        row = session.execute(select(XComModel.value).where(
            XComModel.run_id == run_id, XComModel.task_id == "validate_raw_batches", XComModel.key == key)).first()
    value = row[0] if row else None
    try:
        return json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return value


def run(label: str, drops: list[list[str]], clear: bool = False) -> dict[str, Any]:
    if clear:  # files an earlier failed step left waiting must not mix into this step
        for waiting in home.landing_dir.glob("*/*"):
            if waiting.is_file():
                waiting.unlink()
    for dataset, source in drops:
        target = home.landing_dir / dataset / Path(source).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    before = digest()
    dag_run = dag.test()
    with create_session() as session:
        tasks = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                     .where(TaskInstance.run_id == dag_run.run_id)).all())
    landing = [str(p.relative_to(home.landing_dir)) for p in home.landing_dir.glob("*/*") if p.is_file()]
    return {"label": label, "state": str(dag_run.state), "tasks": {t: str(s) for t, s in tasks.items()},
            "validation": xcom(dag_run.run_id, "validation"),
            "link": xcom(dag_run.run_id, "_link_ValidationReportLink"),
            "unchanged": digest() == before, "stores": sorted(digest()), "landing": sorted(landing),
            "quarantine": sorted(str(p.relative_to(home.quarantine_dir)) for p in home.quarantine_dir.glob("*/*"))}


results = [run(step["label"], step["drops"], step.get("clear", False)) for step in plan]
print("RESULT " + json.dumps(results))
