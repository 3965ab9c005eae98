"""Run a test's DAG script (`dag.test()` calls printing one `RESULT <json>` line) in a fresh Airflow.

Integration tests that drive whole DAGs do so in a child process with its own AIRFLOW_HOME, metadata
DB and MLOPS_HOME, so nothing leaks between test modules or from the developer's environment. The
script reports by printing `RESULT ` + JSON; the last such line is its result.

Every such script goes through one shared runner (`run_script`): a pre-warmed Python
(`support/prewarmed.py`) that imported the heavy libraries once and forks a child per script, which
behaves as `python -c script *args` started with the script's environment. A script is either source
text or, preferably, the path of a program module under `support/programs/` (linted and type-checked
like any module; parameterized by argv and environment, never by string substitution). The metadata DB is a copy
of the session's one migrated DB (`support/airflow_db.py`).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from support.airflow_db import migrated_airflow_home

# Variables the child must not inherit: it gets its own Airflow, MLOps state and MLflow registry.
ISOLATED_PREFIXES = ("AIRFLOW_", "AIRFLOW__", "MLOPS_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY")
RESULT_PREFIX = "RESULT "
PREWARMED = Path(__file__).with_name("prewarmed.py")
PROGRAMS = Path(__file__).with_name("programs")
DAG_FILES = Path(__file__).with_name("dags")
READY_TIMEOUT_S = 300


def program(name: str) -> Path:
    """The program module `support/programs/<name>.py`, to pass to `run_script` as its script."""
    path = PROGRAMS / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no test program {path}; programs run by tests live in {PROGRAMS}/<name>.py")
    return path


def dag_file(name: str) -> str:
    """The text of the DAG file `support/dags/<name>.py`, for a test to write into its own DAGs folder."""
    path = DAG_FILES / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no test DAG file {path}; DAG files that tests write live in {DAG_FILES}/<name>.py")
    return path.read_text(encoding="utf-8")


@dataclass
class ScriptRun:
    returncode: int
    stdout: str
    stderr: str


class _PrewarmedPython:
    """The client of one `prewarmed.py` server (one script at a time, as pytest runs tests)."""

    def __init__(self) -> None:
        self._log = tempfile.NamedTemporaryFile(prefix="prewarmed-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, str(PREWARMED)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, bufsize=1)
        self._replies: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_replies, name="prewarmed-replies", daemon=True).start()
        ready = self._reply(READY_TIMEOUT_S, "start")
        assert ready.get("ready"), ready

    def _read_replies(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._replies.put(line)
        self._replies.put("")  # the server is gone

    def _reply(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            line = ""
        if not line:
            raise RuntimeError(f"pre-warmed runner gave no answer to {what} within {timeout:.0f}s "
                               f"(exit {self.proc.poll()}); its log: {self._log.name}")
        return dict(json.loads(line))

    def run(self, script: str | Path, args: list[str], env: Mapping[str, str], cwd: Path, timeout: float) -> ScriptRun:
        assert self.proc.stdin is not None
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            source = {"file": str(script)} if isinstance(script, Path) else {"script": script}
            job = {**source, "args": args, "env": dict(env), "cwd": str(cwd), "stdout": str(out),
                   "stderr": str(err)}
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
            pid = self._reply(60, "a new script")["pid"]
            started = time.monotonic()
            try:
                code = self._reply(timeout, "the script's end")["returncode"]
            except RuntimeError:
                if self.proc.poll() is not None:  # the server died, not the script's clock: say so
                    stderr = _read(err)[-4000:]
                    raise RuntimeError(f"pre-warmed runner exited {self.proc.returncode} while running a script; "
                                       f"its log: {self._log.name}; the script's stderr:\n{stderr}") from None
                os.kill(pid, signal.SIGKILL)
                self._reply(60, "the killed script's end")
                raise subprocess.TimeoutExpired(["prewarmed", "-c", "<script>"], time.monotonic() - started,
                                                output=_read(out), stderr=_read(err)) from None
            return ScriptRun(code, _read(out), _read(err))

    def close(self) -> None:
        stdin: IO[str] | None = self.proc.stdin
        if stdin is not None:
            stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@functools.cache
def _runner() -> _PrewarmedPython:
    runner = _PrewarmedPython()
    atexit.register(runner.close)
    return runner


def run_script(script: str | Path, *args: str, env: Mapping[str, str], cwd: Path, timeout: float) -> ScriptRun:
    """`python -c script *args` (`script` a source text) or `python script *args` (`script` a program file's
    Path, see `program`) with `env` in `cwd`, through the shared pre-warmed runner."""
    runner = _runner()
    if runner.proc.poll() is not None:  # the server died (it never should): start another
        _runner.cache_clear()
        runner = _runner()
    return runner.run(script, list(args), env, cwd, timeout)


def fresh_airflow_env(tmp_path: Path, dags_folder: Path, migrate: bool = True) -> dict[str, str]:
    """This process's environment minus any Airflow/MLOps state, with AIRFLOW_HOME and MLOPS_HOME under tmp_path.

    `migrate` puts a freshly migrated metadata DB there (False: keep the one that is there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ISOLATED_PREFIXES)}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder), MLOPS_HOME=str(tmp_path / "home"))
    if migrate:
        migrated_airflow_home(Path(env["AIRFLOW_HOME"]))  # one migrate per session, copied
    return env


def result_of(done: ScriptRun) -> dict[str, Any]:
    """The last RESULT line of a script that succeeded (else an assertion showing its output)."""
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert done.returncode == 0 and lines, (done.stdout + done.stderr)[-8000:]
    return dict(json.loads(lines[-1][len(RESULT_PREFIX):]))


def run_in_fresh_airflow(tmp_path: Path, script: str | Path, *args: str, dags_folder: Path,
                         timeout: float) -> tuple[dict[str, Any], str]:
    """Run `python -c script *args` in tmp_path on a migrated AIRFLOW_HOME and MLOPS_HOME under tmp_path.

    Asserts the script succeeded and printed a RESULT line; returns (that result, stdout + stderr).
    """
    env = fresh_airflow_env(tmp_path, dags_folder)
    done = run_script(script, *args, env=env, cwd=tmp_path, timeout=timeout)
    return result_of(done), done.stdout + done.stderr
