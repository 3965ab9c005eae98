"""PredictionLog: every served prediction, written in batches by a background thread.

`append()` never blocks and never raises: it puts the record on a bounded queue, and when the queue
is full the record is dropped and counted (`dropped`). A writer thread flushes every `flush_rows`
records or `flush_seconds`, whichever comes first, to one of two sinks:

- parquet (embedded profile): <directory>/<model>/date=YYYY-MM-DD/part-<time>-<uuid>.parquet, written
  to a dot-prefixed temp file and renamed, so readers (pyarrow/pandas skip dot files) never see half
  a file. `directory` defaults to <MLOPS_HOME>/predictions.
- PostgreSQL (production profile, `db_url`): table mlops_prediction_log, created if missing, batches
  inserted with psycopg2 execute_values.

Stored columns: the record keys (see FIELDS) with `time` as a UTC timestamp, `entity_key`/`features`
as JSON (text in parquet, JSONB in PostgreSQL), and `extra`: any other record keys as JSON (or null).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_mlops import config

log = logging.getLogger(__name__)

FIELDS = ("request_id", "time", "model", "model_version", "route", "entity_key", "features", "prediction",
          "shadow_version", "shadow_prediction", "protocol")
COLUMNS = (*FIELDS, "extra")
JSON_COLUMNS = ("entity_key", "features", "extra")
FLOAT_COLUMNS = ("prediction", "shadow_prediction")
TABLE = "mlops_prediction_log"
DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id BIGSERIAL PRIMARY KEY,
    request_id TEXT,
    "time" TIMESTAMPTZ NOT NULL,
    model TEXT NOT NULL,
    model_version TEXT,
    route TEXT,
    entity_key JSONB,
    features JSONB,
    prediction DOUBLE PRECISION,
    shadow_version TEXT,
    shadow_prediction DOUBLE PRECISION,
    protocol TEXT,
    extra JSONB
);
CREATE INDEX IF NOT EXISTS {TABLE}_model_time ON {TABLE} (model, "time");
"""
_QUOTED = ", ".join(f'"{column}"' for column in COLUMNS)
_INSERT = f"INSERT INTO {TABLE} ({_QUOTED}) VALUES %s"
_TEMPLATE = "(" + ", ".join("%s::jsonb" if c in JSON_COLUMNS else "%s" for c in COLUMNS) + ")"


