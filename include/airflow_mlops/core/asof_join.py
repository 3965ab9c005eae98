"""Feast's point-in-time join for local parquet feature views, by sorted-key search instead of a range join.

Feast (ibis/duckdb offline store) joins every feature row of the entity with event time in
[row time - ttl, row time] and keeps the newest by (event time, created time): a range join whose
size is rows x feature rows per TTL, re-planned and re-read for every chunk (97 % of the batch
path's time, docs/benchmarks.md). `AsofJoiner` returns the same rows and values:

- once per entity set and view: the view's rows that can be picked for the set's time span
  (first time - ttl .. last time), only the columns used, ordered by (keys, event time, created
  time NULLS FIRST), with each row's position in that order as one int64 "search key"
  (key code x number of distinct event times + rank of its event time);
- per chunk: each entity row's search key (its key code and the rank of the newest event time <=
  its time), one `numpy.searchsorted` for the last view row at or below it, kept only if it has the
  same keys and is not older than the TTL (when the newest row is too old, every older one is too,
  so Feast finds none either). Among rows with equal keys and time the last one wins: the newest
  created time, Feast's tie-break.

Times compare as UTC microseconds; naive feature times count as UTC, as in Feast. Memory: the
views' rows within the span plus one int64 search key per row, and one chunk.
`tests/integration/test_batch_asof_join.py` checks every feature of every row against Feast's join.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.training_set import FEAST_TIMESTAMP

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class AsofView:
    """What the as-of join needs of one feature view of the service (read from the Feast registry)."""

    name: str
    path: str  # the FileSource's parquet path or glob
    timestamp: str
    created: str | None
    keys: tuple[tuple[str, str], ...]  # (column in the view's data, entity column)
    features: tuple[tuple[str, str], ...]  # (column in the view's data, feature name)
    ttl_us: int  # 0: no TTL


def asof_plan(store: Any, service: Any) -> list[AsofView] | None:
    """The service's views for `AsofJoiner`, or None when one is not a local parquet FileSource (then Feast joins)."""
    from feast import FileSource
    from feast.errors import FeatureViewNotFoundException
    from feast.infra.offline_stores.file_source import ParquetFormat

    views = []
    for projection in service.feature_view_projections:
        try:
            view = store.get_feature_view(projection.name)
        except FeatureViewNotFoundException:  # an on-demand view: Feast computes it
            return None
        source = view.batch_source
        if not isinstance(source, FileSource) or "://" in source.path or not (
                isinstance(source.file_format, ParquetFormat) or source.path.endswith(".parquet")):
            return None
        mapping = {new: old for old, new in (source.field_mapping or {}).items()}
        keys = projection.join_key_map or {e.name: e.name for e in view.entity_columns}
        views.append(AsofView(
            name=view.name, path=source.path, timestamp=mapping.get(source.timestamp_field, source.timestamp_field),
            created=mapping.get(source.created_timestamp_column, source.created_timestamp_column) or None,
            keys=tuple((mapping.get(k, k), e) for k, e in keys.items()),
            features=tuple((mapping.get(f.name, f.name), f.name) for f in projection.features),
            ttl_us=int(view.ttl.total_seconds() * 1_000_000) if view.ttl else 0))
    return views


def asof_join(chunk: pd.DataFrame, views: list[AsofView]) -> pd.DataFrame:
    """Feast's point-in-time join of one frame of entity rows (see AsofJoiner)."""
    return AsofJoiner(views, chunk).join(chunk)


