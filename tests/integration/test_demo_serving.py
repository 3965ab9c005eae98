"""`airflow-mlops demo --serve`: the real CLI, serving process, DAGs and SQLite MLflow store, end to end.

One subprocess with its own MLOPS_HOME/AIRFLOW_HOME runs the demo on 3 days (v1 champion), starts
`airflow-mlops serve`, and keeps 4 client threads posting /predict while 3 more days with a changed
rule arrive and the feature and training DAGs promote v2. The serving app must answer every request
(zero failures) and both versions must have answered, v1 first, then v2.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PROJECT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_demo_serve_switches_the_champion_under_load_without_a_failed_request(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW_", "AIRFLOW__", "MLOPS_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY"))}
    env.update(MLOPS_HOME=str(tmp_path / "home"), AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT / "dags"),
               AIRFLOW__CORE__LOAD_EXAMPLES="False")
    cli = Path(sys.executable).with_name("airflow-mlops")
    done = subprocess.run([str(cli), "demo", "--serve", "--days", "3", "--shift-days", "3", "--port", str(free_port())],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=560, check=False)
    output = done.stdout + done.stderr
    summary = re.search(r"^SERVE-DEMO requests=(\d+) failures=(\d+) versions=(\S*) champion=(\S+) switch_s=(\S+)$",
                        done.stdout, re.MULTILINE)
    assert done.returncode == 0 and summary, output[-8000:]
    requests, failures, versions, champion = int(summary[1]), int(summary[2]), summary[3].split(","), summary[4]
    assert failures == 0
    assert champion == "2" and versions == ["1", "2"], "every client: v1, then v2, never back"
    assert requests > 200, "the load loop ran through the retraining, not just around the switch"
    assert "-> prediction 0." in done.stdout and "from v1 (champion)" in done.stdout, "one /predict answer shown"
    serve_log = (tmp_path / "home" / "serve-demo.log").read_text()
    assert "Finished server process" in serve_log, "the server was shut down gracefully (log flushed)"
