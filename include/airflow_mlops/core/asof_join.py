"""Feast's point-in-time join for local parquet feature views, by sorted-key search instead of a range join.

Feast (ibis/duckdb offline store) joins every feature row of the entity with event time in
[row time - ttl, row time] and keeps the newest by (event time, created time): a range join whose
size is rows x feature rows per TTL, re-planned and re-read for every chunk (97 % of the batch
path's time, docs/benchmarks.md). `AsofJoiner` returns the same rows and values:

- once per entity set and view: the view's rows that can be picked for the set's time span
  (first time - ttl .. last time), only the columns used, ordered by (keys, event time, created
  time NULLS FIRST; `core.asof_rows`), with each row's position in that order as one int64 "search
  key": key code x width + the row time's offset (microseconds since the earliest row; the rank among
  distinct times instead where that would overflow int64);
- per chunk: each entity row's search key (its key code and the offset of its time, capped at the
  last row time), one `numpy.searchsorted` (keys searched in sorted order) for the last view row at
  or below it, kept only if it has the
  same keys and is not older than the TTL (when the newest row is too old, every older one is too,
  so Feast finds none either). Among rows with equal keys and time the last one wins: the newest
  created time, Feast's tie-break.

Times compare as UTC microseconds; naive feature times count as UTC, as in Feast. Memory: the
views' rows within the span plus one int64 search key per row, and one chunk. Numeric features are
picked with numpy `take`; other types with pandas' take + mask, so dtypes stay what Feast returns.
The views are read, and each chunk's rows looked up, on one thread per view (numpy and pyarrow
release the GIL): the join runs between two chunks' predictions, when both cores are otherwise idle.
`tests/integration/test_batch_asof_join.py` checks every feature of every row against Feast's join.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.asof_rows import ViewRows, view_rows

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

FEAST_TIMESTAMP = "event_timestamp"  # the entity-df column Feast looks for first


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


def asof_plan(store: Any, service: Any) -> tuple[list[AsofView] | None, str]:
    """The service's views for `AsofJoiner`, or None and why not when one is not a local parquet FileSource."""
    from feast import FileSource
    from feast.data_format import ParquetFormat
    from feast.errors import FeatureViewNotFoundException

    views = []
    for projection in service.feature_view_projections:
        try:
            view = store.get_feature_view(projection.name)
        except FeatureViewNotFoundException:  # an on-demand view: Feast computes it
            return None, f"{projection.name} is not a plain feature view (on-demand?)"
        source = view.batch_source
        if not isinstance(source, FileSource):
            return None, f"view {view.name} reads a {type(source).__name__}, not a FileSource"
        if "://" in source.path or not (isinstance(source.file_format, ParquetFormat)
                                        or source.path.endswith(".parquet")):
            return None, f"view {view.name} reads {source.path}, not a local parquet path"
        mapping = {new: old for old, new in (source.field_mapping or {}).items()}
        keys = projection.join_key_map or {e.name: e.name for e in view.entity_columns}
        views.append(AsofView(
            name=view.name, path=source.path, timestamp=mapping.get(source.timestamp_field, source.timestamp_field),
            created=mapping.get(source.created_timestamp_column, source.created_timestamp_column) or None,
            keys=tuple((mapping.get(k, k), e) for k, e in keys.items()),
            features=tuple((mapping.get(f.name, f.name), f.name) for f in projection.features),
            ttl_us=int(view.ttl.total_seconds() * 1_000_000) if view.ttl else 0))
    return views, ""


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

    def _indexes(self) -> list[_ViewIndex]:
        if self._index is None:
            self._index = _per_view(lambda view: _ViewIndex(view, view_rows(view, self.start, self.end)), self.views)
        return self._index

    def join(self, chunk: pd.DataFrame, widen: frozenset[str] = frozenset()) -> pd.DataFrame:
        """`chunk` (same row order, index reset) with every view's features: NULL where Feast has none.

        `widen`: views whose features get the dtype of a column with NULLs even where this chunk has none
        (int -> float64, bool -> object), as pandas gives the whole frame when any chunk has one.
        """
        import pandas as pd

        out = chunk.reset_index(drop=True)
        when = utc_micros(out[FEAST_TIMESTAMP])
        columns: dict[str, Any] = {name: out[name] for name in out.columns}
        for picked in _per_view(lambda index: index.lookup(out, when, index.view.name in widen), self._indexes()):
            columns.update(picked)
        return pd.DataFrame(columns, copy=False)  # one construction: assign() inserted column by column

    def views_with_gaps(self, entity: pd.DataFrame, chunk_rows: int) -> frozenset[str]:
        """The views that have no value for at least one row of `entity` (looked up chunk by chunk, not kept)."""
        def gappy(index: _ViewIndex) -> bool:
            for start in range(0, len(entity), chunk_rows):
                chunk = entity.iloc[start:start + chunk_rows].reset_index(drop=True)
                if bool(index.missing(chunk, utc_micros(chunk[FEAST_TIMESTAMP]))[1].any()):
                    return True
            return False

        indexes = self._indexes()
        return frozenset(ix.view.name for ix, gaps in zip(indexes, _per_view(gappy, indexes), strict=True) if gaps)


