"""`airflow-mlops run` and `airflow-mlops serve` as a user runs them, headless (issue 16 item 3).

- `run <dag_id>`: dag.test() on the embedded state of a fresh MLOPS_HOME, one line per task, the final
  state, exit 0; a failing run (a DAG from the dags folder, failed through its `--conf`) exits 1 and
  its lines say which task failed and which never ran.
- `serve`: SIGTERM stops the server and every process it started (uvicorn workers) within 30 s, with
  one worker (in-process server) and with two (uvicorn's supervisor and its worker processes).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from support.airflow_client import wait_for
from support.airflow_db import migrated_airflow_home
from support.airflow_stack import _die_with_parent, free_port
from support.dag_runs import dag_file
from support.demo_state import checkout_trained_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CLI = str(Path(sys.executable).with_name("airflow-mlops"))
STOP_PROMISE_S = 30
FAILING_DAG = dag_file("headless_failing")


def _env(tmp_path: Path, dags: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS", "MLFLOW"))}
    env["MLOPS_HOME"] = str(tmp_path / "home")
    if dags is not None:
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    migrated_airflow_home(tmp_path / "home" / "airflow")  # the session's one migrate, copied
    return env


def _task_lines(stdout: str) -> dict[str, str]:
    """`    <task_id>  <state>  [seconds]` lines -> {task_id: last state}."""
    return {m[1]: m[2] for m in re.finditer(r"^    (\w+)\s+(success|failed|skipped|upstream_failed|up_for_retry)\b",
                                            stdout, re.MULTILINE)}


def test_run_a_shipped_dag_prints_each_task_and_succeeds(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run([CLI, "run", "mlops_features"], env=_env(tmp_path), cwd=tmp_path, capture_output=True,
                          text=True, timeout=240, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    tasks = _task_lines(done.stdout)
    # no data landed: the gate and landing have nothing to do, materialize skips, the run succeeds
    assert tasks == {"validate_raw_batches": "success", "land_raw_batches": "success", "feast_apply": "success",
                     "materialize": "skipped", "check_freshness": "success"}, done.stdout
    assert re.search(r"^    mlops_features: success in [\d.]+s \(run manual__", done.stdout, re.MULTILINE), done.stdout
    assert (tmp_path / "home" / "airflow" / "airflow.db").is_file()
    assert "py.warnings" not in output and "[error" not in output, output[-6000:]
    print(f"[run] mlops_features in {time.monotonic() - started:.1f}s", flush=True)


def test_run_a_failing_dag_exits_non_zero_and_names_the_failed_task(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "failing.py").write_text(FAILING_DAG)
    env = _env(tmp_path, dags)
    done = subprocess.run([CLI, "run", "headless_failing", "--conf", '{"fail": true}', "--retries", "0"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 1, (done.stdout + done.stderr)[-6000:]
    assert _task_lines(done.stdout) == {"check": "failed", "after": "upstream_failed"}, done.stdout
    assert re.search(r"^    headless_failing: failed in ", done.stdout, re.MULTILINE), done.stdout
    assert 'with conf {"fail": true}' in done.stdout
    # the same DAG without the flag succeeds; a conf that is not a JSON object is refused before any work
    ok = subprocess.run([CLI, "run", "headless_failing", "--retries", "0"], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=240, check=False)
    assert ok.returncode == 0 and _task_lines(ok.stdout) == {"check": "success", "after": "success"}, ok.stdout
    bad = subprocess.run([CLI, "run", "headless_failing", "--conf", "[1]"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "--conf must be a JSON object" in bad.stderr, bad.stderr
    unknown = subprocess.run([CLI, "run", "no_such_dag"], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=240, check=False)
    assert unknown.returncode == 2 and "no DAG 'no_such_dag'" in unknown.stderr and "mlops_features" in unknown.stderr


@pytest.fixture(scope="module")
def trained_env() -> dict[str, str]:
    """The session's trained demo state (v1 champion): what `serve` needs to start."""
    return checkout_trained_demo().env


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_stops_with_every_child_on_sigterm(tmp_path: Path, trained_env: dict[str, str], workers: int) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([CLI, "serve", "--model", "ride_completion", "--port", str(port), "--workers",
                                 str(workers)], env=trained_env, cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)  # noqa: PLW1509

    def alive() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}:\n{log_path.read_text(errors='replace')[-4000:]}")

    def health_ok() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(health_ok, 180, f"serve on port {port}", on_poll=alive)
        tree = psutil.Process(proc.pid).children(recursive=True)
        if workers > 1:
            assert len([p for p in tree if p.ppid() == proc.pid]) >= workers, tree
        stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_PROMISE_S + 5)
        took = time.monotonic() - stop
        _, left = psutil.wait_procs(tree, timeout=max(0.1, STOP_PROMISE_S - took))
        left = [p for p in left if p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"survived SIGTERM: {[(p.pid, p.cmdline()) for p in left]}"
        assert took <= STOP_PROMISE_S, f"took {took:.1f}s"
        log_text = log_path.read_text(errors="replace")
        assert "Finished server process" in log_text or "Stopping parent process" in log_text, log_text[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
