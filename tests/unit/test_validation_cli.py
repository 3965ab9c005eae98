"""`airflow-mlops suite`: profile a trusted batch into a suite file, defaults from the specs, no silent overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_mlops.cli import main
from airflow_mlops.core.suites import Contract

pytestmark = pytest.mark.unit


@pytest.fixture
def batches(tmp_path: Path, small_demo: tuple) -> dict[str, Path]:
    paths = {}
    for dataset, frame in small_demo[1].items():
        paths[dataset] = tmp_path / f"{dataset}.parquet"
        frame.to_parquet(paths[dataset], index=False)
    return paths


def test_suite_for_a_label_table_takes_keys_and_label_from_the_spec(
    tmp_path: Path, batches: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rides.json"
    assert main(["suite", "--dataset", "rides", "--from", str(batches["rides"]), "--out", str(out),
                 "--unique", "ride_id"]) == 0
    assert f"wrote suite 'rides' to {out}" in capsys.readouterr().out
    suite = json.loads(out.read_text())
    import great_expectations as gx  # here, not at the top: collection stays fast

    assert gx.ExpectationSuite(**suite).to_json_dict() == suite
    contract = Contract.from_suite(suite)
    assert (contract.key_columns, contract.label_column, contract.timestamp_column) == (
        ("driver_id",), "completed", "event_timestamp")


def test_an_existing_suite_is_not_overwritten_without_force(
    tmp_path: Path, batches: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rides.json"
    out.write_text("{}  # hand-edited")
    assert main(["suite", "--dataset", "rides", "--from", str(batches["rides"]), "--out", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err and out.read_text() == "{}  # hand-edited"
    assert main(["suite", "--dataset", "rides", "--from", str(batches["rides"]), "--out", str(out), "--force"]) == 0


def test_a_feature_table_needs_keys_and_forbids_every_spec_label(
    tmp_path: Path, batches: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stats.json"
    source = str(batches["driver_hourly_stats"])
    assert main(["suite", "--dataset", "driver_hourly_stats", "--from", source, "--out", str(out)]) == 2
    assert "pass --keys" in capsys.readouterr().err
    assert main(["suite", "--dataset", "driver_hourly_stats", "--from", source, "--out", str(out),
                 "--keys", "driver_id"]) == 0
    contract = Contract.from_suite(json.loads(out.read_text()))
    assert contract.label_column is None and contract.forbidden_columns == ("completed", "duration_min")
    assert contract.timestamp_columns == ("event_timestamp", "created")
