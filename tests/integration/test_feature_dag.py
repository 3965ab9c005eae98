"""dag.test() of a tiny land → apply → materialize DAG over two feature views: asset events mean new rows.

The materialize task has one `features_alias(view)` outlet per view, and two consumer DAGs are
scheduled on the concrete `features_asset(view)` of each view (like `<model>__train`). Three runs:

1. both views are new: one event per view, and each consumer is queued;
2. nothing is new: materialize is skipped, no event, nothing queued;
3. only driver stats got a new batch: one event, for that view only, and only its consumer is queued.

Runs in a subprocess with its own AIRFLOW_HOME (a migrated SQLite metadata DB, DAGs unpaused at
creation so asset events queue their consumers); the runner reads AssetEvent, AssetDagRunQueue,
AssetAliasModel and TaskInstance after each run (fine in a test, never in a task).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops import config
from airflow_mlops.core.demo_data import DemoConfig, driver_stats
from support.airflow_db import migrated_airflow_home
from support.dag_runs import dag_file, program, run_script

pytestmark = pytest.mark.integration

VIEW, OTHER = "driver_hourly_stats", "ride_stats"
VIEWS = [VIEW, OTHER]
CONN_ID = "feast_two_views"

RIDE_VIEW = """

ride_stats = FeatureView(
    name="ride_stats", entities=[driver], ttl=timedelta(days=2),
    schema=[Field(name="trip_distance_km", dtype=Float64)],
    source=FileSource(name="rides_source", path=str(paths().dataset_dir("rides") / "**" / "*.parquet"),
                      timestamp_field="event_timestamp"),
)
"""

DAG_FILE = dag_file("tiny_features")

RUNNER = program("feature_dag_runner")


@pytest.fixture(scope="module")
def three_runs(small_demo: tuple, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Land both demo datasets, then run the tiny DAG three times (the third after a new driver-stats batch)."""
    tmp = tmp_path_factory.mktemp("feature_dag")
    home = tmp / "mlops_home"
    cfg, data = small_demo
    for dataset, frame in data.items():
        (home / "landing" / dataset).mkdir(parents=True)
        frame.to_parquet(home / "landing" / dataset / "first.parquet", index=False)
    newer = driver_stats(DemoConfig(start=cfg.end, days=1, drivers=cfg.drivers, seed=3))
    newer.to_parquet(tmp / "next_day.parquet", index=False)
    repo = tmp / "repo"
    shutil.copytree(config.feature_repo_dir(), repo, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "definitions.py").write_text((repo / "definitions.py").read_text() + RIDE_VIEW)

    dags = tmp / "dags"
    dags.mkdir()
    (dags / "tiny_features.py").write_text(DAG_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(
        AIRFLOW_HOME=str(tmp / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        MLOPS_HOME=str(home),
        AIRFLOW_CONN_FEAST_TWO_VIEWS=json.dumps({"conn_type": "feast", "extra": {"repo_path": str(repo)}}),
        TEST_DAG_PARAMS=json.dumps({"conn_id": CONN_ID, "views": VIEWS}),
    )
    migrated_airflow_home(Path(env["AIRFLOW_HOME"]))  # one migrate per session, copied
    done = run_script(RUNNER, str(dags), str(tmp / 'next_day.parquet'), VIEW, env=env, cwd=tmp, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (done.stdout + done.stderr)[-4000:]
    first, second, third = json.loads(lines[-1][len("RESULT ") :])
    return {"data": data, "newer": newer, "first": first, "second": second, "third": third}


def _events_by_asset(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    by_asset = {event["asset"]: event for event in result["events"]}
    assert len(by_asset) == len(result["events"]), f"more than one event per asset: {result['events']}"
    return by_asset


def test_first_run_emits_one_event_per_view_through_its_alias(three_runs: dict[str, Any]) -> None:
    first, data = three_runs["first"], three_runs["data"]
    assert first["state"] == "success" and first["tasks"]["materialize"] == "success"
    events = _events_by_asset(first)
    assert set(events) == {f"mlops.features.{VIEW}", f"mlops.features.{OTHER}"}
    stats = events[f"mlops.features.{VIEW}"]
    assert stats["uri"] == f"mlops://features/{VIEW}", "the alias must add the asset the training DAGs schedule on"
    assert stats["aliases"] == [f"mlops.features.{VIEW}.updates"]
    assert stats["extra"]["feature_view"] == VIEW and stats["extra"]["mode"] == "full"
    assert stats["extra"]["rows"] == len(data[VIEW])
    assert set(stats["extra"]) == {"feature_view", "mode", "rows", "start", "end", "batch_ids"}
    assert first["queued"] == sorted(f"consumer_of_{v}" for v in VIEWS)
    # What the UI's asset graph resolves: feature DAG → alias → concrete asset → consumers.
    assert first["aliases"] == {f"mlops.features.{v}.updates": [f"mlops.features.{v}"] for v in VIEWS}


def test_a_run_without_new_data_is_skipped_and_emits_no_asset_event(three_runs: dict[str, Any]) -> None:
    second = three_runs["second"]
    assert second["state"] == "success", "a skipped materialize does not fail the run"
    assert second["tasks"] == {"land": "success", "apply": "success", "materialize": "skipped"}
    assert second["events"] == [] and second["queued"] == [], "nothing retrains on unchanged data"


def test_a_partial_materialize_emits_an_event_only_for_the_updated_view(three_runs: dict[str, Any]) -> None:
    third, newer = three_runs["third"], three_runs["newer"]
    assert third["state"] == "success" and third["tasks"]["materialize"] == "success"
    [event] = third["events"]  # ride_stats had no new rows: no event, not even one with an empty extra
    assert event["asset"] == f"mlops.features.{VIEW}" and event["aliases"] == [f"mlops.features.{VIEW}.updates"]
    assert event["extra"]["mode"] == "incremental" and event["extra"]["rows"] == len(newer)
    assert len(event["extra"]["batch_ids"]) == 1
    assert third["queued"] == [f"consumer_of_{VIEW}"], "only the updated view's consumer may start"
