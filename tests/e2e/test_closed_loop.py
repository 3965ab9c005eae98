"""MLOps level 2 on the embedded default: drift in served traffic retrains and redeploys by itself.

A real Airflow (scheduler, dag-processor, triggerer, api-server; LocalExecutor, SQLite metadata DB),
the real serving process, SQLite MLflow, Feast duckdb + SQLite online store, parquet prediction log.
See tests/support/closed_loop.py for every hop asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.closed_loop import run_closed_loop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def test_drift_in_served_traffic_retrains_and_serves_v2(tmp_path: Path) -> None:
    loop_s = run_closed_loop(tmp_path / "home")
    print(f"[loop] embedded profile: drift injected -> v2 served in {loop_s:.1f}s", flush=True)
