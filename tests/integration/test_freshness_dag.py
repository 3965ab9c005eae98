"""dag.test() of the freshness sensor (deferrable) and check operator inside a real DAG run.

Airflow itself serializes the trigger, runs it (inline, as `dag.test()` does), resumes the task with
the event in `execute_complete`, and records states and XComs. Runs in a subprocess with its own
AIRFLOW_HOME (migrated SQLite metadata DB); the runner reads TaskInstance and XCom rows afterwards.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflow_mlops import config
from airflow_mlops.core.demo_data import DemoConfig, driver_stats
from airflow_mlops.core.offline import land_landing_dir
from airflow_mlops.hooks.feast import FeastHook
from support.airflow_db import migrated_airflow_home
from support.dag_runs import dag_file, program, run_script

pytestmark = pytest.mark.integration

DAG_FILE = dag_file("freshness_gate")

RUNNER = program("freshness_dag_runner")


def test_deferred_sensor_fails_with_the_message_and_the_check_passes(mlops_home: Path, tmp_path: Path) -> None:
    newest = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    frame = driver_stats(DemoConfig(start=newest - timedelta(hours=23), days=1, drivers=5, seed=3))
    home = config.paths()
    (home.landing_dir / "driver_hourly_stats").mkdir(parents=True)
    frame.to_parquet(home.landing_dir / "driver_hourly_stats" / "stats.parquet", index=False)
    land_landing_dir(home.landing_dir, home.offline_dir)
    FeastHook().apply()
    FeastHook().materialize_new()

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "freshness_gate.py").write_text(DAG_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", MLOPS_HOME=str(mlops_home))
    migrated_airflow_home(Path(env["AIRFLOW_HOME"]))  # one migrate per session, copied
    done = run_script(RUNNER, str(dags), env=env, cwd=tmp_path, timeout=300)
    output = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, output[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])

    assert result["tasks"] == {"wait_for_10m_fresh": "failed", "check_tag_rule": "success"}, output[-4000:]
    assert "running trigger in line" in output  # it really deferred
    for text in ("features still stale after waiting 2s", "feature view 'driver_hourly_stats' is STALE",
                 "allowed 10m (max_staleness argument)", "Fix: run the `mlops_features` DAG"):
        assert text in output, f"{text!r} not in the task log:\n{output[-4000:]}"
    assert re.search(r"staleness 3[0-4]m", output), output[-4000:]  # 30 min old + the test's own time
    assert result["check"]["fresh"] is True and result["check"]["views"][0]["allowed"] == "2h"
