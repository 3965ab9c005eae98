"""dag.test() of a tiny land → apply → materialize DAG: a run with no new batch is skipped and emits no asset event.

Runs in a subprocess with its own AIRFLOW_HOME (a migrated SQLite metadata DB); the runner reads the
AssetEvent and TaskInstance tables after each run (fine in a test, never in a task).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.core.demo_data import DemoConfig, driver_stats

pytestmark = pytest.mark.integration

VIEW = "driver_hourly_stats"

DAG_FILE = f"""
from airflow.sdk import DAG, Asset, chain

from airflow_mlops.operators.features import FeastApplyOperator, FeastMaterializeOperator, LandRawBatchesOperator

with DAG("tiny_features", schedule=None, tags=["test"]):
    chain(
        LandRawBatchesOperator(task_id="land"),
        FeastApplyOperator(task_id="apply"),
        FeastMaterializeOperator(task_id="materialize", outlets=[Asset("mlops.features.{VIEW}")]),
    )
"""

RUNNER = f"""
import json
import shutil
import sys

from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

from airflow_mlops import config

dag = DagBag(dag_folder=sys.argv[1]).dags["tiny_features"]


def run():
    dag_run = dag.test()
    with create_session() as session:
        tasks = session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                .where(TaskInstance.run_id == dag_run.run_id)).all()
        events = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetModel.name == "mlops.features.{VIEW}").order_by(AssetEvent.id))
        return {{"state": str(dag_run.state), "tasks": {{t: str(s) for t, s in tasks}},
                 "events": [e.extra for e in events]}}


results = [run(), run()]
landing = config.paths().landing_dir / "{VIEW}"
shutil.copy(sys.argv[2], landing / "next_day.parquet")
results.append(run())
print("RESULT " + json.dumps(results))
"""


def _run_three_times(tmp_path: Path, mlops_home: Path, next_batch: Path) -> list[dict[str, Any]]:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "tiny_features.py").write_text(DAG_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", MLOPS_HOME=str(mlops_home))
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    done = subprocess.run([sys.executable, "-c", RUNNER, str(dags), str(next_batch)], check=False, env=env,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    output = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, output[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_a_run_without_new_data_is_skipped_and_emits_no_asset_event(
    mlops_home: Path, small_demo: tuple, tmp_path: Path
) -> None:
    cfg, data = small_demo
    for dataset, frame in data.items():
        (mlops_home / "landing" / dataset).mkdir(parents=True)
        frame.to_parquet(mlops_home / "landing" / dataset / "first.parquet", index=False)
    newer = driver_stats(DemoConfig(start=cfg.end, days=1, drivers=cfg.drivers, seed=3))
    newer.to_parquet(tmp_path / "next_day.parquet", index=False)

    first, second, third = _run_three_times(tmp_path, mlops_home, tmp_path / "next_day.parquet")

    assert first["state"] == "success" and first["tasks"]["materialize"] == "success"
    [event] = first["events"]
    assert event["feature_view"] == VIEW and event["mode"] == "full" and event["rows"] == len(data[VIEW])

    assert second["state"] == "success", "a skipped materialize does not fail the run"
    assert second["tasks"] == {"land": "success", "apply": "success", "materialize": "skipped"}
    assert second["events"] == first["events"], "no new asset event: nothing retrains on unchanged data"

    assert third["tasks"]["materialize"] == "success"
    assert len(third["events"]) == 2
    assert third["events"][-1]["mode"] == "incremental" and third["events"][-1]["rows"] == len(newer)
