"""The closed loop of tests/e2e/test_closed_loop.py on the production profile.

Airflow's metadata DB, MLflow's tracking/registry store, the prediction log and the monitoring
history in PostgreSQL (fresh databases, dropped after), Feast's online store in Redis (db 14, flushed).
Errors, never skips, when a server is unreachable.

`extended`: run by `make test-extended`, not by `make test-stack`/CI. CI runs the same loop on the same stores
under the CeleryExecutor (tests/stack/test_celery_stack.py) and under the LocalExecutor on the embedded stores
(tests/e2e/test_closed_loop.py); this third combination costs ~3 min that CI's budget spends on the Celery one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.closed_loop import run_closed_loop
from support.mlflow_server import fresh_postgres_database

pytestmark = [pytest.mark.stack, pytest.mark.extended, pytest.mark.timeout(1500)]

REDIS_URL = "redis://127.0.0.1:6379/14"  # a database this test owns and flushes


def test_closed_loop_on_postgres_and_redis(tmp_path: Path) -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    tag = os.getpid()
    with fresh_postgres_database(f"mlops_loop_airflow_{tag}") as airflow_db, \
            fresh_postgres_database(f"mlops_loop_data_{tag}") as data_db:
        plain = data_db.replace("+psycopg2", "")
        env = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "MLFLOW_TRACKING_URI": plain,
            "MLOPS_FEAST_ONLINE_STORE": REDIS_URL,
            "MLOPS_PREDICTION_LOG_URL": plain,
            "MLOPS_MONITORING_DB": data_db,
        }
        loop_s = run_closed_loop(tmp_path / "home", env)
    print(f"[loop] production profile: drift injected -> v2 served in {loop_s:.1f}s", flush=True)
