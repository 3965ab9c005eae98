"""The spec's `validation.suite` gates the point-in-time training set in FeastBuildTrainingSetOperator (real Feast)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops import config
from airflow_mlops.core.offline import land_landing_dir
from airflow_mlops.dags import build_dags
from airflow_mlops.exceptions import DataValidationFailed
from airflow_mlops.hooks.feast import FeastHook
from airflow_mlops.operators.features import FeastBuildTrainingSetOperator
from airflow_mlops.operators.validation import XCOM_KEY
from support.fake_ti import FakeTI

pytestmark = pytest.mark.integration

SUITE = "ride_completion_training"


@pytest.fixture
def landed(mlops_home: Path, small_demo: tuple) -> Path:
    for dataset, frame in small_demo[1].items():
        target = config.paths().landing_dir / dataset / "demo.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target, index=False)
    land_landing_dir(config.paths().landing_dir, config.paths().offline_dir)
    FeastHook().apply()
    return mlops_home


def _build(mode: str = "fail") -> tuple[FakeTI, Any]:
    spec_task = build_dags()["ride_completion__train"].get_task("build_training_set")
    operator = FeastBuildTrainingSetOperator(
        task_id="build_training_set", model_name="ride_completion", feature_service=spec_task.feature_service,
        entity_dataset=spec_task.entity_dataset, entity_keys=spec_task.entity_keys,
        timestamp_column=spec_task.timestamp_column, label=spec_task.label_column,
        request_features=spec_task.request_features, validation_suite=spec_task.validation_suite, validation_mode=mode,
    )
    ti = FakeTI()
    try:
        return ti, operator.execute({"ti": ti})  # type: ignore[arg-type]
    except DataValidationFailed as exc:
        return ti, exc


def _strict_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the shipped suites whose training suite wants ratings below 4 (the demo's are around 4.3)."""
    folder = tmp_path / "expectations"
    shutil.copytree(config.expectations_dir(), folder)
    suite = json.loads((folder / f"{SUITE}.json").read_text())
    for expectation in suite["expectations"]:
        if expectation["type"] == "expect_column_values_to_be_between" and expectation["kwargs"]["column"] == "rating":
            expectation["kwargs"]["max_value"] = 4.0
    (folder / f"{SUITE}.json").write_text(json.dumps(suite))
    monkeypatch.setenv("MLOPS_EXPECTATIONS_DIR", str(folder))


def test_the_spec_suite_is_wired_into_the_training_dag() -> None:
    task = build_dags()["ride_completion__train"].get_task("build_training_set")
    assert (task.validation_suite, task.validation_mode) == (SUITE, "fail")
    assert [link.name for link in task.operator_extra_links] == ["Validation report"]


def test_a_good_training_set_passes_and_its_lineage_says_so(landed: Path) -> None:
    ti, lineage = _build()
    assert isinstance(lineage, dict), lineage
    assert lineage["validation"]["success"] and lineage["validation"]["suite"] == SUITE
    assert lineage["validation"]["report"].startswith(f"/mlops/reports/validation/{SUITE}/")
    assert Path(lineage["path"]).is_file()
    assert ti.xcom[XCOM_KEY]["statistics"]["unsuccessful_rules"] == 0


def test_a_bad_training_set_is_quarantined_and_nothing_trains_on_it(
    landed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _strict_suite(tmp_path, monkeypatch)
    ti, outcome = _build()

    assert isinstance(outcome, DataValidationFailed)
    assert "column 'rating': rule expect_column_values_to_be_between" in str(outcome)
    assert not list((config.paths().training_sets_dir / "ride_completion").glob("*.parquet")), "no usable snapshot"
    quarantined = Path(ti.xcom[XCOM_KEY]["quarantined_to"])
    assert quarantined.parent == config.paths().quarantine_dir / SUITE and quarantined.is_file()
    assert quarantined.with_suffix(".json").is_file(), "the snapshot's lineage record moved with it"
    assert Path(f"{quarantined}.report.html").is_file()


def test_warn_mode_keeps_the_training_set_and_records_the_failure(
    landed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _strict_suite(tmp_path, monkeypatch)
    ti, lineage = _build(mode="warn")
    assert isinstance(lineage, dict) and Path(lineage["path"]).is_file()
    assert lineage["validation"]["success"] is False and lineage["validation"]["mode"] == "warn"
    assert ti.xcom[XCOM_KEY]["failures"][0]["column"] == "rating"
