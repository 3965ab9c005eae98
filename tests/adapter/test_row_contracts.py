"""Row-level contracts through the real gate and landing operators: one row per key, whatever the files.

Each test lands a good batch first, then sends what a new user sends — the same rows under a new
name, rows repeated across two files, a correction — and checks what the run says, what lands and
what the offline store holds after (never two rows with one key).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as pads
import pytest

from airflow_mlops import config
from airflow_mlops.core.row_keys import RowPolicy, landed_rows, match_rows
from airflow_mlops.exceptions import DataValidationFailed
from airflow_mlops.operators.features import LandRawBatchesOperator
from airflow_mlops.operators.validation import XCOM_KEY, GXValidateRawBatchesOperator
from support.fake_ti import run_operator

pytestmark = pytest.mark.adapter

PROJECT_SUITES = Path(__file__).resolve().parents[2] / "include" / "expectations"
STATS, RIDES = "driver_hourly_stats", "rides"


@pytest.fixture
def suites(tmp_path: Path) -> Path:
    folder = tmp_path / "expectations"
    shutil.copytree(PROJECT_SUITES, folder)
    return folder


def _set_contract(suites: Path, dataset: str, **changes: Any) -> None:
    path = suites / f"{dataset}.json"
    suite = json.loads(path.read_text())
    suite["meta"]["airflow_mlops"].update(changes)
    path.write_text(json.dumps(suite))


def _drop(frame: pd.DataFrame, dataset: str, name: str) -> Path:
    target = config.paths().landing_dir / dataset / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".csv"):
        frame.to_csv(target, index=False)
    else:
        frame.to_parquet(target, index=False)
    return target


def _gate_and_land(suites: Path, run_id: str) -> tuple[Any, Any]:
    """validate_raw_batches, then (if it passed) land_raw_batches with its summary, as the feature DAG wires them."""
    ti, outcome = run_operator(GXValidateRawBatchesOperator(task_id="validate_raw_batches", expectations_dir=str(
        suites), label_columns=["completed"]), run_id)
    if isinstance(outcome, DataValidationFailed):
        return outcome, None
    landed = LandRawBatchesOperator(task_id="land_raw_batches", validated=ti.xcom[XCOM_KEY]).execute({})
    return ti.xcom[XCOM_KEY], landed


def _offline(dataset: str) -> pd.DataFrame:
    files = [str(p) for p in sorted((config.paths().offline_dir / dataset).glob("date=*/*.parquet"))]
    return pads.dataset(files, format="parquet").to_table().to_pandas() if files else pd.DataFrame()


def _assert_one_row_per_key(dataset: str, key: list[str]) -> None:
    stored = _offline(dataset)
    assert not stored.duplicated(key).any(), stored[stored.duplicated(key, keep=False)].head()


@pytest.fixture
def landed_once(mlops_home: Path, small_demo: tuple, suites: Path) -> dict[str, pd.DataFrame]:
    data = small_demo[1]
    _drop(data[STATS], STATS, "day1.parquet")
    _drop(data[RIDES], RIDES, "day1.parquet")
    summary, landed = _gate_and_land(suites, "run1")
    assert landed is not None and landed["landed"] == 2, summary
    return data


def test_rows_sent_again_under_a_new_name_are_rejected_naming_keys_and_files(
        landed_once: dict[str, pd.DataFrame], suites: Path) -> None:
    before = _offline(STATS)
    _drop(landed_once[STATS].head(50), STATS, "resent.csv")
    outcome, _ = _gate_and_land(suites, "run2")
    message = str(outcome)
    assert isinstance(outcome, DataValidationFailed), outcome
    assert "column 'driver_id+event_timestamp': rule row_key_unique" in message, message
    assert "50 row(s) are already landed with the same values (in day1.parquet (landed as batch" in message
    assert "duplicates: skip_existing" in message, "the message names the fix"
    assert len(_offline(STATS)) == len(before)


def test_skip_existing_drops_identical_rows_lands_the_new_ones_and_counts(
        landed_once: dict[str, pd.DataFrame], suites: Path, small_demo: tuple) -> None:
    _set_contract(suites, STATS, duplicates="skip_existing")
    stats = landed_once[STATS]
    later = stats.assign(event_timestamp=stats["event_timestamp"] + pd.Timedelta(days=3),
                         created=stats["created"] + pd.Timedelta(days=3)).head(40)
    _drop(pd.concat([stats.head(30), later], ignore_index=True), STATS, "overlap.parquet")
    summary, landed = _gate_and_land(suites, "run2")
    assert landed is not None, summary
    assert landed["rows"] == 40 and landed["identical_skipped"] == 30, landed
    assert summary["landable"][0]["rows"]["identical_skipped"] == 30
    assert len(_offline(STATS)) == len(stats) + 40
    _assert_one_row_per_key(STATS, ["driver_id", "event_timestamp"])


def test_rows_repeated_across_two_files_of_one_run_fail_naming_both_files(
        mlops_home: Path, small_demo: tuple, suites: Path) -> None:
    stats = small_demo[1][STATS]
    _drop(stats.iloc[:100], STATS, "a.parquet")
    _drop(stats.iloc[80:200], STATS, "b.parquet")
    outcome, _ = _gate_and_land(suites, "run1")
    message = str(outcome)
    assert isinstance(outcome, DataValidationFailed)
    assert "20 row key(s) are also in an earlier file of this run (landing/driver_hourly_stats/a.parquet)" in message
    assert "b.parquet" in message and not _offline(STATS).size


def test_a_conflicting_correction_fails_unless_the_contract_replaces(
        landed_once: dict[str, pd.DataFrame], suites: Path) -> None:
    stats = landed_once[STATS]
    corrected = stats.head(5).assign(conv_rate=lambda f: (f["conv_rate"] * 0.5).round(4))
    _drop(corrected, STATS, "fix.parquet")
    outcome, _ = _gate_and_land(suites, "run2")
    assert isinstance(outcome, DataValidationFailed)
    assert "rule no_conflicting_corrections" in str(outcome) and "columns conv_rate" in str(outcome), outcome
    assert "corrections: replace" in str(outcome)

    _set_contract(suites, STATS, corrections="replace")
    home = config.paths()
    shutil.move(home.quarantine_dir / STATS / "fix.parquet", home.landing_dir / STATS / "fix.parquet")
    summary, landed = _gate_and_land(suites, "run3")
    assert landed is not None, summary
    assert landed["corrections_replaced"] == 5 and landed["rows"] == 0, landed
    stored = _offline(STATS)
    assert len(stored) == len(stats)
    _assert_one_row_per_key(STATS, ["driver_id", "event_timestamp"])
    merged = stored.merge(corrected[["driver_id", "event_timestamp", "conv_rate"]], on=["driver_id", "event_timestamp"])
    assert len(merged) == 5 and (merged["conv_rate_x"] == merged["conv_rate_y"]).all()


def test_a_key_column_like_ride_id_identifies_rides_whatever_their_timestamp(
        landed_once: dict[str, pd.DataFrame], suites: Path) -> None:
    rides = landed_once[RIDES]
    moved = rides.head(3).assign(event_timestamp=lambda f: f["event_timestamp"] + pd.Timedelta(minutes=1))
    _drop(moved, RIDES, "late.parquet")
    outcome, _ = _gate_and_land(suites, "run2")
    assert "column 'ride_id': rule no_conflicting_corrections" in str(outcome), outcome


def test_a_batch_far_before_the_landed_history_is_refused(landed_once: dict[str, pd.DataFrame], suites: Path) -> None:
    stats = landed_once[STATS]
    early = stats.head(24).assign(event_timestamp=stats["event_timestamp"].head(24) - pd.Timedelta(days=400),
                                  created=stats["created"].head(24) - pd.Timedelta(days=400))
    _drop(early, STATS, "old.parquet")
    outcome, _ = _gate_and_land(suites, "run2")
    assert "column 'event_timestamp': rule timestamps_within_backfill_span" in str(outcome), outcome
    assert "more than 366 days before the landed history" in str(outcome)


def test_files_the_dag_does_not_read_are_listed_every_run(mlops_home: Path, small_demo: tuple, suites: Path) -> None:
    stats = small_demo[1][STATS]
    _drop(stats, STATS, "good.parquet")
    _drop(stats.head(5), STATS, "2026-10/nested.parquet")
    (config.paths().landing_dir / STATS / "notes.json").write_text("{}")
    (config.paths().landing_dir / "loose.csv").write_text("a\n1\n")
    (config.paths().landing_dir / STATS / ".writing.parquet.tmp").write_text("")  # in flight: not reported
    (config.paths().landing_dir / STATS / "_part-0.parquet").write_text("")
    summary, landed = _gate_and_land(suites, "run1")
    assert landed is not None and landed["landed"] == 1
    assert (config.paths().landing_dir / STATS / "_landed" / "good.parquet").is_file()
    reasons = {u["file"]: u["reason"] for u in summary["unconsumed"]}
    assert set(reasons) == {"driver_hourly_stats/2026-10/nested.parquet", "driver_hourly_stats/notes.json",
                            "driver_hourly_stats/_part-0.parquet", "loose.csv"}, reasons
    assert "subdirectory" in reasons["driver_hourly_stats/2026-10/nested.parquet"]
    assert "extension '.json'" in reasons["driver_hourly_stats/notes.json"]
    index = Path(summary["report"]["html"]).read_text()
    assert "Files not consumed" in index and "nested.parquet" in index
    summary, _ = _gate_and_land(suites, "run2")
    assert len(summary["unconsumed"]) == 4, "reported again on every run, never ignored forever (not _landed/)"


def test_a_dataset_dir_in_the_wrong_case_names_the_right_one(mlops_home: Path, small_demo: tuple,
                                                            suites: Path) -> None:
    _drop(small_demo[1][RIDES], "Rides", "batch.parquet")
    outcome, _ = _gate_and_land(suites, "run1")
    assert "did you mean landing/rides/?" in str(outcome), outcome


def test_matching_rows_equals_a_pandas_merge(small_demo: tuple, tmp_path: Path) -> None:
    """Our classification of identical / conflicting rows against the library's own join."""
    stats = small_demo[1][STATS].head(300).reset_index(drop=True)
    others = stats.iloc[100:250].copy()
    others.loc[others.index[:30], "rating"] = 1.0
    key = ["driver_id", "event_timestamp"]
    matches = match_rows(stats, others.assign(__file="x"), key)
    joined = stats.reset_index().merge(others, on=key, suffixes=("", "_old"))
    values = [c for c in stats.columns if c not in key]
    differs = (joined[values].to_numpy() != joined[[f"{c}_old" for c in values]].to_numpy()).any(axis=1)
    assert sorted(matches.conflicting) == sorted(joined.loc[differs, "index"])
    assert sorted(matches.identical) == sorted(joined.loc[~differs, "index"])
    assert landed_rows(tmp_path, RowPolicy(STATS, tuple(key), "event_timestamp"), stats).empty
