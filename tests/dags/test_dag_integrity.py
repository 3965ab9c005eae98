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
    roles = ("train", "rollback", "batch_predict", "monitor")
    assert set(dagbag.dag_ids) == {"mlops_features", *(f"{model}__{role}" for model in ("ride_completion",
                                                                                          "ride_duration")
                                                       for role in roles)}


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
        "retrain_gate", "build_training_set", "train", "evaluate", "register", "model_card", "promote"]
    assert dag.get_task("promote").outlets[0].name == "mlops.model.ride_completion.champion"
    # Asset OR time: materialized features, drift or degraded performance retrain it (the gate applies the
    # cooldown to the monitoring events), and so does the spec's weekly cron.
    assert [a.name for a in dag.timetable.asset_condition.objects] == [
        "mlops.features.driver_hourly_stats", "mlops.drift.ride_completion", "mlops.performance.ride_completion"]
    assert dag.get_task("retrain_gate").gated_assets == ["mlops.drift.ride_completion",
                                                         "mlops.performance.ride_completion"]
    assert dag.get_task("retrain_gate").cooldown == "6h"
    assert dag.timetable.timetable.expression == "0 0 * * 0"
    assert "ride_completion.yaml" in dag.doc_md


def test_monitoring_dag_checks_run_independently_then_summarize(dagbag) -> None:
    from airflow.sdk import AssetAlias

    dag = dagbag.dags["ride_completion__monitor"]
    checks = ["check_drift", "check_performance", "check_skew", "check_freshness"]
    for task_id in checks:
        assert dag.get_task(task_id).upstream_task_ids == set(), task_id
    summary = dag.get_task("summary")
    assert summary.upstream_task_ids == set(checks) and summary.trigger_rule == "all_done"
    assert dag.get_task("check_drift").outlets == [AssetAlias("mlops.drift.ride_completion.detected", group="mlops")]
    assert dag.get_task("check_performance").outlets == [
        AssetAlias("mlops.performance.ride_completion.degraded", group="mlops")]
    # hourly OR a new label file (AssetWatcher)
    assert dag.timetable.timetable.expression == "0 * * * *"
    assert dag.timetable.asset_condition.name == "mlops.labels.ride_completion"
    assert dag.max_active_runs == 1


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


def test_a_canary_deploy_gets_the_champion_restored_teardown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import AssetAlias

    from airflow_mlops.dags import build_dags

    data = yaml.safe_load((PROJECT / "include" / "models" / "ride_completion.yaml").read_text())
    data["serving"] = {"target": "local", "url": "http://127.0.0.1:8000"}
    data["promotion"]["canary"] = {"traffic": 0.1}
    (tmp_path / "ride_completion.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(tmp_path))
    dag = build_dags()["ride_completion__train"]
    restored = dag.get_task("champion_restored")
    assert restored.is_teardown and restored.upstream_task_ids == {"deploy"}
    assert dag.get_task("deploy").upstream_task_ids == {"promote"}
    assert restored.outlets == [AssetAlias(name="mlops.model.ride_completion.champion.restored", group="mlops")]


def test_training_dag_records_the_spec_hash_and_hands_register_result_on(dagbag) -> None:
    from airflow_mlops.core.spec import load_specs, spec_sha256

    dag = dagbag.dags["ride_completion__train"]
    [spec] = [s for s in load_specs(PROJECT / "include" / "models") if s.name == "ride_completion"]
    assert dag.get_task("train").spec_sha256 == spec_sha256(spec)
    # a repeat (nothing new registered) must reach every task after register, which skip with its reason
    for task_id in ("model_card", "promote"):
        assert dag.get_task(task_id).registered.operator.task_id == "register", task_id
