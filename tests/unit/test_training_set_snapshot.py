"""core/training_set.py writes the snapshot row group by row group: the bytes must be those of one
write_table() of the whole frame (the snapshot's name and sha256 did not change with the engine)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_mlops.core import training_set

pytestmark = pytest.mark.unit


def _frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(rows)
    return pd.DataFrame({
        "driver_id": rng.integers(0, 50, rows),
        "event_timestamp": pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(np.arange(rows), unit="s"),
        "label": rng.integers(0, 2, rows),
        "conv": np.where(rng.random(rows) < 0.1, np.nan, rng.normal(size=rows)),
        "tier": rng.choice(np.array(["a", "b", None], dtype=object), rows),
    }).astype({"event_timestamp": "datetime64[us, UTC]"})


@pytest.mark.parametrize("rows,chunk", [(1000, 37), (1000, 1000), (700, 100), (0, 10), (300, 300)])
def test_row_group_writes_equal_one_whole_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                rows: int, chunk: int) -> None:
    monkeypatch.setattr(training_set, "ROW_GROUP_ROWS", 100)  # many groups, a short last one
    whole = _frame(rows)
    want = tmp_path / "whole.parquet"
    pq.write_table(pa.Table.from_pandas(whole, preserve_index=False), want, row_group_size=100)
    chunks = [whole.iloc[i:i + chunk] for i in range(0, max(rows, 1), chunk)]
    path, sha = training_set._write_snapshot(iter(chunks), tmp_path / "out")
    assert path.read_bytes() == want.read_bytes()
    assert sha == hashlib.sha256(want.read_bytes()).hexdigest() and path.name == f"{sha[:16]}.parquet"
    if rows:
        assert pq.ParquetFile(path).metadata.num_row_groups == -(-rows // 100)


def test_default_group_size_is_pyarrows(tmp_path: Path) -> None:
    """ROW_GROUP_ROWS must stay pyarrow's default, or the snapshots written before would change name."""
    rows = 1024 * 1024 + 5
    table = pa.table({"x": np.zeros(rows, dtype="int8")})
    pq.write_table(table, tmp_path / "t.parquet")
    assert pq.ParquetFile(tmp_path / "t.parquet").metadata.row_group(0).num_rows == training_set.ROW_GROUP_ROWS
