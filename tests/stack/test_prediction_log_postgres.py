"""PredictionLog, production profile: table mlops_prediction_log on the real PostgreSQL at 127.0.0.1:5432.

A fresh database per module (mlops_predlog_<pid>) is created and dropped. If PostgreSQL is not
reachable the fixture raises, so these tests ERROR with the reason — they never skip.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_mlops.exceptions import StoreUnavailable
from airflow_mlops.serving.prediction_log import TABLE, PredictionLog
from support.mlflow_server import fresh_postgres_database

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    with fresh_postgres_database(f"mlops_predlog_{os.getpid()}") as url:
        yield url


def query(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg2

    conn = psycopg2.connect(db_url.replace("+psycopg2", ""))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def record(i: int, model: str = "rides") -> dict[str, Any]:
    return {"request_id": f"r{i}", "time": datetime(2026, 11, 25, 8, 0, i % 60, tzinfo=UTC).isoformat(),
            "model": model, "model_version": "3", "route": "primary", "entity_key": {"driver_id": 1000 + i},
            "features": {"trip_distance_km": i / 10, "bad": float("inf")}, "prediction": 0.25,
            "shadow_version": "4" if i % 2 else None, "shadow_prediction": 0.75 if i % 2 else None,
            "protocol": "predict"}


def test_batches_land_in_postgres_with_jsonb_columns(db_url: str) -> None:
    log = PredictionLog(db_url=db_url, flush_rows=100, flush_seconds=0.2)  # creates the table
    assert log.directory is None
    for i in range(1000):
        log.append(record(i, model="rides" if i < 900 else "eta"))
    log.close()
    assert (log.written, log.dropped, log.last_error) == (1000, 0, None)
    counts = dict(query(db_url, f"SELECT model, count(*) FROM {TABLE} GROUP BY model"))
    assert counts == {"rides": 900, "eta": 100}
    [(entity, distance, bad, when, shadow)] = query(
        db_url, f"SELECT entity_key, features->>'trip_distance_km', features->'bad', \"time\", shadow_prediction "
                f"FROM {TABLE} WHERE request_id = 'r7'")
    assert entity == {"driver_id": 1007} and distance == "0.7" and bad is None and shadow == 0.75
    assert when == datetime(2026, 11, 25, 8, 0, 7, tzinfo=UTC)
    types = dict(query(db_url, f"SELECT column_name, data_type FROM information_schema.columns "
                               f"WHERE table_name = '{TABLE}'"))
    assert types["features"] == "jsonb" and types["time"] == "timestamp with time zone"


def test_replicas_share_the_table_and_append_concurrently(db_url: str) -> None:
    before = query(db_url, f"SELECT count(*) FROM {TABLE}")[0][0] if _table_exists(db_url) else 0
    logs = [PredictionLog(db_url=db_url, flush_rows=50) for _ in range(3)]  # CREATE IF NOT EXISTS x3

    def send(log: PredictionLog, offset: int) -> None:
        for i in range(500):
            log.append(record(offset + i))

    threads = [threading.Thread(target=send, args=(log, n * 10_000)) for n, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.close()
    assert sum(log.written for log in logs) == 1500
    assert query(db_url, f"SELECT count(*) FROM {TABLE}")[0][0] == before + 1500


def test_unreachable_database_fails_fast_naming_the_fix() -> None:
    with pytest.raises(StoreUnavailable, match=r"prediction log database at postgresql://postgres:\*\*\*@127.0.0.1:1/"
                                               r"nope is unreachable .*drop db_url to log to parquet"):
        PredictionLog(db_url="postgresql+psycopg2://postgres:secret@127.0.0.1:1/nope")


def _table_exists(db_url: str) -> bool:
    return bool(query(db_url, f"SELECT to_regclass('{TABLE}') IS NOT NULL")[0][0])
