"""The main job (`airflow-mlops demo`) end to end, with every outbound connection attempt audited.

Runs the real CLI in a subprocess on a fresh MLOPS_HOME: Airflow DB migration, demo data, the
feature DAG and the training DAG via dag.test(). A sitecustomize audit hook in every Python
process records and blocks any non-loopback connect or name lookup; the test fails if one happened.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
AUDIT = PROJECT / "tests" / "support" / "netaudit"


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS", "MLFLOW"))}
    # Telemetry switches must come from the project itself, not from the test: drop any inherited ones.
    for name in ("DO_NOT_TRACK", "FEAST_USAGE", "GX_ANALYTICS_ENABLED", "SCARF_ANALYTICS", "TQDM_DISABLE"):
        env.pop(name, None)
    env.update(MLOPS_HOME=str(tmp_path / "home"), MLOPS_NETAUDIT_LOG=str(tmp_path / "net.log"),
               PYTHONPATH=str(AUDIT))
    return env


def test_demo_runs_end_to_end_without_network(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    cli = Path(sys.executable).with_name("airflow-mlops")
    result = subprocess.run([str(cli), "demo", "--days", "4"], env=env, capture_output=True, text=True,
                            timeout=900, check=False, cwd=tmp_path)
    tail = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, tail
    assert "mlops_features: DagRunState.SUCCESS" in result.stdout or "mlops_features: success" in result.stdout, tail
    assert "model ride_completion v1 (alias challenger" in result.stdout, tail
    assert (tmp_path / "home" / "mlflow" / "mlflow.db").is_file()
    assert not (tmp_path / "mlruns").exists(), "MLflow wrote outside the state dir"
    attempts = (tmp_path / "net.log").read_text() if (tmp_path / "net.log").exists() else ""
    assert attempts == "", f"outbound network attempts:\n{attempts}"
