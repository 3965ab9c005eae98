"""The rows of one parquet feature view that the as-of join can pick, read once per entity set.

Read with pyarrow (the files duckdb's glob lists, so the same files Feast's duckdb store reads), the
range filter and the (keys, event time, created time NULLS FIRST) order done in numpy: about 5x less
CPU than the same query in duckdb, whose parquet scan + sort + DataFrame conversion was most of the
batch path's join (docs/benchmarks.md). What pyarrow cannot read as Feast would (schemas that differ
between files, a column that is only a hive partition, a non-timestamp event-time column) is read
by the equivalent duckdb query instead, with a warning naming the view.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from airflow_mlops.core.asof_join import AsofView

log = logging.getLogger(__name__)
_NULL_TIME = -(2**63)  # below every range start: NULL times fall out of the filter, NULL created sorts first


class _NotForArrow(Exception):
    """The view's files need duckdb's reader (see the module docstring)."""


def view_rows(view: AsofView, start_us: int, end_us: int) -> pd.DataFrame:
    """Columns `__k0..` (keys), `__ts` (event time, UTC epoch µs) and the features; rows with event time in
    [start - ttl, end] and no NULL key, sorted by (keys, time, created NULLS FIRST).

    No deduplication needed: among rows with equal keys and time the join takes the last one, which
    in this order is the newest created time (NULL first, as it is last in Feast's descending order).
    Rows of one key are contiguous, so `_ViewIndex`'s key codes come out ascending and it needs no sort.
    """
    import pyarrow as pa

    try:
        return _arrow_rows(view, start_us, end_us)
    except (_NotForArrow, pa.ArrowException, KeyError) as why:
        log.warning("feature view %s: reading %s with duckdb instead of pyarrow (%s)", view.name, view.path, why)
        return _duckdb_rows(view, start_us, end_us)


def _arrow_rows(view: AsofView, start_us: int, end_us: int) -> pd.DataFrame:
    import numpy as np
    import pandas as pd
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
    table, ts = table.filter(pa.array(keep)), ts[keep]
    key_values = [table.column(column).to_pandas() for column in keys]
    codes = (pd.MultiIndex.from_arrays(key_values).factorize()[0] if len(keys) > 1
             else pd.factorize(key_values[0])[0])
    order = np.lexsort((_micros(table.column(view.created)), ts, codes) if view.created else (ts, codes))
    table = table.take(pa.array(order))
    frame = {f"__k{i}": values.take(order).reset_index(drop=True) for i, values in enumerate(key_values)}
    frame["__ts"] = pd.Series(ts[order])
    for source, name in view.features:
        frame[name] = table.column(source).to_pandas()
    return pd.DataFrame(frame)


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
    return pc.fill_null(micros, _NULL_TIME).to_numpy()


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
