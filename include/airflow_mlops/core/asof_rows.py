"""The rows of one parquet feature view that the as-of join can pick, read once per entity set.

Read with pyarrow (the files duckdb's glob lists, so the same files Feast's duckdb store reads), the
range filter and the (keys, event time, created time NULLS FIRST) order done in numpy: about 5x less
CPU than the same query in duckdb, whose parquet scan + sort + DataFrame conversion was most of the
batch path's join (docs/benchmarks.md). What pyarrow cannot read as Feast would (schemas that differ
between files, a column that is only a hive partition, a non-timestamp event-time column) is read
by the equivalent duckdb query instead, with a warning naming the view.

What made the read cheap (profiled at 1.41 M rows x 11 columns, docs/benchmarks.md): one `take` of
the kept rows in their final order instead of a table filter and then a take; a stable radix sort
by key code when the files already hold rows in (time, created) order, as landed partitions do,
instead of a three-key `lexsort`; dense integer ids coded by counting instead of hashing; and no
DataFrame (`ViewRows` keeps columns apart: consolidating them into pandas blocks cost more than the read).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from airflow_mlops.core.asof_join import AsofView

log = logging.getLogger(__name__)
_NULL_TIME = -(2**63)  # below every range start: NULL times fall out of the filter, NULL created sorts first


class _NotForArrow(Exception):
    """The view's files need duckdb's reader (see the module docstring)."""


@dataclass(frozen=True)
class ViewRows:
    """A view's candidate rows in (keys, event time, created NULLS FIRST) order, kept as separate columns.

    Not a DataFrame: consolidating twenty columns into pandas blocks cost more than reading them
    (docs/benchmarks.md); the join only ever picks rows out of single columns.
    """

    codes: np.ndarray  # int64 key code per row, ascending: rows of one key are contiguous
    uniques: Any  # pandas Index (one key) or MultiIndex of the key values; code i is uniques[i]
    ts: np.ndarray  # int64 event time, UTC epoch microseconds
    features: dict[str, pd.Series]  # feature name -> values, dtypes as pandas reads Feast's parquet

    def __len__(self) -> int:
        return len(self.ts)


def view_rows(view: AsofView, start_us: int, end_us: int) -> ViewRows:
    """The rows with event time in [start - ttl, end] and no NULL key, sorted by (keys, time, created NULLS FIRST).

    No deduplication needed: among rows with equal keys and time the join takes the last one, which
    in this order is the newest created time (NULL first, as it is last in Feast's descending order).
    """
    import pyarrow as pa

    try:
        return _arrow_rows(view, start_us, end_us)
    except (_NotForArrow, pa.ArrowException, KeyError) as why:
        log.warning("feature view %s: reading %s with duckdb instead of pyarrow (%s)", view.name, view.path, why)
        return _frame_rows(view, _duckdb_rows(view, start_us, end_us))


def _arrow_rows(view: AsofView, start_us: int, end_us: int) -> ViewRows:
    import numpy as np
    import pyarrow as pa
    import pyarrow.dataset as ds

    files = _files(view.path)
    if not files:
        raise _NotForArrow("no file matches the path")  # duckdb raises Feast's own "no files found" error
    keys = [column for column, _ in view.keys]
    names = list(dict.fromkeys([*keys, view.timestamp, *([view.created] if view.created else []),
                                *(source for source, _ in view.features)]))
    table = ds.dataset(files, format="parquet").to_table(columns=names)
    ts = _micros(table.column(view.timestamp))
    since = start_us - view.ttl_us if view.ttl_us else _NULL_TIME + 1
    keep = (ts >= since) & (ts <= end_us)
    for column in keys:
        keep &= table.column(column).is_valid().to_numpy(zero_copy_only=False)
    # The rows kept, in order, are picked with one take: a filter of the whole table first cost more than the read.
    kept = None if keep.all() else np.flatnonzero(keep)
    ts = ts if kept is None else ts[kept]
    # Keys filtered before pandas sees them: with NULLs gone an integer key stays int64 (exact), not float64.
    codes, uniques = _factorize([(table.column(column) if kept is None else table.column(column).take(kept))
                                 .to_pandas() for column in keys])
    created = None
    if view.created:
        created = _micros(table.column(view.created))
        created = created if kept is None else created[kept]
    order = _key_time_order(codes, ts, created)
    sources = list(dict.fromkeys(source for source, _ in view.features))
    table = table.select(sources).take(pa.array(order if kept is None else kept[order]))
    return ViewRows(codes=codes[order], uniques=uniques, ts=ts[order],
                    features={name: table.column(source).to_pandas() for source, name in view.features})


def _key_time_order(codes: np.ndarray, ts: np.ndarray, created: np.ndarray | None) -> np.ndarray:
    """The row order by (key code, time, created): `np.lexsort`, or, when the files already hold the rows in
    (time, created) order (as landed partitions do), a stable sort by key code alone, 7x faster at 1.4 M rows."""
    import numpy as np

    in_time_order = bool((ts[1:] >= ts[:-1]).all()) and (
        created is None or bool(((ts[1:] > ts[:-1]) | (created[1:] >= created[:-1])).all()))
    if not in_time_order:
        return np.lexsort((ts, codes) if created is None else (created, ts, codes))
    # A stable sort keeps the time order within a key; small integer types sort by radix.
    small = codes.astype(np.uint16) if len(codes) and int(codes.max()) < 2**16 else codes
    return np.argsort(small, kind="stable")


def _frame_rows(view: AsofView, frame: pd.DataFrame) -> ViewRows:
    """ViewRows of a frame already in (keys, time, created) order (the duckdb query's result)."""
    codes, uniques = _factorize([frame[f"__k{i}"] for i in range(len(view.keys))])
    return ViewRows(codes=codes, uniques=uniques, ts=frame["__ts"].to_numpy(dtype="int64"),
                    features={name: frame[name] for _, name in view.features})


def _factorize(keys: list[pd.Series]) -> tuple[np.ndarray, Any]:
    """int64 code per row and the key values by code (a MultiIndex for compound keys)."""
    import numpy as np
    import pandas as pd

    if len(keys) == 1 and isinstance(keys[0].dtype, np.dtype) and keys[0].dtype.kind in "iu" and len(keys[0]):
        values = keys[0].to_numpy()
        low, span = values.min(), int(values.max()) - int(values.min())
        if span < 2**24:  # dense integer ids: codes by counting (one pass, 5x faster than hashing 1.4 M keys)
            present = np.zeros(span + 1, dtype=bool)
            present[values - low] = True
            remap = np.cumsum(present, dtype="int64") - 1
            return remap[values - low], pd.Index(np.flatnonzero(present).astype(values.dtype) + low)
    codes, uniques = pd.MultiIndex.from_arrays(keys).factorize() if len(keys) > 1 else pd.factorize(keys[0])
    return codes.astype("int64"), uniques


def _files(path: str) -> list[str]:
    import duckdb

    con = duckdb.connect()
    try:
        return sorted(row[0] for row in con.execute("SELECT file FROM glob(?)", [path]).fetchall())
    finally:
        con.close()


def _micros(column: Any) -> np.ndarray:
    """UTC epoch microseconds of a timestamp column (naive times count as UTC, as in Feast); NULL -> _NULL_TIME."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_timestamp(column.type):
        raise _NotForArrow(f"column type {column.type} is not a timestamp")
    # Arrow stores every timestamp as epoch time in its unit: a zone is only a label, so dropping it keeps UTC.
    micros = pc.cast(column, pa.timestamp("us"), safe=False).cast(pa.int64())
    filled: np.ndarray = pc.fill_null(micros, _NULL_TIME).to_numpy()
    return filled


def _duckdb_rows(view: AsofView, start_us: int, end_us: int) -> pd.DataFrame:
    import duckdb

    def q(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    ts = f"epoch_us({q(view.timestamp)}::TIMESTAMP)"  # a TIMESTAMPTZ cast to TIMESTAMP is its UTC time
    since = f"$1 - {view.ttl_us}" if view.ttl_us else "-9223372036854775807 + 0 * $1"  # every $n must be used
    keys = [f"{q(col)} AS __k{i}" for i, (col, _) in enumerate(view.keys)]
    columns = ", ".join([*keys, f"{ts} AS __ts", *(f"{q(src)} AS {q(name)}" for src, name in view.features)])
    where = " AND ".join([f"{ts} BETWEEN {since} AND $2", *(f"{q(c)} IS NOT NULL" for c, _ in view.keys)])
    order = ", ".join([*(f"__k{i}" for i in range(len(view.keys))), "__ts",
                       *([f"{q(view.created)}::TIMESTAMP NULLS FIRST"] if view.created else [])])
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
