"""`airflow-mlops demo --serve`: the real CLI, serving process, DAGs and SQLite MLflow store, end to end,
with every outbound connection attempt audited.

One subprocess with its own MLOPS_HOME/AIRFLOW_HOME runs the main job (`run_demo`, what `airflow-mlops
demo` runs: Airflow DB migration, 3 days of demo data, the feature and training DAGs via dag.test(),
v1 champion, the results summary), then starts `airflow-mlops serve`, and keeps 4 client threads
posting /predict while 3 more days with a changed rule arrive and the feature and training DAGs
promote v2. The serving app must answer every request (zero failures) and both versions must have
answered, v1 first, then v2.

A sitecustomize audit hook in every Python process (CLI, DAG tasks, the serving process) records and
blocks any non-loopback connect or name lookup; the test fails if one happened. Telemetry switches
inherited from the test environment are dropped: the project itself must set them.
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
AUDIT = PROJECT / "tests" / "support" / "netaudit"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS", "MLFLOW"))}
    # Telemetry switches must come from the project itself, not from the test: drop any inherited ones.
    for name in ("DO_NOT_TRACK", "FEAST_USAGE", "GX_ANALYTICS_ENABLED", "SCARF_ANALYTICS", "TQDM_DISABLE"):
        env.pop(name, None)
    env.update(MLOPS_HOME=str(tmp_path / "home"), MLOPS_NETAUDIT_LOG=str(tmp_path / "net.log"),
               PYTHONPATH=str(AUDIT), AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT / "dags"),
               AIRFLOW__CORE__LOAD_EXAMPLES="False")
    return env


def test_demo_serve_runs_offline_and_switches_the_champion_under_load(tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("airflow-mlops")
    done = subprocess.run([str(cli), "demo", "--serve", "--days", "3", "--shift-days", "3", "--port", str(free_port())],
                          env=_clean_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=560,
                          check=False)
    output = done.stdout + done.stderr
    summary = re.search(r"^SERVE-DEMO requests=(\d+) failures=(\d+) versions=(\S*) champion=(\S+) switch_s=(\S+)$",
                        done.stdout, re.MULTILINE)
    assert done.returncode == 0 and summary, output[-8000:]
    # the main job (`airflow-mlops demo`): both DAGs succeeded, v1 registered, state in MLOPS_HOME only
    assert "mlops_features: DagRunState.SUCCESS" in done.stdout or "mlops_features: success" in done.stdout
    assert "model ride_completion v1 (alias challenger" in done.stdout, output[-4000:]
    assert (tmp_path / "home" / "mlflow" / "mlflow.db").is_file()
    # readable for a first-time user: no library deprecation, no MLflow pickle warning, no error-level line
    # (issue 16 item 5); the project's own warnings (e.g. the demo history's staleness) stay
    noise = [line for line in output.splitlines() if re.search(
        r"\[py\.warnings\]|Warning:|WARNING mlflow|INFO mlflow|\[error|XCom not found|Traceback", line)]
    assert noise == [], "\n".join(noise)
    assert re.search(r"^    train\s+success\s+[\d.]+s$", done.stdout, re.MULTILINE), "one line per task"
    assert not (tmp_path / "mlruns").exists(), "MLflow wrote outside the state dir"
    # serving under load while v2 replaces v1
    requests, failures, versions, champion = int(summary[1]), int(summary[2]), summary[3].split(","), summary[4]
    assert failures == 0
    assert champion == "2" and versions == ["1", "2"], "every client: v1, then v2, never back"
    assert requests > 200, "the load loop ran through the retraining, not just around the switch"
    assert "-> prediction 0." in done.stdout and "from v1 (champion)" in done.stdout, "one /predict answer shown"
    serve_log = (tmp_path / "home" / "serve-demo.log").read_text()
    assert "Finished server process" in serve_log, "the server was shut down gracefully (log flushed)"
    attempts = (tmp_path / "net.log").read_text() if (tmp_path / "net.log").exists() else ""
    assert attempts == "", f"outbound network attempts:\n{attempts}"
