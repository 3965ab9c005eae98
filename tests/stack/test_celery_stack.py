"""The production profile on the CeleryExecutor with real workers (README "Scale out").

One stack for the module: scheduler, dag-processor, triggerer, api-server and two `airflow celery
worker` processes on 127.0.0.1 — `celery-default` (queue `default`) and `celery-training` (queue
`training`, the spec's `training.queue`). Broker: Redis db 12; result backend and Airflow metadata:
a fresh PostgreSQL database; MLflow, prediction log and monitoring history: another one; Feast's
online store: Redis db 13. No other test uses these Redis databases; both are flushed first.

Each worker reports its own name as the task instance's `hostname`
(tests/support/worker_hostname), so the REST API says which worker ran each task.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from support.airflow_client import AirflowClient, wait_for
from support.airflow_stack import AirflowStack, airflow_stack_for_fixture
from support.closed_loop import (
    DAG_IDS,
    MODEL,
    TRAINING,
    Clock,
    describe,
    loop_env,
    run_closed_loop_on,
    run_features,
)
from support.mlflow_server import fresh_postgres_database

# celery: part of `make test-stack` (CI); `make test-celery` runs this module alone
pytestmark = [pytest.mark.stack, pytest.mark.celery, pytest.mark.timeout(1800)]

BROKER_URL = "redis://127.0.0.1:6379/12"  # Celery broker: a database this module owns and flushes
ONLINE_STORE = "redis://127.0.0.1:6379/13"  # Feast online store, likewise
QUEUE = "training"
WORKERS = {"celery-default": "default", "celery-training": QUEUE}
SPARE = "celery-training-2"
HEAVY = {"build_training_set", "train"}  # the tasks `training.queue` routes
# The scheduler fails a running task whose heartbeats stopped after this long (default 300 s). Kept
# short so the worker-kill test's retry comes soon; well above the 5-15 s heartbeat interval.
HEARTBEAT_TIMEOUT_S = 45
KILL_RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def celery_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    import redis

    for url in (BROKER_URL, ONLINE_STORE):
        redis.Redis.from_url(url).flushdb()
    home = tmp_path_factory.mktemp("celery") / "home"
    tag = os.getpid()
    with fresh_postgres_database(f"mlops_celery_airflow_{tag}") as airflow_db, \
            fresh_postgres_database(f"mlops_celery_data_{tag}") as data_db:
        plain = data_db.replace("+psycopg2", "")
        env = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "6",
            "AIRFLOW__CELERY__BROKER_URL": BROKER_URL,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + airflow_db.replace("+psycopg2", ""),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "MLFLOW_TRACKING_URI": plain,
            "MLOPS_FEAST_ONLINE_STORE": ONLINE_STORE,
            "MLOPS_PREDICTION_LOG_URL": plain,
            "MLOPS_MONITORING_DB": data_db,
        }
        started = time.monotonic()
        with airflow_stack_for_fixture(request, home, dag_ids=DAG_IDS, celery_workers=WORKERS,
                                       extra_env=loop_env(home, env, queue=QUEUE)) as stack:
            print(f"[celery] stack with 2 workers up in {time.monotonic() - started:.1f}s", flush=True)
            yield stack


def task_instances(client: AirflowClient, dag_id: str) -> list[dict[str, Any]]:
    return [ti for run in client.dag_runs(dag_id) for ti in client.task_instances(dag_id, run["dag_run_id"])]


def test_closed_loop_on_celery_with_training_on_its_own_worker(celery_stack: AirflowStack) -> None:
    started = time.monotonic()
    loop_s = run_closed_loop_on(celery_stack, celery_stack.home, Clock())
    print(f"[celery] closed loop: drift injected -> v2 served in {loop_s:.1f}s; "
          f"test {time.monotonic() - started:.1f}s", flush=True)
    client = celery_stack.client()
    tis = [ti for ti in task_instances(client, TRAINING) if ti["state"] == "success"]
    assert {ti["task_id"] for ti in tis} >= HEAVY | {"retrain_gate", "register", "promote"}
    for ti in tis:
        worker, queue = ("celery-training", QUEUE) if ti["task_id"] in HEAVY else ("celery-default", "default")
        assert (ti["queue"], ti["hostname"]) == (queue, worker), f"{ti['task_id']} of {ti['dag_run_id']}: {ti}"
    others = [ti for dag_id in DAG_IDS if dag_id != TRAINING for ti in task_instances(client, dag_id)
              if ti["state"] == "success"]
    assert others and {ti["hostname"] for ti in others} == {"celery-default"}, "light tasks stay on default"
    client.close()


def test_a_worker_killed_mid_training_is_retried_on_another_worker(celery_stack: AirflowStack) -> None:
    """SIGKILL of the training worker's whole process tree while `train` runs (a node that dies).

    The scheduler sees the task's heartbeats stop, fails that try, and the retry runs on a second
    `training` worker; the run ends with exactly one new registered version, from the retry.
    """
    from mlflow import MlflowClient

    started = time.monotonic()
    stack = celery_stack
    client = stack.client()
    registry = MlflowClient(tracking_uri=stack.env["MLFLOW_TRACKING_URI"])
    before = {v.version for v in registry.search_model_versions(f"name='{MODEL}'")}
    # new labelled rows, so this run's training set (and fingerprint) is new and it registers a version
    stack.run(["generate-data", "--days", "1", "--start", "2026-10-08", "--seed", "21"], name="generate-kill",
              exe="airflow-mlops")
    run_features(stack, client, first=False)
    run = client.trigger(TRAINING)
    run_id = run["dag_run_id"]

    def train_running() -> dict[str, Any] | None:
        tis = {ti["task_id"]: ti for ti in client.task_instances(TRAINING, run_id)}
        train = tis.get("train")
        if train and train["state"] not in (None, "scheduled", "queued", "running"):
            raise AssertionError(f"train ended before it could be killed: {describe(client, TRAINING, run)}")
        return train if train and train["state"] == "running" else None

    first = wait_for(train_running, 300, "train to run on celery-training", on_poll=stack.check_alive, interval=0.25)
    assert (first["hostname"], first["try_number"]) == ("celery-training", 1), first
    killed = stack.kill_tree("celery-training")
    print(f"[celery] killed celery-training mid-train (pids {killed}) "
          f"{time.monotonic() - started:.1f}s into the test", flush=True)
    stack.start_celery_worker(SPARE, QUEUE)
    stack.wait_worker_ready(SPARE)

    done = client.wait_for_run(TRAINING, run_id, KILL_RUN_TIMEOUT_S, on_poll=stack.check_alive)
    assert done["state"] == "success", describe(client, TRAINING, done)
    train = next(ti for ti in client.task_instances(TRAINING, run_id) if ti["task_id"] == "train")
    assert (train["state"], train["try_number"], train["hostname"]) == ("success", 2, SPARE), train

    after = registry.search_model_versions(f"name='{MODEL}'")
    new = [v for v in after if v.version not in before]
    assert len(new) == 1, f"expected exactly one new version, got {[v.version for v in new]}"
    tags = registry.get_run(new[0].run_id).data.tags
    assert (tags.get("airflow_mlops.airflow.run_id"), tags.get("airflow_mlops.airflow.try_number")) == (run_id, "2"), \
        f"the new version must come from the retry's MLflow run: {tags}"
    assert stack.network_attempts() == "", f"outbound network attempts:\n{stack.network_attempts()}"
    print(f"[celery] worker kill: retried on {SPARE}, one new version v{new[0].version}; "
          f"test {time.monotonic() - started:.1f}s", flush=True)
    client.close()
