"""`airflow-mlops up --port N` on a non-default port runs a task, sizes its workers to the machine, and
leaves no process behind after SIGTERM (issue 16 item 3).

The real command (`airflow standalone` under our supervisor) on a fresh MLOPS_HOME, with a one-task
DAG in its own dags folder: the task runs only if the worker reaches the Execution API on port N
(Airflow's fallback is localhost:8080). The task reports which heavy libraries its process already has:
`up` turns on the scheduler's preload (issue 20 item 4), so it must find them without importing them.
Then SIGTERM to `up`; within 30 s no process of its tree or of standalone's session may be left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from support.airflow_client import AirflowClient, wait_for
from support.airflow_db import migrated_airflow_home
from support.airflow_stack import _die_with_parent, free_port
from support.dag_runs import dag_file

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]  # start-up includes the preload (~15 s idle, minutes loaded)

PROJECT = Path(__file__).resolve().parents[2]
DAG_ID = "headless_up_probe"
PROBE_DAG = dag_file(DAG_ID)  # support/dags/<DAG_ID>.py defines the DAG of that id
PASSWORD = "headless-up-test"
READY_TIMEOUT_S = 240  # the scheduler imports the heavy libraries first (preload)
RUN_TIMEOUT_S = 90
STOP_PROMISE_S = 30


def _env(home: Path, dags: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS", "MLFLOW"))}
    env.update(MLOPS_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(dags), PYTHONUNBUFFERED="1",
               AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5")
    return env


def _healthy(base_url: str) -> bool:
    import httpx

    try:
        health = httpx.get(f"{base_url}/api/v2/monitor/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return False
    return all((health.get(key) or {}).get("status") == "healthy" for key in ("scheduler", "dag_processor",
                                                                                "triggerer"))


def _session_members(sessions: set[int]) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def test_up_on_a_non_default_port_runs_a_dag_and_sigterm_leaves_no_process(tmp_path: Path) -> None:
    home, dags = tmp_path / "home", tmp_path / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(PROBE_DAG)
    migrated_airflow_home(home / "airflow")  # the session's one migrate, copied (`up` re-checks it)
    (home / "airflow" / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": PASSWORD}))
    port = free_port()
    assert port != 8080
    log_path = tmp_path / "up.log"
    cli = Path(sys.executable).with_name("airflow-mlops")
    started = time.monotonic()
    with log_path.open("wb") as log:
        up = subprocess.Popen([str(cli), "up", "--port", str(port)], env=_env(home, dags), cwd=tmp_path,
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              preexec_fn=_die_with_parent)  # noqa: PLW1509 - the test starts no thread first
    base_url = f"http://127.0.0.1:{port}"

    def alive() -> None:
        if up.poll() is not None:
            raise AssertionError(f"`up` exited {up.returncode}:\n{log_path.read_text(errors='replace')[-6000:]}")

    try:
        wait_for(lambda: _healthy(base_url), READY_TIMEOUT_S, f"Airflow from `up` healthy on {base_url}",
                 on_poll=alive)
        print(f"[up] healthy on port {port} after {time.monotonic() - started:.1f}s", flush=True)
        client = AirflowClient(base_url, "admin", PASSWORD)
        try:
            wait_for(lambda: client.request("GET", "/dags", params={"dag_id_pattern": DAG_ID})["dags"],
                     READY_TIMEOUT_S, f"{DAG_ID} parsed", on_poll=alive)
            client.unpause(DAG_ID)
            run = client.trigger(DAG_ID)
            finished = client.wait_for_run(DAG_ID, run["dag_run_id"], RUN_TIMEOUT_S, on_poll=alive)
            preloaded = client.request(
                "GET", f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/hello/xcomEntries/return_value",
            )["value"] if finished["state"] == "success" else None
        finally:
            client.close()
        assert finished["state"] == "success", log_path.read_text(errors="replace")[-6000:]
        # `up` turns on [mlops] preload_libraries: the task process, forked from a LocalExecutor worker forked
        # from the scheduler, starts with them imported (plugin/preload.py)
        assert preloaded == ["feast", "mlflow", "pandas", "sklearn"], log_path.read_text(errors="replace")[-6000:]
        assert "airflow-mlops: preloaded" in log_path.read_text(errors="replace")
        print(f"[up] {DAG_ID} succeeded after {time.monotonic() - started:.1f}s", flush=True)

        tree = psutil.Process(up.pid).children(recursive=True)
        # the machine, not Airflow's default of 32, sizes the LocalExecutor (one worker process per slot)
        workers = [p for p in tree if "LocalExecutor" in " ".join(_cmdline(p))]
        assert len(workers) == max(2, len(os.sched_getaffinity(0))), [_cmdline(p) for p in workers]
        sessions = {sid for sid in map(_sid_or_none, [up, *tree]) if sid is not None} - {os.getsid(0)}
        assert len(sessions) >= 2, "`up` and standalone each run in a session of their own"

        stop = time.monotonic()
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=STOP_PROMISE_S + 5)
        took = time.monotonic() - stop
        _, survivors = psutil.wait_procs(tree, timeout=max(0.1, STOP_PROMISE_S - took))
        left = [p for p in survivors if p.status() != psutil.STATUS_ZOMBIE] + _session_members(sessions)
        print(f"[up] stopped in {took:.1f}s; {len(tree)} processes were in its tree", flush=True)
        assert not left, f"survived SIGTERM: {[(p.pid, _cmdline(p)) for p in left]}"
        # Exit 1 says some process needed SIGKILL at the end of the deadline: still stopped within the promise.
        assert took <= STOP_PROMISE_S and up.returncode in (0, 1), log_path.read_text(errors="replace")[-4000:]
    finally:
        _cleanup(up)


def _cleanup(up: subprocess.Popen[bytes]) -> None:
    """Whatever happened: stop `up` (SIGTERM first, it stops its tree), then kill anything left of its sessions."""
    if up.poll() is not None:
        return
    tree = psutil.Process(up.pid).children(recursive=True)
    sessions = {sid for sid in map(_sid_or_none, [up, *tree]) if sid is not None} - {os.getsid(0)}
    up.send_signal(signal.SIGTERM)
    try:
        up.wait(timeout=STOP_PROMISE_S + 10)
    except subprocess.TimeoutExpired:
        up.kill()
        up.wait(timeout=10)
    for proc in [*tree, *_session_members(sessions)]:
        try:
            proc.kill()
        except psutil.Error:
            continue


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def _sid_or_none(proc: psutil.Process | subprocess.Popen[bytes]) -> int | None:
    try:
        return os.getsid(proc.pid)
    except OSError:
        return None