class AsofJoiner:
    """The point-in-time join of the chunks of one entity set: the views are read and indexed at the first chunk."""

    def __init__(self, views: list[AsofView], entity: pd.DataFrame) -> None:
        times = utc_micros(entity[FEAST_TIMESTAMP])
        self.views = views
        self.start, self.end = (int(times.min()), int(times.max())) if len(times) else (0, 0)
        self._index: list[_ViewIndex] | None = None

    def join(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """`chunk` (same row order, index reset) with every view's features: NULL where Feast has none."""
        if self._index is None:
            self._index = [_ViewIndex(view, _view_rows(view, self.start, self.end)) for view in self.views]
        out = chunk.reset_index(drop=True)
        when = utc_micros(out[FEAST_TIMESTAMP])
        columns: dict[str, Any] = {}
        for index in self._index:
            columns.update(index.lookup(out, when))
        return out.assign(**columns)


class _ViewIndex:
    """One view's candidate rows in (keys, event time, created) order and their int64 search keys."""

    def __init__(self, view: AsofView, rows: pd.DataFrame) -> None:
        import numpy as np
        import pandas as pd

        self.view = view
        keys = [f"__k{i}" for i in range(len(view.keys))]
        codes, self.uniques = pd.MultiIndex.from_frame(rows[keys]).factorize() if len(keys) > 1 else pd.factorize(
            rows[keys[0]])
        ts = rows["__ts"].to_numpy(dtype="int64")
        self.times, rank = np.unique(ts, return_inverse=True)  # distinct event times, each row's rank among them
        search = codes.astype("int64") * len(self.times) + rank
        order = np.argsort(search, kind="stable")  # stable: rows came sorted by (time, created NULLS FIRST)
        self.search, self.codes, self.ts = search[order], codes[order], ts[order]
        self.rows = rows.take(order).reset_index(drop=True)

    def lookup(self, chunk: pd.DataFrame, when: np.ndarray) -> dict[str, Any]:
        """Feature name -> values for the chunk's rows: the newest row per keys at or before `when`, within the TTL."""
        import numpy as np

        view = self.view
        if not len(self.rows):
            return {name: np.full(len(when), np.nan) for _, name in view.features}
        entity = [chunk[column] for _, column in view.keys]
        code = (self.uniques.get_indexer(list(zip(*entity, strict=True))) if len(entity) > 1
                else self.uniques.get_indexer(entity[0]))
        rank = np.searchsorted(self.times, when, side="right") - 1  # newest distinct event time <= row time
        pos = np.searchsorted(self.search, code.astype("int64") * len(self.times) + rank, side="right") - 1
        safe = np.where(pos >= 0, pos, 0)
        found = (code >= 0) & (rank >= 0) & (pos >= 0) & (self.codes[safe] == code)
        if view.ttl_us:
            found &= self.ts[safe] >= when - view.ttl_us
        missing = ~found
        picked = {}
        for _, name in view.features:
            column = self.rows[name].take(safe).reset_index(drop=True)
            picked[name] = (column.mask(missing) if missing.any() else column).to_numpy()
        return picked


def utc_micros(times: pd.Series) -> np.ndarray:
    """Microseconds since the epoch, UTC (naive times count as UTC)."""
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return times.astype("datetime64[us]").to_numpy().view("int64")


def _view_rows(view: AsofView, start_us: int, end_us: int) -> pd.DataFrame:
    """The view's rows that can be picked for times in [start, end], sorted by (time, created time NULLS FIRST).

    No deduplication needed: among rows with equal keys and time the join takes the last one, which
    in this order is the newest created time (NULL first, as it is last in Feast's descending order).
    """
    import duckdb

    def q(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    ts = f"epoch_us({q(view.timestamp)}::TIMESTAMP)"  # a TIMESTAMPTZ cast to TIMESTAMP is its UTC time
    since = f"$1 - {view.ttl_us}" if view.ttl_us else "-9223372036854775807"
    keys = [f"{q(col)} AS __k{i}" for i, (col, _) in enumerate(view.keys)]
    columns = ", ".join([*keys, f"{ts} AS __ts", *(f"{q(src)} AS {q(name)}" for src, name in view.features)])
    where = " AND ".join([f"{ts} BETWEEN {since} AND $2", *(f"{q(c)} IS NOT NULL" for c, _ in view.keys)])
    order = f"__ts, {q(view.created)}::TIMESTAMP NULLS FIRST" if view.created else "__ts"
    con = duckdb.connect()
    try:
        try:  # with the ICU extension, TIMESTAMPTZ -> TIMESTAMP uses the session zone; without it, always UTC
            con.execute("SET TimeZone = 'UTC'")
        except duckdb.Error:
            log.debug("duckdb without ICU: timestamps cast as UTC")
        return con.execute(f"SELECT {columns} FROM read_parquet($3) WHERE {where} ORDER BY {order}",
                           [start_us, end_us, view.path]).fetch_df()
    finally:
        con.close()
