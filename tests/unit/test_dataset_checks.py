"""`airflow-mlops check`, data side (core.dataset_checks): real specs, real suites, real landed parquet in tmp dirs."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from airflow_mlops.core.dataset_checks import (
    column_problems,
    dataset_problems,
    lookback_problems,
    lookback_rows,
    suite_label_problems,
)
from airflow_mlops.core.demo_data import DemoConfig, generate
from airflow_mlops.core.offline import land_landing_dir
from airflow_mlops.core.spec import ModelSpec, parse_spec
from support.spec_edits import read_with_fields

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[2]
SPEC = PROJECT / "include" / "models" / "ride_completion.yaml"
DRIVER_SOURCE = "offline/driver_hourly_stats/**/*.parquet"


@pytest.fixture
def suites(tmp_path: Path) -> Path:
    folder = tmp_path / "expectations"
    shutil.copytree(PROJECT / "include" / "expectations", folder)
    return folder


def _spec(tmp_path: Path, **fields: object) -> ModelSpec:
    data = read_with_fields(SPEC, **fields)
    path = tmp_path / "models" / "ride_completion.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return parse_spec(path.read_text(), str(path))


def _edit_contract(suites: Path, name: str, **meta: object) -> Path:
    path = suites / f"{name}.json"
    suite = json.loads(path.read_text())
    suite["meta"]["airflow_mlops"].update(meta)
    path.write_text(json.dumps(suite))
    return path


@pytest.fixture(scope="module")
def demo() -> dict:
    cfg = DemoConfig(start=datetime(2026, 10, 1, tzinfo=UTC), days=6, drivers=20, rides_per_day=300, seed=5)
    return generate(cfg)


def _land(home: Path, frames: dict) -> None:
    landing = home / "landing"
    for name, frame in frames.items():
        (landing / name).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(landing / name / f"{name}.parquet", index=False)
    land_landing_dir(landing, home / "offline")


def test_shipped_spec_and_suites_have_no_data_problems(tmp_path: Path, suites: Path) -> None:
    spec = _spec(tmp_path)
    assert dataset_problems([spec], home=tmp_path / "home", expectations=suites, feature_sources=[DRIVER_SOURCE]) == []


def test_spec_columns_missing_from_the_suite_column_set(tmp_path: Path, suites: Path) -> None:
    spec = _spec(tmp_path, features__label="complete", features__entity_keys=["driver_id", "rider_id"],
                 features__entity_df__request_features=["trip_distance_km", "tip", "pickup_hour_utc"])
    problems = column_problems(spec, home=tmp_path / "home", expectations=suites)
    text = "\n".join(problems)
    assert len(problems) == 3, text
    where = f"{spec.source_file}: "
    assert f"{where}features.label: 'complete' is not in dataset 'rides'" in text
    assert f"{where}features.entity_keys: 'rider_id' is not in dataset 'rides'" in text
    assert f"{where}features.entity_df.request_features: ['tip', 'pickup_hour_utc'] are not in dataset 'rides'" in text
    assert f"suite {suites / 'rides.json'} (expect_table_columns_to_match_set)" in text  # where the columns came from
    assert "'completed'" in text and "fix the name(s)" in text


def test_landed_columns_win_over_the_suite(tmp_path: Path, suites: Path, demo: dict) -> None:
    home = tmp_path / "home"
    _land(home, {"rides": demo["rides"].drop(columns=["pickup_hour"])})
    spec = _spec(tmp_path)
    [problem] = column_problems(spec, home=home, expectations=suites)
    assert "features.entity_df.request_features: 'pickup_hour' is not in dataset 'rides'" in problem
    assert f"landed data in {home / 'offline' / 'rides'}" in problem
    assert "'date'" not in problem  # the hive partition column is not a dataset column


def test_no_landed_data_and_no_suite_means_nothing_to_check(tmp_path: Path) -> None:
    spec = _spec(tmp_path, features__label="nonexistent")
    empty = tmp_path / "no_suites"
    empty.mkdir()
    assert column_problems(spec, home=tmp_path / "home", expectations=empty) == []


def test_label_table_suite_naming_another_label(tmp_path: Path, suites: Path) -> None:
    path = _edit_contract(suites, "rides", label_column="cancelled")
    [problem] = suite_label_problems([_spec(tmp_path)], suites, [DRIVER_SOURCE])
    assert problem.startswith(f"{path}: meta.airflow_mlops.label_column: 'cancelled' is not the label of the model(s) "
                              "trained on dataset 'rides' (['ride_completion']: features.label ['completed'])")
    assert "no_label_leakage" in problem and "set it to 'completed'" in problem


def test_training_set_suite_naming_another_label(tmp_path: Path, suites: Path) -> None:
    path = _edit_contract(suites, "ride_completion_training", label_column="is_fraud")
    [problem] = suite_label_problems([_spec(tmp_path)], suites, [DRIVER_SOURCE])
    assert problem.startswith(f"{path}: meta.airflow_mlops.label_column: 'is_fraud' is not the label")


def test_feature_table_suite_naming_a_model_label(tmp_path: Path, suites: Path) -> None:
    path = _edit_contract(suites, "driver_hourly_stats", label_column="completed", forbidden_columns=[])
    [problem] = suite_label_problems([_spec(tmp_path)], suites, [f"/x/{DRIVER_SOURCE}"])
    assert problem.startswith(f"{path}: meta.airflow_mlops.label_column: 'completed' is the label of model(s) "
                              "['ride_completion'], but dataset 'driver_hourly_stats' is a feature table")
    assert "set label_column to null and list 'completed' in forbidden_columns" in problem
    # Without the feature repo (unreadable) a dataset cannot be told to be a feature table: no guess.
    assert suite_label_problems([_spec(tmp_path)], suites, None) == []


def test_lookback_rows_match_what_training_reads(tmp_path: Path, demo: dict) -> None:
    """The check counts the rows load_entity_df keeps and the split train() makes, not an estimate."""
    from airflow_mlops.core.training import split
    from airflow_mlops.core.training_set import load_entity_df

    home = tmp_path / "home"
    _land(home, {"rides": demo["rides"]})
    frame = load_entity_df(home / "offline" / "rides", "event_timestamp", 2, ["event_timestamp", "completed"])
    rows = lookback_rows(load_entity_df(home / "offline" / "rides", "event_timestamp", 365),
                         "event_timestamp", "completed", 2, "time", 0.2)
    _, held_out = split(frame, "time", 0.2, "event_timestamp")
    assert rows.total == len(demo["rides"]) and rows.kept == len(frame) and rows.held_out == len(held_out)
    assert rows.held_out_classes == (0, 1) and rows.train_classes == (0, 1)


def test_lookback_too_short_for_evaluation_says_how_many_rows_it_keeps(tmp_path: Path, demo: dict) -> None:
    home = tmp_path / "home"
    _land(home, {"rides": demo["rides"]})
    spec = _spec(tmp_path, training__lookback_days=1, evaluation__min_slice_rows=300)
    [problem] = lookback_problems(spec, home=home)
    rows = lookback_rows(demo["rides"], "event_timestamp", "completed", 1, "time", 0.2)
    assert problem.startswith(f"{spec.source_file}: training.lookback_days: 1 day(s) keeps {rows.kept} of the "
                              f"{len(demo['rides'])} labelled rows of dataset 'rides'")
    assert f"holds out {rows.held_out} row(s) for evaluation, fewer than evaluation.min_slice_rows (300)" in problem
    assert "raise training.lookback_days (the landed labels span 6.0 day(s))" in problem
    assert lookback_problems(_spec(tmp_path, training__lookback_days=6, evaluation__min_slice_rows=300), home) == []


def test_lookback_keeping_one_class_only(tmp_path: Path, demo: dict) -> None:
    rides = demo["rides"].sort_values("event_timestamp").reset_index(drop=True)
    newest_day = rides["event_timestamp"] > rides["event_timestamp"].max() - (rides["event_timestamp"].max()
                                                                              - rides["event_timestamp"].min()) / 6
    rides.loc[newest_day, "completed"] = 1
    home = tmp_path / "home"
    _land(home, {"rides": rides})
    [problem] = lookback_problems(_spec(tmp_path, training__lookback_days=1, evaluation__min_slice_rows=5), home)
    assert "rows hold only label value(s) [1] of 'completed'" in problem and "roc_auc is undefined" in problem


def test_a_float_label_under_task_binary_names_the_column_the_task_and_the_fix(tmp_path: Path, demo: dict) -> None:
    rides = demo["rides"].assign(completed=demo["rides"]["trip_distance_km"] * 3.0)  # a measured quantity
    home = tmp_path / "home"
    _land(home, {"rides": rides})
    [problem] = lookback_problems(_spec(tmp_path), home)
    assert "features.label: 'completed' must be binary 0/1 under task binary" in problem
    assert "set task: regression" in problem and "landed data of dataset 'rides'" in problem
    assert "the task is binary (label contract ride_completion_training.json" in problem


def test_the_shipped_regression_example_fits_its_landed_trips(tmp_path: Path, demo: dict) -> None:
    home = tmp_path / "home"
    _land(home, {"trips": demo["trips"]})
    path = PROJECT / "include" / "models" / "ride_duration.yaml"
    spec = parse_spec(path.read_text(), str(path))
    assert spec.task == "regression" and lookback_problems(spec, home) == []


def test_unreadable_landed_data_is_reported_not_raised(tmp_path: Path, suites: Path) -> None:
    broken = tmp_path / "home" / "offline" / "rides" / "date=2026-10-01" / "part.parquet"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not parquet at all")
    spec = _spec(tmp_path)
    [problem] = dataset_problems([spec], home=tmp_path / "home", expectations=suites)
    assert problem.startswith(f"{spec.source_file}: features.entity_df.dataset: the landed data of 'rides' in "
                              f"{tmp_path / 'home' / 'offline' / 'rides'} cannot be read")
