"""MLflowModelAliasTrigger against a real SQLite MLflow registry, and MLflowModelAliasSensor inside dag.test().

The alias is moved by another thread (trigger tests) or by a thread of the dag.test() runner process
while the sensor waits; nothing is patched.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.triggers.mlflow import MLflowModelAliasTrigger, decide
from support.airflow_db import migrated_airflow_home
from support.dag_runs import dag_file, program, run_script

MODEL = "alias_model"


@pytest.fixture
def registry(mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A registered model with versions 1..3 (no artifacts needed to move aliases); champion -> 1."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    from airflow_mlops.hooks.mlflow import MLflowHook

    client = MLflowHook().get_conn()
    client.create_registered_model(MODEL)
    source = mlops_home / "model"
    source.mkdir()
    for _ in range(3):
        client.create_model_version(MODEL, source.as_uri())
    client.set_registered_model_alias(MODEL, "champion", "1")
    return client


def run_trigger(trigger: MLflowModelAliasTrigger) -> dict[str, Any]:
    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first_event(), timeout=60))


def move_later(client: Any, version: str, delay: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), client.set_registered_model_alias(
        MODEL, "champion", version)))
    thread.start()
    return thread


@pytest.mark.adapter
@pytest.mark.parametrize(("current", "from_version", "version", "done"), [
    (None, None, None, False), ("1", None, None, True), ("1", "1", None, False), ("2", "1", None, True),
    ("2", "1", "3", False), ("3", "1", "3", True), ("3", None, 3, True), ("2", "", "", True),
])
def test_decide(current: str | None, from_version: Any, version: Any, done: bool) -> None:
    assert decide(current, from_version, version) is done


@pytest.mark.adapter
def test_trigger_fires_when_another_thread_moves_the_alias(registry: Any) -> None:
    trigger = MLflowModelAliasTrigger(model_name=MODEL, from_version="1", poll_interval=0.2)
    started = time.monotonic()
    mover = move_later(registry, "2", 1.0)
    event = run_trigger(trigger)
    mover.join()
    assert event["status"] == "success" and (event["model"], event["alias"], event["version"]) == (
        MODEL, "champion", "2"), event
    assert 1.0 <= time.monotonic() - started < 20
    assert "points at version 2" in event["message"]


@pytest.mark.adapter
def test_trigger_waits_for_the_exact_version_and_skips_others(registry: Any) -> None:
    trigger = MLflowModelAliasTrigger(model_name=MODEL, version="3", poll_interval=0.2)
    movers = [move_later(registry, "2", 0.5), move_later(registry, "3", 1.5)]
    event = run_trigger(trigger)
    for mover in movers:
        mover.join()
    assert (event["status"], event["version"]) == ("success", "3"), event


@pytest.mark.adapter
def test_trigger_times_out_naming_where_the_alias_points(registry: Any) -> None:
    deadline = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    event = run_trigger(MLflowModelAliasTrigger(model_name=MODEL, from_version="1", poll_interval=0.3,
                                                deadline=deadline))
    assert event["status"] == "timeout" and event["version"] == "1"
    assert "points at version 1; waiting for any version other than 1" in event["message"]


@pytest.mark.adapter
def test_trigger_treats_a_missing_model_as_not_yet(registry: Any) -> None:
    deadline = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
    event = run_trigger(MLflowModelAliasTrigger(model_name="no_such_model", poll_interval=0.2, deadline=deadline))
    assert event["status"] == "timeout" and event["version"] is None and "alias not set" in event["message"]


@pytest.mark.adapter
def test_trigger_serializes_to_its_own_arguments() -> None:
    trigger = MLflowModelAliasTrigger(model_name=MODEL, alias="challenger", from_version=4, poll_interval=5,
                                      deadline="2026-01-01T00:00:00+00:00")
    path, kwargs = trigger.serialize()
    assert path == "airflow_mlops.triggers.mlflow.MLflowModelAliasTrigger"
    assert MLflowModelAliasTrigger(**kwargs).serialize() == (path, kwargs) and kwargs["from_version"] == "4"


DAG_FILE = dag_file("alias_wait")

RUNNER = program("mlflow_alias_sensor_runner")


@pytest.mark.integration
def test_sensor_in_dag_test_pokes_defers_and_times_out(mlops_home: Path, tmp_path: Path, caplog: Any) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "alias_wait.py").write_text(DAG_FILE)
    (mlops_home / "model").mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW_", "AIRFLOW__", "MLFLOW_TRACKING", "MLFLOW_REGISTRY"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", MLOPS_HOME=str(mlops_home))
    migrated_airflow_home(Path(env["AIRFLOW_HOME"]))  # one migrate per session, copied
    done = run_script(RUNNER, str(dags), (mlops_home / 'model').as_uri(), env=env, cwd=tmp_path, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, (done.stdout + done.stderr)[-6000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["tasks"] == {"poke_until_moved": "success", "defer_until_v3": "success",
                               "defer_until_v9": "failed"}, result
    assert result["xcoms"]["poke_until_moved"] == {"model": MODEL, "alias": "champion", "version": "2"}
    assert result["xcoms"]["defer_until_v3"] == {"model": MODEL, "alias": "champion", "version": "3"}
    # dag.test() ran the trigger inline; the timeout message names the wait and where the alias is.
    log = done.stdout + done.stderr
    assert "running trigger in line" in log
    assert "alias_model@champion points at version 2; waiting for version 3: still waiting" in log
    assert "alias_model@champion did not reach version 9 within 1s" in log, log[-4000:]
