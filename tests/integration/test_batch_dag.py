"""dag.test() of the real batch DAG (`ride_completion__batch_predict`, built from the shipped spec) on demo data.

On the session's trained demo state (`support/demo_state.py`: the feature pipeline on 5 days of demo
data and the training DAG, v1 champion; its own Airflow metadata DB, MLOPS_HOME and SQLite MLflow store):

1. the state as built: v1 is champion;
2. the batch DAG twice: each run scores the spec's `batch.lookback_days` of `rides` with v1 and writes
   its own `run=<run id>/` folder; each emits `mlops.predictions.ride_completion`;
3. the batch task once more by hand with the first run's id (what a retry or a cleared task does):
   the folder is replaced, not appended to, and its manifest is byte-equal to the first attempt's.

The predictions are checked against the training path: the same entity rows through
`build_training_set` (Feast, duckdb) and the champion's `predict_proba` give the same numbers.

The runner reads task states and asset events from the metadata DB (fine in a test, never in a task).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.dag_runs import program
from support.demo_state import checkout_trained_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PROJECT = Path(__file__).resolve().parents[2]
MODEL = "ride_completion"

RUNNER = program("batch_dag_runner")


@pytest.fixture(scope="module")
def runs() -> dict[str, Any]:
    # dag.test() syncs the DAG from the dags folder's bundle: the project's own DAG file.
    demo = checkout_trained_demo()
    return {**demo.run(RUNNER, timeout=560)[0], **demo.built}


def test_training_promoted_a_champion_to_score_with(runs: dict[str, Any]) -> None:
    assert runs["features"]["state"] == "success", runs["features"]
    assert runs["train"]["tasks"]["promote"] == "success", runs["train"]["tasks"]


def test_each_batch_run_writes_exactly_the_entity_rows_into_its_own_folder(runs: dict[str, Any]) -> None:
    entity_rows = runs["entity_rows"]
    assert entity_rows > 1000, "one day of demo rides"
    paths = []
    for name in ("batch_1", "batch_2"):
        batch = runs[name]
        assert batch["state"] == "success" and batch["tasks"] == {"batch_predict": "success"}, batch
        out = batch["folder"]
        assert out["rows"] == out["unique_keys"] == entity_rows, out
        assert out["columns"] == ["driver_id", "event_timestamp", "trip_distance_km", "surge_multiplier",
                                  "pickup_hour", "prediction", "model_version"]
        assert out["versions"] == ["1"] and out["manifest"]["rows"] == entity_rows
        paths.append(batch["events"][-1]["path"])
    assert paths[0] != paths[1] and all(f"/predictions_batch/{MODEL}/run=" in p for p in paths)


def test_each_run_emits_a_predictions_event_with_version_rows_path_window(runs: dict[str, Any]) -> None:
    events = runs["batch_2"]["events"]
    assert len(events) == 2, "one event per batch run"
    first = events[0]
    assert first["version"] == "1" and first["rows"] == runs["entity_rows"]
    assert first["path"].endswith(f"run={runs['batch_1']['run_id']}".replace("/", "_"))
    window = first["window"]
    assert (window["dataset"], window["lookback_days"]) == ("rides", 1)
    assert window["start"] < window["end"] and len(first["sha256"]) == 64


def test_rerunning_a_run_replaces_its_folder_with_byte_equal_output(runs: dict[str, Any]) -> None:
    again, first = runs["again"], runs["batch_1"]["events"][0]
    assert again["lineage"]["path"] == first["path"]
    assert again["folder"]["rows"] == runs["entity_rows"], "replaced, not appended"
    assert again["lineage"]["sha256"] == first["sha256"], "same run, same inputs: byte-equal manifest and parts"
    assert len(runs["run_folders"]) == 2 and all(n.startswith("run=") for n in runs["run_folders"]), runs["run_folders"]


def test_an_unknown_version_fails_and_a_missing_alias_skips(runs: dict[str, Any]) -> None:
    assert runs["unknown_version"].startswith("BatchInferenceError: cannot batch-score: "), runs["unknown_version"]
    assert "has no version '99'; existing versions: [1]" in runs["unknown_version"]
    assert runs["no_champion"].startswith("AirflowSkipException: ride_completion has no version with alias "
                                          "'challenger_of_tomorrow' yet"), runs["no_champion"]
    assert not any("refused" in name for name in runs["run_folders"]), "nothing written for refused runs"


def test_batch_predictions_equal_the_training_path_on_the_same_rows(runs: dict[str, Any]) -> None:
    check = runs["vs_training_path"]
    assert check["both"] == check["rows"] == runs["entity_rows"]
    assert check["max_abs_diff"] == 0.0, check
