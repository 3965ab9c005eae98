"""DAG integrity: the shipped DAG files import cleanly, carry ownership metadata and parse light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.dags

PROJECT = Path(__file__).resolve().parents[2]
DAGS = PROJECT / "dags"
HEAVY = ["pandas", "numpy", "sklearn", "mlflow", "feast", "evidently", "great_expectations", "pyarrow", "duckdb"]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_expected_dags(dagbag) -> None:
    assert set(dagbag.dag_ids) == {"mlops_features", "ride_completion__train", "ride_completion__rollback",
                                   "ride_completion__batch_predict"}


def test_every_dag_has_tags_owner_doc_and_retries(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags and "mlops" in dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 100, dag_id
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries={task.retries}"
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id}"


def test_training_dag_chain_and_schedule(dagbag) -> None:
    dag = dagbag.dags["ride_completion__train"]
    assert [t.task_id for t in dag.topological_sort()] == [
        "build_training_set", "train", "evaluate", "register", "model_card", "promote"]
    assert dag.get_task("promote").outlets[0].name == "mlops.model.ride_completion.champion"
    # Asset OR time: materialized features retrain it, and so does the spec's weekly cron.
    assert dag.timetable.asset_condition.name == "mlops.features.driver_hourly_stats"
    assert dag.timetable.timetable.expression == "0 0 * * 0"
    assert "ride_completion.yaml" in dag.doc_md


def test_feature_dag_emits_view_assets(dagbag) -> None:
    from airflow.sdk import AssetAlias

    dag = dagbag.dags["mlops_features"]
    materialize = dag.get_task("materialize")
    # An alias per view, not the static asset (Airflow emits a static outlet on every success): the
    # task adds `mlops.features.<view>` through it only when the view got new rows.
    assert materialize.outlets == [AssetAlias("mlops.features.driver_hourly_stats.updates", group="mlops")]


@pytest.mark.parametrize("dag_file", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_dag_file_imports_no_heavy_library(dag_file: Path) -> None:
    """`python -X importtime` of the DAG file must not list any heavy library."""
    out = subprocess.run([sys.executable, "-X", "importtime", str(dag_file)], capture_output=True, text=True,
                         cwd=PROJECT, check=True)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_bad_spec_becomes_an_import_error_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    data = yaml.safe_load((PROJECT / "include" / "models" / "ride_completion.yaml").read_text())
    data["training"]["estimator"] = "not-a-path"
    (tmp_path / "ride_completion.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=str(DAGS))
    [error] = bag.import_errors.values()
    assert f"{tmp_path}/ride_completion.yaml: training.estimator" in error
