"""Headless operation without a running Airflow: what `up` derives from its port, `env`'s state-dir line,
and the filters that keep library noise out of `demo` / `run` output (issue 16 items 3 and 5).

The end-to-end halves are tests/e2e/test_headless_up.py (`up --port N` runs a task, SIGTERM leaves no
process), tests/integration/test_headless_run.py (`run`, `serve` SIGTERM) and the demo test
(tests/integration/test_demo_serving.py: no library warning line in the whole demo output).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from airflow_mlops import runtime_env
from airflow_mlops.headless import quiet_library_warnings

pytestmark = pytest.mark.unit

CLI = [sys.executable, "-m", "airflow_mlops.cli"]


def _base_env(tmp_path: Path) -> dict[str, str]:
    return {"AIRFLOW_HOME": str(tmp_path / "airflow")}


# --- up: everything that follows the port --------------------------------------------------------------


def test_a_non_default_port_moves_the_base_url_and_the_execution_api_with_it(tmp_path: Path) -> None:
    env = runtime_env.standalone_env(18123, _base_env(tmp_path))
    assert env["AIRFLOW__API__PORT"] == "18123"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__BASE_URL"] == "http://localhost:18123/"
    # Airflow's own fallback is http://localhost:8080/execution/: tasks would call the wrong server
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"


def test_port_comes_from_the_flag_then_the_variable_then_8080(tmp_path: Path) -> None:
    assert runtime_env.standalone_env(None, _base_env(tmp_path))["AIRFLOW__API__PORT"] == "8080"
    from_variable = runtime_env.standalone_env(None, {**_base_env(tmp_path), "AIRFLOW__API__PORT": "9191"})
    assert from_variable["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:9191/execution/"
    assert runtime_env.standalone_env(9292, {**_base_env(tmp_path), "AIRFLOW__API__PORT": "9191"})[
        "AIRFLOW__API__PORT"] == "9292"


def test_what_the_user_set_wins_in_variables_and_in_airflow_cfg(tmp_path: Path) -> None:
    base = {**_base_env(tmp_path), "AIRFLOW__API__BASE_URL": "https://airflow.example/",
            "AIRFLOW__CORE__PARALLELISM_CMD": "echo 3"}
    env = runtime_env.standalone_env(18124, base)
    assert "AIRFLOW__API__BASE_URL" not in env and "AIRFLOW__CORE__EXECUTION_API_SERVER_URL" not in env
    assert "AIRFLOW__CORE__PARALLELISM" not in env
    # airflow.cfg as Airflow writes it (every default spelled out) is not a choice; a changed value is
    cfg = tmp_path / "airflow" / "airflow.cfg"
    cfg.parent.mkdir()
    cfg.write_text("[core]\nparallelism = 32\n[logging]\nworker_log_server_port = 8793\n"
                   "trigger_log_server_port = 18999\n[api]\nbase_url = \n")
    env = runtime_env.standalone_env(18125, _base_env(tmp_path))
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(max(2, runtime_env.usable_cpus()))
    assert "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT" in env and "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT" not in env
    assert env["AIRFLOW__API__BASE_URL"] == "http://localhost:18125/"


def test_parallelism_follows_the_usable_cpus_not_airflows_32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_env, "usable_cpus", lambda: 2)
    assert runtime_env.standalone_env(18126, _base_env(tmp_path))["AIRFLOW__CORE__PARALLELISM"] == "2"
    monkeypatch.setattr(runtime_env, "usable_cpus", lambda: 12)
    assert runtime_env.standalone_env(18126, _base_env(tmp_path))["AIRFLOW__CORE__PARALLELISM"] == "12"
    monkeypatch.setattr(runtime_env, "usable_cpus", lambda: 1)
    assert runtime_env.standalone_env(18126, _base_env(tmp_path))["AIRFLOW__CORE__PARALLELISM"] == "2"


def test_up_preloads_the_heavy_libraries_in_the_scheduler_unless_the_user_said_otherwise(tmp_path: Path) -> None:
    # plugin/preload.py reads [mlops] preload_libraries; `up` turns it on, the user's choice wins
    assert runtime_env.standalone_env(18128, _base_env(tmp_path))["AIRFLOW__MLOPS__PRELOAD_LIBRARIES"] == "True"
    chosen = {**_base_env(tmp_path), "AIRFLOW__MLOPS__PRELOAD_LIBRARIES": "False"}
    assert "AIRFLOW__MLOPS__PRELOAD_LIBRARIES" not in runtime_env.standalone_env(18128, chosen)
    cfg = tmp_path / "airflow" / "airflow.cfg"
    cfg.parent.mkdir()
    cfg.write_text("[mlops]\npreload_libraries = False\n")
    assert "AIRFLOW__MLOPS__PRELOAD_LIBRARIES" not in runtime_env.standalone_env(18128, _base_env(tmp_path))


def test_log_server_ports_move_off_a_taken_default_and_never_collide(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:  # a second `up` while the first holds the default log ports
        busy.bind(("", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        monkeypatch.setitem(runtime_env.AIRFLOW_DEFAULTS, ("logging", "worker_log_server_port"), str(taken))
        monkeypatch.setitem(runtime_env.AIRFLOW_DEFAULTS, ("logging", "trigger_log_server_port"), str(taken))
        env = runtime_env.standalone_env(18127, _base_env(tmp_path))
    worker = int(env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"])
    trigger = int(env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"])
    assert taken not in (worker, trigger) and worker != trigger and 18127 not in (worker, trigger)


# --- env: which state dir and why ---------------------------------------------------------------------


def _env_command(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
    return subprocess.run([*CLI, "env"], env={**base, **extra}, capture_output=True, text=True, timeout=60,
                          check=False, cwd=tmp_path)


def test_env_says_the_state_dir_came_from_mlops_home(tmp_path: Path) -> None:
    done = _env_command(tmp_path, MLOPS_HOME=str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first == f"# state dir {tmp_path / 'state'} (MLOPS_HOME is set)"
    assert f"export AIRFLOW_HOME={tmp_path / 'state' / 'airflow'}" in done.stdout


def test_env_says_the_default_was_chosen_and_how_to_change_it(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "include" / "models").mkdir(parents=True)
    done = _env_command(tmp_path, MLOPS_PROJECT_DIR=str(project))
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith(f"# state dir {project / '.local'} (default: MLOPS_HOME is not set")
    assert "set MLOPS_HOME" in first


def test_env_output_is_safe_to_eval(tmp_path: Path) -> None:
    home = tmp_path / "a dir with spaces"
    done = _env_command(tmp_path, MLOPS_HOME=str(home))
    shell = subprocess.run(["bash", "-c", f'{done.stdout}\nprintf %s "$AIRFLOW_HOME"'], capture_output=True,
                           text=True, timeout=30, check=True)
    assert shell.stdout == str(home / "airflow")


# --- demo / run output: library noise filtered where it starts --------------------------------------


def _emit(category: type[Warning], module: str) -> None:
    warnings.warn_explicit("old API", category, filename=f"{module}.py", lineno=1, module=module)


def test_library_deprecations_stay_hidden_after_a_library_resets_the_filters() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.resetwarnings()
        quiet_library_warnings()
        warnings.simplefilter("once", DeprecationWarning)  # what importing Feast does
        quiet_library_warnings()  # what the task runner does before each task
        _emit(DeprecationWarning, "mlflow.store.tracking.sqlalchemy_store")
        _emit(PendingDeprecationWarning, "feast.feature_view")
        warnings.warn("Using `httpx` with `starlette.testclient` is deprecated; install `httpx2` instead.",
                      UserWarning, stacklevel=1)
        _emit(DeprecationWarning, "airflow_mlops.core.spec")  # ours: shown
        _emit(UserWarning, "sklearn.base")  # not a deprecation: shown
    assert [(w.category, str(w.message)) for w in seen] == [(DeprecationWarning, "old API"), (UserWarning, "old API")]
    assert seen[0].filename == "airflow_mlops.core.spec.py"


def test_mlflow_cloudpickle_warning_is_dropped_only_while_our_model_is_logged() -> None:
    from airflow_mlops.jobs.training import _cloudpickle_chosen

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    logger = logging.getLogger("mlflow.sklearn")
    message = ("Saving scikit-learn models in the pickle or cloudpickle format requires exercising caution because "
               "these formats rely on Python's object serialization mechanism")
    other = "Model was missing function: predict. Not logging python_function flavor!"
    collect = Collect()
    logger.addHandler(collect)  # Airflow's logging config owns the root handlers (caplog sees nothing)
    try:
        with _cloudpickle_chosen():
            logger.warning(message)
            logger.warning(other)
        logger.warning(message)
    finally:
        logger.removeHandler(collect)
    assert collect.messages == [other, message]

