"""Data contracts: suites (profiling, JSON round trip, the shipped ones), contract rules, CSV reading, reports."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops import config
from airflow_mlops.core import validation
from airflow_mlops.core.demo_data import DemoConfig, generate
from airflow_mlops.core.gate import Gate, check_batch
from airflow_mlops.core.offline import load_raw_batch, read_raw_batch
from airflow_mlops.core.suites import Contract, load_suite, suite_from_reference
from airflow_mlops.core.validation_report import render_html
from airflow_mlops.exceptions import DataValidationFailed

pytestmark = pytest.mark.unit

SHIPPED = ("rides", "driver_hourly_stats", "ride_completion_training", "trips", "ride_duration_training")
NOW = datetime(2026, 11, 1, tzinfo=UTC)
ASSET_URL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", re.I)


def _gate(tmp_path: Path, labels: tuple[str, ...] = ("completed",)) -> Gate:
    return Gate(reports_root=tmp_path / "reports", quarantine_dir=tmp_path / "quarantine", now=NOW,
                label_columns=labels)


def _rules(result: dict) -> set[tuple[str, str | None]]:
    return {(f["rule"], f["column"]) for f in result["failures"]}


# -- suites --------------------------------------------------------------------------------------------------
def test_profiled_suite_round_trips_as_json_and_carries_the_contract(small_demo: tuple) -> None:
    _, data = small_demo
    suite = suite_from_reference(data["rides"], "rides", ["driver_id"], "event_timestamp", "completed",
                                 unique_columns=["ride_id"])
    as_json = json.loads(json.dumps(suite.to_json_dict()))
    import great_expectations as gx  # here, not at the top: collection stays fast

    assert gx.ExpectationSuite(**as_json).to_json_dict() == as_json
    contract = Contract.from_suite(as_json)
    assert contract.label_column == "completed" and contract.key_columns == ("driver_id",)
    kinds = {(e["type"], e["kwargs"].get("column")) for e in as_json["expectations"]}
    assert ("expect_table_columns_to_match_set", None) in kinds
    assert ("expect_compound_columns_to_be_unique", None) in kinds
    assert ("expect_column_values_to_be_unique", "ride_id") in kinds
    assert ("expect_column_values_to_be_in_set", "completed") in kinds
    assert ("expect_column_type_to_be", "trip_distance_km") in kinds
    assert not any(e["kwargs"].get("column") == "driver_id" and e["type"].endswith("between")
                   for e in as_json["expectations"]), "no observed range on an entity key"
    # row-level and plausibility fields, profiled for review
    assert contract.row_key_columns == ("ride_id",) and (contract.duplicates, contract.corrections) == ("reject",) * 2
    assert contract.valid_from == data["rides"]["event_timestamp"].min().strftime("%Y-%m-%d")
    assert set(contract.varying_columns) == {"trip_distance_km", "surge_multiplier", "pickup_hour", "completed"}
    assert all(0 < share < 1 for share in contract.varying_columns.values())
    assert contract.columns == tuple(data["rides"].columns)


@pytest.mark.parametrize(("field", "value", "says"), [
    ("duplicates", "ignore", "duplicates is 'ignore'; allowed: reject, skip_existing"),
    ("corrections", "overwrite", "corrections is 'overwrite'; allowed: reject, replace"),
    ("valid_from", "last year", "valid_from is 'last year', not an ISO date"),
    ("max_backfill_days", -1, "max_backfill_days is -1"),
    ("varying_columns", {"conv_rate": 1.5}, "varying_columns must map a column to the share"),
])
def test_a_bad_contract_field_names_the_field_and_the_fix(field: str, value: object, says: str) -> None:
    meta = {"dataset": "d", "timestamp_column": "event_timestamp", field: value}
    with pytest.raises(DataValidationFailed, match=re.escape(says)):
        Contract.from_suite({"name": "d", "meta": {"airflow_mlops": meta}})


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_suites_round_trip_and_name_their_dataset(name: str) -> None:
    import great_expectations as gx

    suite = load_suite(name)
    assert gx.ExpectationSuite(**suite).to_json_dict() == suite
    assert Contract.from_suite(suite).dataset == name
    assert suite["notes"] and "hand" in suite["notes"], "the reviewed edits are recorded in the suite's notes"


@pytest.mark.parametrize("shift", [{}, {"covariate_shift": 1.0}, {"concept_shift": 1.0}], ids=["plain", "cov", "con"])
def test_demo_batches_pass_the_shipped_suites_even_with_drift(tmp_path: Path, shift: dict) -> None:
    data = generate(DemoConfig(start=datetime(2026, 10, 5, tzinfo=UTC), days=2, drivers=15, rides_per_day=300,
                               **shift))
    for dataset, frame in data.items():
        result = validation.validate_frame(frame, load_suite(dataset), now=NOW, label_columns=["completed"])
        assert result["success"], (dataset, result["failures"])


def test_a_missing_suite_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataValidationFailed) as err:
        load_suite("orders", tmp_path)
    assert f"{tmp_path}/orders.json does not exist" in str(err.value)
    assert "airflow-mlops suite --dataset orders" in str(err.value)


def test_a_suite_without_contract_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"name": "x", "expectations": [], "meta": {}}))
    with pytest.raises(DataValidationFailed, match="no meta.airflow_mlops contract"):
        load_suite("x", tmp_path)


# -- contract rules -----------------------------------------------------------------------------------------
def _stats(hours: int = 4, tz: str | None = "UTC", unit: str = "us") -> pd.DataFrame:
    ts = pd.date_range("2026-10-01", periods=hours, freq="h", tz=tz, unit=unit)
    return pd.DataFrame({"driver_id": 1001, "event_timestamp": ts, "conv_rate": 0.5})


def _contract(**kw: object) -> Contract:
    return Contract(**{"dataset": "s", "timestamp_column": "event_timestamp", "key_columns": ("driver_id",), **kw})


@pytest.mark.parametrize("unit", ["ns", "us", "ms"])
def test_utc_timestamps_of_any_unit_pass(unit: str) -> None:
    assert validation.timestamp_failures(_stats(unit=unit), "event_timestamp", NOW, 300) == []


@pytest.mark.parametrize(("tz", "why"), [(None, "naive timestamps"), ("Europe/Berlin", "time zone Europe/Berlin")])
def test_naive_or_non_utc_timestamps_break_the_tz_rule(tz: str | None, why: str) -> None:
    [failure] = validation.timestamp_failures(_stats(tz=tz), "event_timestamp", NOW, 300)
    assert failure["rule"] == "timestamps_tz_utc" and failure["column"] == "event_timestamp"
    assert failure["unexpected_count"] == 4 and why in failure["detail"]


def test_future_timestamps_are_counted_against_validation_time_with_tolerance() -> None:
    frame = _stats(hours=6)
    now = datetime(2026, 10, 1, 3, 0, tzinfo=UTC)  # rows at 00..05h: 04h and 05h are in the future
    [failure] = validation.timestamp_failures(frame, "event_timestamp", now, 300)
    assert failure["rule"] == "timestamps_not_in_future" and failure["unexpected_count"] == 2
    assert failure["sample"][0] == "2026-10-01T05:00:00+00:00"
    assert validation.timestamp_failures(frame, "event_timestamp", now + timedelta(hours=2), 300) == []


@pytest.mark.parametrize("column", ["completed", "Completed", "COMPLETED", "com-pleted"])
def test_a_feature_table_must_not_carry_a_label_named_like_any_spec_label(column: str) -> None:
    frame = _stats().assign(**{column: 1})
    [failure] = validation.leakage_failures(frame, _contract(), ["completed", "churned"])
    assert (failure["rule"], failure["column"], failure["kwargs"]["reason"]) == ("no_label_leakage", column, "name")


def test_a_label_table_flags_columns_that_restate_the_label_but_not_honest_features(small_demo: tuple) -> None:
    rides = small_demo[1]["rides"]
    contract = Contract.from_suite(load_suite("rides"))
    assert validation.leakage_failures(rides, contract, ["completed"]) == []

    leaky = rides.assign(minutes_to_dropoff=rides["completed"] * 30 + 0.01 * rides["pickup_hour"])
    [failure] = validation.leakage_failures(leaky, contract, ["completed"])
    assert failure["column"] == "minutes_to_dropoff" and failure["kwargs"]["reason"] == "correlation"
    assert failure["kwargs"]["abs_corr"] >= 0.95


# -- CSV ------------------------------------------------------------------------------------------------------
def test_csv_batches_read_iso_timestamps_as_utc_and_pass_like_parquet(tmp_path: Path, small_demo: tuple) -> None:
    stats = small_demo[1]["driver_hourly_stats"]
    src = tmp_path / "stats.csv"
    stats.to_csv(src, index=False)
    frame = read_raw_batch(src)
    assert str(frame["event_timestamp"].dtype).endswith("UTC]") and str(frame["created"].dtype).endswith("UTC]")
    result = validation.validate_frame(frame, load_suite("driver_hourly_stats"), now=NOW)
    assert result["success"], result["failures"]


def test_csv_naive_timestamps_stay_naive_for_the_gate(tmp_path: Path) -> None:
    src = tmp_path / "n.csv"
    src.write_text("driver_id,event_timestamp\n1,2026-10-01 00:00:00\n2,2026-10-01T01:00:00\n", encoding="utf-8")
    assert str(read_raw_batch(src)["event_timestamp"].dtype) == "datetime64[ns]"


@pytest.mark.parametrize(("name", "content", "rule"), [
    ("latin1.csv", "driver_id,name\n1,José\n".encode("latin-1"), "csv_utf8"),
    ("empty.parquet", b"", "file_not_empty"),
    ("broken.parquet", b"PAR1 this is not parquet", "file_readable"),
    ("empty.csv", b"\n", "file_readable"),
])
def test_unreadable_files_name_the_rule(tmp_path: Path, name: str, content: bytes, rule: str) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    frame, problem = load_raw_batch(src)
    assert frame is None and problem is not None and problem[0] == rule
    with pytest.raises(DataValidationFailed, match=f"rule {rule}"):
        read_raw_batch(src)


# -- results, reports, quarantine ------------------------------------------------------------------------------
def _failing_result(small_demo: tuple) -> dict:
    stats = small_demo[1]["driver_hourly_stats"].copy()
    stats.loc[stats.index[:7], "conv_rate"] = 1.5
    stats["<script>alert(1)</script>"] = 1.0
    return validation.validate_frame(stats, load_suite("driver_hourly_stats"), now=NOW, batch_id="b1",
                                     source="bad.parquet")


def test_failures_come_worst_first_with_column_rule_count_and_sample(small_demo: tuple) -> None:
    result = _failing_result(small_demo)
    assert not result["success"]
    assert result["failures"][0]["rule"] == "expect_table_columns_to_match_set", "table-level problems first"
    [rate] = [f for f in result["failures"] if f["column"] == "conv_rate"]
    assert rate["rule"] == "expect_column_values_to_be_between" and rate["unexpected_count"] == 7
    assert rate["sample"] == [1.5] * 5
    line = validation.describe_failure(rate)
    assert "column 'conv_rate': rule expect_column_values_to_be_between" in line and "7 unexpected" in line
    summary = validation.summarize(result, top=2)
    assert len(summary["failures"]) == 2 and summary["failure_count"] == len(result["failures"])
    json.dumps(summary)  # XCom-able


def test_html_report_is_self_contained_and_escaped(small_demo: tuple) -> None:
    page = render_html(_failing_result(small_demo))
    assert "<style>" in page and "conv_rate" in page and "expect_column_values_to_be_between" in page
    assert not ASSET_URL.search(page), "no external CSS/JS/image reference"
    assert "http://" not in page and "https://" not in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_failing_file_moves_to_quarantine_with_its_report_and_a_name_clash_keeps_both(
    tmp_path: Path, small_demo: tuple
) -> None:
    gate, suite = _gate(tmp_path), load_suite("driver_hourly_stats")
    bad = small_demo[1]["driver_hourly_stats"].assign(conv_rate=2.0)
    for n in (1, 2):
        src = tmp_path / "landing" / "drop.parquet"
        src.parent.mkdir(parents=True, exist_ok=True)
        bad.head(10 * n).to_parquet(src, index=False)
        entry = check_batch(src, suite, gate)
        assert not src.exists() and entry["quarantined_to"]
    folder = tmp_path / "quarantine" / "driver_hourly_stats"
    batches = sorted(p.name for p in folder.glob("*.parquet"))
    assert len(batches) == 2 and "drop.parquet" in batches
    for batch in batches:
        assert (folder / f"{batch}.report.html").is_file() and (folder / f"{batch}.result.json").is_file()
    assert Path(entry["report"]["html"]).is_file()
    assert entry["report"]["url"] == f"/mlops/reports/validation/driver_hourly_stats/{entry['batch_id']}/report.html"


def test_warn_mode_writes_the_report_but_moves_nothing(tmp_path: Path, small_demo: tuple) -> None:
    src = tmp_path / "b.parquet"
    small_demo[1]["driver_hourly_stats"].assign(conv_rate=2.0).to_parquet(src, index=False)
    entry = check_batch(src, load_suite("driver_hourly_stats"), _gate(tmp_path), mode="warn")
    assert not entry["success"] and entry["mode"] == "warn" and entry["quarantined_to"] is None
    assert src.exists() and Path(entry["report"]["json"]).is_file()


def test_a_failing_dataframe_is_written_to_quarantine(tmp_path: Path) -> None:
    frame = _stats()
    entry = check_batch(frame, load_suite("driver_hourly_stats"), _gate(tmp_path), source="upstream")
    assert entry["source"] == "upstream" and not entry["success"]
    assert pd.read_parquet(entry["quarantined_to"]).shape == frame.shape
    assert Path(entry["quarantined_to"]).name == f"{entry['batch_id']}.parquet"


def test_expectations_dir_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLOPS_EXPECTATIONS_DIR", str(tmp_path))
    assert config.expectations_dir() == tmp_path
    assert validation.suite_path("rides") == tmp_path / "rides.json"


def test_statistics_count_each_broken_rule_once(small_demo: tuple) -> None:
    stats = small_demo[1]["driver_hourly_stats"].assign(completed=1, Completed=0)
    result = validation.validate_frame(stats, load_suite("driver_hourly_stats"), now=NOW, label_columns=["completed"])
    counts = result["statistics"]
    assert counts["unsuccessful_rules"] == 2, result["failures"]  # the column set, and leakage (once, two columns)
    assert counts["successful_rules"] + counts["unsuccessful_rules"] == counts["evaluated_rules"]
    assert {f["column"] for f in result["failures"] if f["rule"] == "no_label_leakage"} == {"completed", "Completed"}
