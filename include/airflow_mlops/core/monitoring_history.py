"""Monitoring history: one row per check per monitoring run, read by the UI as time series.

Every check of the monitoring DAG (drift, performance, skew, freshness) appends a `CheckRecord`,
whether it found a problem or not — the UI's drift chart needs the quiet runs too. Rows are never
updated; the newest row per (model, kind) is the current state.

Store: SQLite at <MLOPS_HOME>/monitoring/monitoring.db (embedded profile), or any SQLAlchemy URL in
MLOPS_MONITORING_DB (production profile: the PostgreSQL that holds Airflow's and MLflow's DBs).
The table is created on first use. SQLAlchemy Core is imported inside functions (DAG files import
the modules that import this one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from airflow_mlops import config

if TYPE_CHECKING:
    from sqlalchemy import Engine, Table

TABLE = "mlops_monitoring_history"
Kind = Literal["drift", "performance", "skew", "freshness"]
Status = Literal["ok", "detected", "skipped", "error"]
KINDS: tuple[str, ...] = ("drift", "performance", "skew", "freshness")
STATUSES: tuple[str, ...] = ("ok", "detected", "skipped", "error")


@dataclass(frozen=True)
class CheckRecord:
    """The outcome of one check in one monitoring run.

    :param value: the check's headline number — drift: share of drifted columns; performance: the
        metric on the labelled window; skew: share of mismatching values; freshness: age in seconds.
    :param threshold: the limit `value` was compared with (drift_share, champion metric - tolerance, ...).
    :param status: ok, detected (threshold crossed: an asset event was emitted), skipped (e.g. an
        empty window; `details["reason"]` says why) or error.
    :param details: JSON-able specifics: drifted columns with scores, report URI, sampling, counts.
    """

    model: str
    kind: Kind
    status: Status
    value: float | None = None
    threshold: float | None = None
    rows: int = 0
    model_version: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    dag_id: str | None = None
    run_id: str | None = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {KINDS}")
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")


def db_url() -> str:
    """MLOPS_MONITORING_DB, else SQLite in the state dir."""
    return os.environ.get("MLOPS_MONITORING_DB") or f"sqlite:///{config.paths().monitoring_dir / 'monitoring.db'}"


@cache
def _engine(url: str) -> Engine:
    from sqlalchemy import create_engine

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    _table(engine).metadata.create_all(engine, checkfirst=True)
    return engine


@cache
def _table(engine: Engine) -> Table:
    from sqlalchemy import JSON, Boolean, Column, DateTime, Float, Index, Integer, MetaData, String, Table

    metadata = MetaData()
    return Table(
        TABLE, metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("time", DateTime(timezone=True), nullable=False),
        Column("model", String(128), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("status", String(16), nullable=False),
        Column("detected", Boolean, nullable=False),
        Column("value", Float),
        Column("threshold", Float),
        Column("rows", Integer, nullable=False),
        Column("model_version", String(32)),
        Column("window_start", DateTime(timezone=True)),
        Column("window_end", DateTime(timezone=True)),
        Column("details", JSON),
        Column("dag_id", String(250)),
        Column("run_id", String(250)),
        Index(f"{TABLE}_model_kind_time", "model", "kind", "time"),
    )


def append(record: CheckRecord, url: str | None = None) -> None:
    """Store one record (details must be JSON-able: it is round-tripped through json to make sure)."""
    engine = _engine(url or db_url())
    row = asdict(record)
    row["details"] = json.loads(json.dumps(row["details"], default=str))
    row["detected"] = record.status == "detected"
    with engine.begin() as conn:
        conn.execute(_table(engine).insert().values(**row))


def history(model: str, kind: str | None = None, *, since: datetime | None = None, limit: int = 500,
            url: str | None = None) -> list[dict[str, Any]]:
    """Records of a model, oldest first (the last `limit`), as JSON-able dicts (ISO-8601 times)."""
    from sqlalchemy import select

    engine = _engine(url or db_url())
    table = _table(engine)
    query = select(table).where(table.c.model == model)
    if kind is not None:
        query = query.where(table.c.kind == kind)
    if since is not None:
        query = query.where(table.c.time >= since)
    query = query.order_by(table.c.time.desc(), table.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = [_jsonable(dict(row._mapping)) for row in conn.execute(query)]
    return rows[::-1]


def latest(model: str, kind: str, url: str | None = None) -> dict[str, Any] | None:
    """The newest record of one check of one model, or None."""
    rows = history(model, kind, limit=1, url=url)
    return rows[0] if rows else None


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("time", "window_start", "window_end"):
        value = row.get(key)
        if isinstance(value, datetime):
            row[key] = (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    row.pop("id", None)
    return row
