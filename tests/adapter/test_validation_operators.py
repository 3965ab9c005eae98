"""The validation operators' execute() on real files and the shipped suites; every corrupt batch stops at the gate."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops import config
from airflow_mlops.core.offline import batch_id_of
from airflow_mlops.core.validation_report import report_url
from airflow_mlops.exceptions import DataValidationFailed
from airflow_mlops.operators.validation import (
    XCOM_KEY,
    GXValidateDataOperator,
    GXValidateRawBatchesOperator,
    ValidationReportLink,
    report_link,
)
from data.corrupt.batches import CORRUPTIONS, Corruption, write_corpus
from support.fake_ti import FakeTI, run_operator

pytestmark = pytest.mark.adapter


def _run(operator: Any, run_id: str | None = None) -> tuple[FakeTI, Any]:
    return run_operator(operator, run_id)


def _drop(frame: pd.DataFrame, dataset: str, name: str = "batch.parquet") -> Path:
    target = config.paths().landing_dir / dataset / name
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(target, index=False)
    return target


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corrupt"), datetime(2026, 10, 10, tzinfo=UTC))


def test_data_validation_failed_does_not_retry() -> None:
    # a retry after quarantining the bad files would succeed and run downstream in the same run
    assert DataValidationFailed.retry is False


@pytest.mark.parametrize("corruption", CORRUPTIONS, ids=lambda c: c.case)
def test_each_corrupt_batch_stops_at_the_gate_and_lands_in_quarantine(
    mlops_home: Path, corpus: dict[str, Path], corruption: Corruption
) -> None:
    src = config.paths().landing_dir / corruption.dataset / corruption.file_name
    src.parent.mkdir(parents=True)
    src.write_bytes(corpus[corruption.case].read_bytes())

    ti, outcome = _run(GXValidateRawBatchesOperator(task_id="validate_raw_batches", label_columns=["completed"]))

    assert isinstance(outcome, DataValidationFailed)
    assert isinstance(outcome, AirflowFailException), "execute() must raise it as Airflow's no-retry type"
    message = str(outcome)
    assert corruption.expected in message, message
    quarantined = config.paths().quarantine_dir / corruption.dataset / corruption.file_name
    assert f"quarantined to {quarantined}" in message and "full report: " in message
    assert quarantined.is_file() and not src.exists()
    assert (quarantined.parent / f"{corruption.file_name}.report.html").is_file()
    summary = ti.xcom[XCOM_KEY]
    assert summary["failed"] == [f"{corruption.dataset}/{corruption.file_name}"] and summary["message"] == message
    assert summary["report"]["url"].startswith("/mlops/reports/validation/_runs/mlops_features/")
    assert not config.paths().offline_dir.exists()


def test_good_files_stay_for_landing_while_bad_ones_are_quarantined(mlops_home: Path, small_demo: tuple) -> None:
    _, data = small_demo
    good = _drop(data["rides"], "rides", "good.parquet")
    csv = config.paths().landing_dir / "driver_hourly_stats" / "good.csv"
    csv.parent.mkdir(parents=True)
    data["driver_hourly_stats"].to_csv(csv, index=False)
    bad = _drop(data["driver_hourly_stats"].assign(acc_rate=-0.5), "driver_hourly_stats", "bad.parquet")

    ti, outcome = _run(GXValidateRawBatchesOperator(task_id="validate_raw_batches"))

    assert isinstance(outcome, DataValidationFailed)
    assert "1 of 3 raw batch(es) broke their data contract" in str(outcome)
    assert "2 good file(s) stay in the landing dir" in str(outcome)
    assert good.exists() and csv.exists() and not bad.exists()
    assert sorted(ti.xcom[XCOM_KEY]["passed"]) == ["driver_hourly_stats/good.csv", "rides/good.parquet"]
    landable = {(b["dataset"], b["file"]): b["batch_id"] for b in ti.xcom[XCOM_KEY]["landable"]}
    assert landable == {("rides", "good.parquet"): batch_id_of(good),
                        ("driver_hourly_stats", "good.csv"): batch_id_of(csv)}
    index = Path(ti.xcom[XCOM_KEY]["report"]["html"]).read_text()
    assert "bad.parquet" in index and "good.csv" in index

    ti, again = _run(GXValidateRawBatchesOperator(task_id="validate_raw_batches"))  # a retry of that run
    assert isinstance(again, DataValidationFailed), "a retry must not turn a quarantine into a green run"
    assert "an earlier try of this run quarantined 1 batch(es)" in str(again) and "bad.parquet" in str(again)
    assert good.exists() and csv.exists(), "the retry touches nothing"

    ti, summary = _run(GXValidateRawBatchesOperator(task_id="validate_raw_batches"), run_id="next")  # the next run
    assert isinstance(summary, dict) and summary["success"] and summary["files"] == 2


def test_an_empty_landing_dir_is_a_successful_no_op(mlops_home: Path) -> None:
    ti, summary = _run(GXValidateRawBatchesOperator(task_id="validate_raw_batches"))
    assert summary["success"] and summary["files"] == 0 and ti.xcom[XCOM_KEY]["report"]["url"]


def test_a_dataset_without_suite_fails_naming_the_file_unless_configured(mlops_home: Path, small_demo: tuple) -> None:
    src = _drop(small_demo[1]["rides"], "orders")
    ti, outcome = _run(GXValidateRawBatchesOperator(task_id="validate_raw_batches"))
    assert isinstance(outcome, DataValidationFailed)
    assert f"{config.expectations_dir()}/orders.json does not exist" in str(outcome)
    assert src.exists(), "a file without a suite is not known to be bad: it stays"

    ti, summary = _run(GXValidateRawBatchesOperator(task_id="validate_raw_batches", require_suite=False))
    assert summary["success"] and summary["unvalidated"] == ["orders/batch.parquet"]
    assert summary["landable"] == [{"dataset": "orders", "file": "batch.parquet", "batch_id": batch_id_of(src)}]


def test_warn_mode_lets_a_bad_batch_through(mlops_home: Path, small_demo: tuple) -> None:
    src = _drop(small_demo[1]["driver_hourly_stats"].assign(rating=9.0), "driver_hourly_stats")
    ti, summary = _run(GXValidateRawBatchesOperator(task_id="validate_raw_batches", mode="warn"))
    assert isinstance(summary, dict) and summary["success"]
    assert summary["warned"] == ["driver_hourly_stats/batch.parquet"]
    assert src.exists(), "warn mode moves nothing"
    assert summary["entries"][0]["failures"][0]["column"] == "rating"


def test_validate_data_operator_on_a_file_a_lineage_dict_and_a_dataframe(mlops_home: Path, small_demo: tuple) -> None:
    rides = small_demo[1]["rides"]
    src = _drop(rides, "rides")
    for data in (str(src), {"path": str(src)}, json.dumps({"path": str(src)}), rides):
        ti, summary = _run(GXValidateDataOperator(task_id="check", data=data, suite="rides"))
        assert isinstance(summary, dict) and summary["success"], summary
        assert ti.xcom[XCOM_KEY]["report"]["url"].startswith("/mlops/reports/validation/rides/")

    bad = rides.assign(surge_multiplier=0.5)
    ti, outcome = _run(GXValidateDataOperator(task_id="check", data=bad, suite="rides"))
    assert isinstance(outcome, DataValidationFailed)
    assert "column 'surge_multiplier': rule expect_column_values_to_be_between" in str(outcome)
    assert Path(ti.xcom[XCOM_KEY]["quarantined_to"]).parent == config.paths().quarantine_dir / "rides"
    _, retried = _run(GXValidateDataOperator(task_id="check", data=rides, suite="rides"))  # a retry, good data
    assert isinstance(retried, DataValidationFailed), "a retry of a task that quarantined stays failed"
    assert "an earlier try of this run quarantined 1 batch(es)" in str(retried)


def test_validate_data_operator_rejects_an_unknown_mode(mlops_home: Path, small_demo: tuple) -> None:
    src = _drop(small_demo[1]["rides"], "rides")
    with pytest.raises(DataValidationFailed, match="mode must be 'fail' or 'warn'"):
        GXValidateDataOperator(task_id="check", data=str(src), suite="rides", mode="strict").execute({"ti": FakeTI()})


def test_operators_declare_templates_and_the_report_link() -> None:
    assert set(GXValidateDataOperator.template_fields) == {"data", "suite", "mode", "expectations_dir"}
    assert set(GXValidateRawBatchesOperator.template_fields) == {"datasets", "mode", "expectations_dir"}
    for operator in (GXValidateDataOperator, GXValidateRawBatchesOperator):
        [link] = operator.operator_extra_links
        assert isinstance(link, ValidationReportLink) and link.name == "Validation report"


def test_report_links_follow_the_api_base_url_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_mlops.operators.validation import under_base_url

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/team-a/")
    assert under_base_url("/mlops/reports/validation/x.html") == "/team-a/mlops/reports/validation/x.html"
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://localhost:8080")
    assert under_base_url("/mlops/reports/validation/x.html") == "/mlops/reports/validation/x.html"
    assert under_base_url("") == ""


def test_report_link_format() -> None:
    assert report_url("rides/abc/report.html") == "/mlops/reports/validation/rides/abc/report.html"
    assert report_link({"report": {"url": "/mlops/reports/validation/x"}}) == "/mlops/reports/validation/x"
    assert report_link(None) == "" and report_link({"report": None}) == ""