@dataclass
class _Marker:
    """Queued by flush()/close(): the writer writes what it holds, then sets `done`."""

    stop: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class PredictionLog:
    """Batched, non-blocking prediction log (parquet files, or PostgreSQL when `db_url` is given).

    :param directory: parquet root (default <MLOPS_HOME>/predictions); ignored with `db_url`.
    :param db_url: postgresql://user:pw@host:5432/db (a SQLAlchemy-style +driver suffix is accepted).
    :param flush_rows: write when this many records are waiting.
    :param flush_seconds: write at the latest this long after the first waiting record arrived.
    :param max_queue: records held in memory before `append` starts dropping.
    """

    def __init__(self, directory: Path | None = None, *, db_url: str | None = None, flush_rows: int = 1000,
                 flush_seconds: float = 1.0, max_queue: int = 100_000) -> None:
        if flush_rows < 1 or max_queue < 1 or not flush_seconds > 0:
            raise ValueError(f"flush_rows={flush_rows}, max_queue={max_queue} must be >= 1 and "
                             f"flush_seconds={flush_seconds} > 0")
        self.flush_rows = flush_rows
        self.flush_seconds = float(flush_seconds)
        self.directory = None if db_url else Path(directory or config.paths().home / "predictions")
        self._sink: _PostgresSink | _ParquetSink = (
            _PostgresSink(db_url) if db_url else _ParquetSink(self.directory or Path()))
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._count_lock = threading.Lock()
        self._dropped = 0
        self._written = 0
        self._closed = False
        self.last_error: str | None = None
        self._watchers: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name="mlops-prediction-log", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Records that never reached storage: queue full, appended after close, or a failed write."""
        return self._dropped

    @property
    def written(self) -> int:
        return self._written

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def watch(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after `written` or `dropped` changed (on the writer thread, or on the appending
        thread for a drop): how a worker of several pushes its counts into the shared metrics."""
        self._watchers.append(callback)

    def _notify(self) -> None:
        for callback in self._watchers:
            try:
                callback()
            except Exception:  # a watcher must not stop the writer or make append() raise
                log.exception("prediction log: a count watcher failed")

    # ------------------------------------------------------------------ producer side
    def append(self, record: Mapping[str, Any]) -> None:
        """Queue one record; never blocks, never raises (a full queue drops and counts it)."""
        if self._closed:
            self._drop(1, "the log is closed")
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._drop(1, f"the queue is full ({self._queue.maxsize} records)")

    def flush(self, timeout: float = 30.0) -> None:
        """Write everything appended so far (blocks the caller, up to `timeout`)."""
        self._send(_Marker(), timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush, stop the writer and release the sink; later appends are dropped and counted."""
        if self._closed:
            return
        self._closed = True
        self._send(_Marker(stop=True), timeout)
        self._thread.join(timeout)
        leftover = 0
        while True:  # appends that raced with close
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            leftover += not isinstance(item, _Marker)
        if leftover:
            self._drop(leftover, "they arrived while closing")
        self._sink.close()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, marker: _Marker, timeout: float) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            log.warning("prediction log: writer did not drain the queue within %.0f s", timeout)
            return
        if not marker.done.wait(timeout):
            log.warning("prediction log: writer did not finish within %.0f s", timeout)

    def _drop(self, count: int, why: str) -> None:
        with self._count_lock:
            before = self._dropped
            self._dropped += count
        if before == 0 or before // 10_000 != self._dropped // 10_000:
            log.warning("prediction log dropped %d record(s) because %s (%d dropped in total); raise max_queue "
                        "or flush_rows, or check the sink", count, why, self._dropped)
        self._notify()

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        batch: list[Mapping[str, Any]] = []
        deadline = math.inf
        while True:
            try:
                item = self._queue.get(timeout=None if not batch else max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = None
            if isinstance(item, _Marker):
                self._write(batch)
                batch = []
                item.done.set()
                if item.stop:
                    return
                continue
            if item is not None:
                if not batch:
                    deadline = time.monotonic() + self.flush_seconds
                batch.append(item)
            if batch and (len(batch) >= self.flush_rows or time.monotonic() >= deadline):
                self._write(batch)
                batch = []

    def _write(self, batch: list[Mapping[str, Any]]) -> None:
        if not batch:
            return
        rows, bad = [], 0
        for record in batch:
            try:
                rows.append(normalize(record))
            except (TypeError, ValueError, AttributeError) as exc:
                bad += 1
                self.last_error = f"record not loggable ({type(exc).__name__}: {exc})"
        if bad:
            self._drop(bad, self.last_error or "they were malformed")
        try:
            self._sink.write(rows)
        except Exception as exc:  # noqa: BLE001 - the writer outlives a sink outage; the loss is counted
            self.last_error = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
            self._drop(len(rows), f"writing to {self._sink.where} failed ({self.last_error})")
            return
        with self._count_lock:
            self._written += len(rows)
        self._notify()


# ---------------------------------------------------------------------- records
def normalize(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record as stored: UTC datetime `time`, JSON text for dict columns, floats, text ids."""
    extra = {key: value for key, value in record.items() if key not in FIELDS}
    row: dict[str, Any] = {column: record.get(column) for column in FIELDS}
    row["extra"] = extra or None
    row["time"] = _utc(row["time"])
    row["model"] = str(row["model"] or "unknown")
    for column in COLUMNS:
        value = row[column]
        if column in JSON_COLUMNS:
            row[column] = None if value is None else json.dumps(_finite(value), sort_keys=True, default=str)
        elif column in FLOAT_COLUMNS:
            row[column] = None if value is None else float(value)
        elif column != "time" and value is not None:
            row[column] = str(value)
    return row


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _finite(value: Any) -> Any:
    """NaN/inf become null: they are not JSON (PostgreSQL's JSONB refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _finite(value.item())
    return value


def _safe_dir(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).lstrip(".") or "unknown"


# ---------------------------------------------------------------------- sinks
class _ParquetSink:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def write(self, rows: list[dict[str, Any]]) -> None:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            groups[(row["model"], row["time"].date().isoformat())].append(row)
        for (model, day), part in groups.items():
            self._write_file(self.root / _safe_dir(model) / f"date={day}", part)

    @staticmethod
    def _write_file(directory: Path, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = directory / f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        temp = directory / f".{final.name}.tmp"
        try:
            pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema()), temp)
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)

    def close(self) -> None:
        pass


def parquet_schema() -> Any:
    import pyarrow as pa

    types = {"time": pa.timestamp("us", tz="UTC"), "prediction": pa.float64(), "shadow_prediction": pa.float64()}
    return pa.schema([(column, types.get(column, pa.string())) for column in COLUMNS])


class _PostgresSink:
    """One connection, owned by the writer thread after __init__ (which fails fast when unreachable)."""

    def __init__(self, db_url: str) -> None:
        from airflow_mlops.profile import mask_url

        scheme, _, rest = db_url.partition("://")
        self.dsn = f"{scheme.split('+', 1)[0]}://{rest}"
        self.where = f"PostgreSQL {mask_url(self.dsn)} table {TABLE}"
        self._conn: Any = None
        self._connect()

    def _connect(self) -> None:
        import psycopg2

        from airflow_mlops.exceptions import StoreUnavailable
        from airflow_mlops.profile import mask_url

        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=3, application_name="airflow-mlops-serving",
                                    options="-c statement_timeout=15000")  # a hung insert must not wedge the writer
        except psycopg2.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailable("prediction log database", mask_url(self.dsn), reason,
                                   "start PostgreSQL (docker compose -f docker/compose.yaml up -d postgres), create "
                                   "the database, or drop db_url to log to parquet") from None
        try:
            with conn, conn.cursor() as cur:
                cur.execute(DDL)
        except (psycopg2.errors.UniqueViolation, psycopg2.errors.DuplicateTable):
            pass  # another replica created the table at the same moment (IF NOT EXISTS is not atomic)
        self._conn = conn

    def write(self, rows: list[dict[str, Any]]) -> None:
        import psycopg2
        from psycopg2.extras import execute_values

        if self._conn is None or self._conn.closed:
            self._connect()
        values = [tuple(row[column] for column in COLUMNS) for row in rows]
        try:
            with self._conn, self._conn.cursor() as cur:
                execute_values(cur, _INSERT, values, template=_TEMPLATE, page_size=1000)
        except psycopg2.OperationalError:
            self.close()  # reconnect on the next batch
            raise

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None
