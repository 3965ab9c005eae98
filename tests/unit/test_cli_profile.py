"""The CLI's preflight: a production profile pointing at a dead server fails fast and names the URL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CLI = [sys.executable, "-m", "airflow_mlops.cli"]


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__DATABASE", "MLFLOW_", "MLOPS_FEAST"))}
    return subprocess.run([*CLI, *args], env={**base, "MLOPS_HOME": str(tmp_path / "home"), **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_doctor_on_embedded_default(tmp_path: Path) -> None:
    out = _run(["doctor"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "MLflow tracking:     sqlite:///" in out.stdout and "every configured store answers" in out.stdout


def test_init_refuses_unreachable_production_stores_before_any_work(tmp_path: Path) -> None:
    started = time.monotonic()
    out = _run(["init"], tmp_path,
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://airflow:s3cret@127.0.0.1:5439/airflow",
               MLOPS_FEAST_ONLINE_STORE="redis://127.0.0.1:6390/0")
    assert out.returncode == 2
    assert "127.0.0.1:5439/airflow" in out.stderr and "s3cret" not in out.stderr
    assert "redis://127.0.0.1:6390/0" in out.stderr
    assert "docker compose" in out.stderr or "Start" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "home" / "airflow" / "airflow.db").exists()
    assert time.monotonic() - started < 30
