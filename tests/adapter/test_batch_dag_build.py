"""The batch-inference DAG built from a model spec: its schedule, task and assets, and what building it imports."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.adapter


def _spec(**batch: Any) -> Any:
    import yaml

    from airflow_mlops import config
    from airflow_mlops.core.spec import parse_spec

    path = config.project_dir() / "include" / "models" / "ride_completion.yaml"
    data = yaml.safe_load(path.read_text())
    data["batch"] = batch
    return parse_spec(yaml.safe_dump(data), str(path))


def test_batch_dag_runs_on_a_new_champion_or_the_spec_cron() -> None:
    from airflow_mlops.dags.batch import batch_inference_dag

    dag = batch_inference_dag(_spec(schedule="0 3 * * *", lookback_days=2, chunk_rows=50_000))
    assert dag.dag_id == "ride_completion__batch_predict"
    assert dag.timetable.asset_condition.name == "mlops.model.ride_completion.champion"
    assert dag.timetable.timetable.expression == "0 3 * * *"
    assert {"mlops", "batch", "ride_completion"} <= set(dag.tags) and "ride_completion.yaml" in dag.doc_md
    [task] = dag.tasks
    assert task.retries >= 2 and task.owner == "mlops"
    assert (task.entity_dataset, task.lookback_days, task.chunk_rows) == ("rides", 2, 50_000)
    assert [o.name for o in task.outlets] == ["mlops.predictions.ride_completion"]


def test_batch_dag_without_cron_runs_on_the_champion_only() -> None:
    from airflow_mlops.dags.batch import batch_inference_dag

    dag = batch_inference_dag(_spec(schedule=None, entity_dataset="rides_live"))
    assert dag.timetable.asset_condition.name == "mlops.model.ride_completion.champion"
    assert not hasattr(dag.timetable, "timetable")
    assert dag.tasks[0].entity_dataset == "rides_live"


def test_building_the_batch_dag_imports_no_heavy_library() -> None:
    code = ("import sys\nfrom airflow_mlops.core.spec import load_specs\n"
            "from airflow_mlops.dags.batch import batch_inference_dag\n"
            "[batch_inference_dag(s) for s in load_specs()]\n"
            "heavy = {'pandas', 'numpy', 'sklearn', 'mlflow', 'feast', 'pyarrow', 'duckdb'}\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
