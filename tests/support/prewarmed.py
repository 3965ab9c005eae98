"""A pre-warmed Python for the tests' DAG scripts: import the heavy libraries once, fork per script.

Each `dag.test()` script used to start a fresh `python -c`, paying ~10-16 s of imports (pandas, pyarrow,
scikit-learn, MLflow, Feast, Great Expectations, Evidently) before its first task; some twenty scripts
run per `make test`. This server imports those libraries once, then forks a child per script. The child
gets the script's own environment, working directory, argv and output files, so it behaves like
`python -c script args` started with that environment:

- Airflow and this project's package are NOT imported before the fork: Airflow reads AIRFLOW_HOME and
  its DB settings at import, so each child imports it under its own environment.
- Nothing here starts a thread or an OpenMP/BLAS parallel region before forking (imports only), so the
  child inherits no lock held by another thread.
- A library that reads an environment variable at import (telemetry switches) sees the server's
  environment: the server is started with the test process's environment, where they are set already.

A job names either a `script` (source text, run as `python -c`) or a `file` (a program module under
`tests/support/programs/`, run like `python file`, except that sys.path[0] is still the working directory,
as for `-c`, so both kinds import the same modules).

Protocol (one JSON line each way, one script at a time): {"script" | "file", "args", "env", "cwd", "stdout",
"stderr"} -> {"returncode"}. `python prewarmed.py` serves on stdin/stdout until stdin closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import traceback
from typing import Any

PRELOAD = ("numpy", "pandas", "pyarrow", "pyarrow.parquet", "duckdb", "sklearn.ensemble", "sklearn.linear_model",
           "sklearn.metrics", "scipy.stats", "sqlalchemy", "mlflow", "mlflow.sklearn", "feast", "great_expectations",
           "evidently")


def preload() -> list[str]:
    # Telemetry switches first, as the CLI and our operators set them before any library import: some
    # libraries read theirs at import, which now happens here.
    from airflow_mlops import privacy

    privacy.disable_telemetry()
    failed = []
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - a library that cannot preload is simply imported by the child
            failed.append(name)
    return failed


def die_with_parent() -> None:
    """SIGTERM this process when its parent dies (Linux), so nothing outlives a killed test run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def run_child(job: dict[str, Any]) -> None:
    """In the forked child: become `python -c script *args` (or `python file *args`) with the job's environment.

    Never returns."""
    code = 1
    die_with_parent()
    try:
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        from airflow_mlops import privacy

        privacy.disable_telemetry()  # what our CLI and operators do in a fresh process, under the job's environment
        for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # the child (and what it starts) must not read the server's request pipe
        os.close(null)
        sys.stdin = open(0, closefd=False)
        sys.path[0] = ""  # as `python -c`: the working directory first
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        if "file" in job:  # a program module: its own name in argv[0], __file__ and tracebacks
            sys.argv = [job["file"], *job["args"]]
            namespace["__file__"] = job["file"]
            with open(job["file"], encoding="utf-8") as source:
                code_object = compile(source.read(), job["file"], "exec")
        else:
            sys.argv = ["-c", *job["args"]]
            code_object = compile(job["script"], "<string>", "exec")
        exec(code_object, namespace)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported like an uncaught exception of `python -c`
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    die_with_parent()
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library chatter during imports must not corrupt the reply channel
    failed = preload()
    reply.write(json.dumps({"ready": True, "not_preloaded": failed}) + "\n")
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(job)
        reply.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        reply.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    serve()