def _per_view(work: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """`work` of each view, the views on parallel threads: parquet reads, numpy sorts, searches and takes
    release the GIL, and the join runs between two chunks' predictions, when the cores are otherwise idle."""
    if len(items) < 2:
        return [work(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1), thread_name_prefix="mlops-asof") as pool:
        return list(pool.map(work, items))


class _ViewIndex:
    """One view's candidate rows in (keys, event time, created) order and their int64 search keys."""

    def __init__(self, view: AsofView, rows: ViewRows) -> None:
        import numpy as np

        self.view = view
        codes, ts, self.uniques = rows.codes, rows.ts, rows.uniques
        # Search key = key code x width + time offset; times as ranks when microseconds would overflow int64.
        self.origin = int(ts.min()) if len(ts) else 0
        width = int(ts.max()) - self.origin + 1 if len(ts) else 1
        self.times: np.ndarray | None = None
        if len(self.uniques) * width >= 2**62:
            self.times, offset = np.unique(ts, return_inverse=True)
            width = len(self.times)
        else:
            offset = ts - self.origin
        self.width = width
        self.search, self.codes, self.ts = codes * width + offset, codes, ts
        features = rows.features
        if len(self.search) > 1 and bool((self.search[1:] < self.search[:-1]).any()):
            # Only when pandas merges keys duckdb told apart (e.g. -0.0 and 0.0); else the read order is it.
            order = np.argsort(self.search, kind="stable")  # stable: equal keys and time keep created order
            self.search, self.codes, self.ts = self.search[order], codes[order], ts[order]
            features = {name: values.take(order).reset_index(drop=True) for name, values in features.items()}
        self.rows = len(self.search)
        # Plain numpy numbers are picked with numpy (the hot path); anything else (bool, strings,
        # lists, timestamps, pandas extension types) keeps pandas' take + mask semantics.
        self.numeric = {name: values.to_numpy() for name, values in features.items()
                        if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iuf"}
        self.other = {name: values for name, values in features.items() if name not in self.numeric}

    def lookup(self, chunk: pd.DataFrame, when: np.ndarray, widen: bool = False) -> dict[str, Any]:
        """Feature name -> values for the chunk's rows: the newest row per keys at or before `when`, within the TTL."""
        import numpy as np

        if not self.rows:
            return {name: np.full(len(when), np.nan) for _, name in self.view.features}
        safe, missing = self.missing(chunk, when)
        return self._pick(safe, missing, widen)

    def missing(self, chunk: pd.DataFrame, when: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's candidate position (0 where none) and whether it has no value (no row, other key, past TTL)."""
        import numpy as np

        view = self.view
        if not self.rows:
            return np.zeros(len(when), dtype=np.intp), np.ones(len(when), dtype=bool)
        entity = [chunk[column] for _, column in view.keys]
        code = (self.uniques.get_indexer(list(zip(*entity, strict=True))) if len(entity) > 1
                else self.uniques.get_indexer(entity[0])).astype("int64")
        if self.times is None:  # offset of the newest possible time <= row time; past the last time, the last
            offset = np.minimum(when - self.origin, self.width - 1)
        else:
            offset = np.searchsorted(self.times, when, side="right") - 1  # rank of the newest time <= row time
        pos = _search_last_at_or_below(self.search, code * self.width + offset)
        safe = np.where(pos >= 0, pos, 0)
        found = (code >= 0) & (offset >= 0) & (pos >= 0) & (self.codes[safe] == code)
        if view.ttl_us:
            found &= self.ts[safe] >= when - view.ttl_us
        return safe, ~found

    def _pick(self, safe: np.ndarray, missing: np.ndarray, widen: bool) -> dict[str, Any]:
        import numpy as np

        gaps = bool(missing.any())
        picked = {}
        for _, name in self.view.features:
            values = self.numeric.get(name)
            if values is None:
                column = self.other[name].take(safe).reset_index(drop=True)
                if widen and not gaps and column.dtype == bool:  # what mask() makes of a bool column with NULLs
                    column = column.astype(object)
                picked[name] = (column.mask(missing) if gaps else column).to_numpy()
                continue
            values = values.take(safe)
            # As pandas' mask: integers become float64 to hold NaN, floats keep their width.
            if gaps or (widen and values.dtype.kind != "f"):
                values = values if values.dtype.kind == "f" else values.astype("float64")
                values[missing] = np.nan
            picked[name] = values
        return picked


def _search_last_at_or_below(search: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of the last `search` value <= each key (-1: none), by numpy's binary search.

    The keys are searched in sorted order and the answers put back: numpy narrows each search with
    the previous answer when the keys come sorted, 4x faster than random keys on a view of 1.4 M rows.
    """
    import numpy as np

    order = np.argsort(keys)
    pos = np.empty(len(keys), dtype=np.intp)
    pos[order] = np.searchsorted(search, keys[order], side="right") - 1
    return pos


def utc_micros(times: pd.Series) -> np.ndarray:
    """Microseconds since the epoch, UTC (naive times count as UTC)."""
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    micros: np.ndarray = times.astype("datetime64[us]").to_numpy().view("int64")
    return micros
