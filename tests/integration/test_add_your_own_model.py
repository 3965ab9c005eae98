"""The README's "Add your own model" section, followed to the letter by a user who never touches the package.

The code blocks are read from README.md (tests/support/own_model_data.py), so the test runs what the
README says today. In a fresh MLOPS_HOME and a scratch project directory whose `include/feature_repo`
and `include/models` are copies of the shipped ones (MLOPS_FEATURE_REPO / MLOPS_MODELS_DIR point there):

1. a seeded churn warehouse (`orders` with the label, `customer_stats` over time) is written as parquet
   and dropped into the landing dir by the README's own `mkdir`/`cp` commands;
2. the README's `customers.py` and `churn.yaml` are added at the paths it names;
3. the README's `.venv/bin/airflow-mlops check` exits 0 — and, with a wrong service name, prints the
   error the README shows;
4. `build_dags()` gives `mlops_features` and `churn__train`; both succeed under `dag.test()` (in a
   subprocess with the project's own Airflow environment, like `airflow-mlops demo`), and MLflow has
   `churn` v1 under alias `challenger` with a roc_auc only the point-in-time features can explain.

The fresh state dir gets its Airflow metadata DB from `airflow-mlops init` (what `make demo`/`make up`
run first), in the background while steps 1-3 run. ~50 s on 2 loaded cores, most of it imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.dag_runs import program
from support.own_model_data import (
    PROJECT_DIR,
    README,
    ChurnData,
    churn_tables,
    own_model_readme,
    write_churn_parquet,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = "churn"
FEATURE_DAG = "mlops_features"
TRAIN_DAG = f"{MODEL}__train"
VENV = Path(sys.executable).parent.parent  # .venv: the README runs `.venv/bin/airflow-mlops`

# Like `airflow-mlops demo`: the project's Airflow environment first (Airflow reads it at import), then
# the DAG factory over the specs in MLOPS_MODELS_DIR, then dag.test() of each DAG named on the command line.
RUNNER = program("add_your_own_model_runner")


def _user_env(mlops_home: Path, project: Path) -> dict[str, str]:
    """A shell with nothing from the test session: only where the state and the user's files are."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS", "MLFLOW"))}
    env.update(MLOPS_HOME=str(mlops_home), MLOPS_MODELS_DIR=str(project / "include" / "models"),
               MLOPS_FEATURE_REPO=str(project / "include" / "feature_repo"),
               MLOPS_EXPECTATIONS_DIR=str(project / "include" / "expectations"))
    return env


def _scratch_project(tmp_path: Path, mlops_home: Path) -> Path:
    """A directory that looks like the project to the README's relative paths (.local, .venv, include/)."""
    project = tmp_path / "project"
    for sub in ("feature_repo", "models", "expectations"):
        shutil.copytree(PROJECT_DIR / "include" / sub, project / "include" / sub,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (project / ".local").symlink_to(mlops_home, target_is_directory=True)
    (project / ".venv").symlink_to(VENV, target_is_directory=True)
    return project


def _bash(commands: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def _background(command: list[str], cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A subprocess in its own process group, killed (that group only) if the test leaves early."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def _finished(process: subprocess.Popen[str], expect: int = 0) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == expect, f"{process.args!r} exited {process.returncode}:\n{output[-4000:]}"
    return output


def _readme_example_error() -> tuple[str, str]:
    """The example `check` error the README shows for a wrong feature service: (spec path, message).

    The spec path is taken from `include/` on, whatever the README puts before it (`/…/` or nothing).
    """
    found = re.search(r"`ERROR (?:\S*/)?(include/models/\S+\.yaml): (features\.feature_service: [^`]+)`",
                      README.read_text(encoding="utf-8"))
    assert found, "the README no longer shows an example `check` error for features.feature_service"
    return found[1], found[2]


def _models_with_bad_service(project: Path, spec_path: str, message: str) -> Path:
    """A copy of the models dir whose spec (the one the README's example names) uses the example's bad service."""
    bad_service = re.search(r"'(\w+)' is not defined", message)[1]  # type: ignore[index]
    models = project.parent / "bad_spec" / Path(spec_path).parent
    shutil.copytree(project / Path(spec_path).parent, models)
    spec = models / Path(spec_path).name
    good = spec.read_text(encoding="utf-8")
    spec.write_text(re.sub(r"(feature_service:\s*)\w+", rf"\g<1>{bad_service}", good, count=1), encoding="utf-8")
    return models


def _assert_check_printed(output: str, spec_path: str, message: str, models: Path) -> None:
    errors = [line for line in output.splitlines() if line.startswith("ERROR ")]
    # `check` prints the spec path as it resolved it: absolute.
    expected = f"ERROR {models / Path(spec_path).name}: {message}"
    assert errors == [expected], f"README example: ...{spec_path}: {message}\ncheck printed: {errors}"


def _land_and_add_files(project: Path, mlops_home: Path, env: dict[str, str]) -> ChurnData:
    """README steps 1-3: the user's parquet files copied by the README's commands, its two files added."""
    readme = own_model_readme()
    data = churn_tables()
    write_churn_parquet(project, data)
    landed = _bash(readme.land_commands, project, env)
    assert landed.returncode == 0, landed.stderr
    for dataset in ("orders", "customer_stats"):
        assert (mlops_home / "landing" / dataset / f"{dataset}.parquet").is_file()
        assert (project / "include" / "expectations" / f"{dataset}.json").is_file(), "the README's suite step"
    assert set(readme.files) == {"include/feature_repo/customers.py", f"include/models/{MODEL}.yaml"}
    for relative, text in readme.files.items():
        (project / relative).write_text(text, encoding="utf-8")
    return data


def _run_dags(project: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(RUNNER), FEATURE_DAG, TRAIN_DAG], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    output = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, output[-6000:]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    assert {FEATURE_DAG, TRAIN_DAG} <= set(result["dag_ids"]), result
    assert all(state.endswith("success") for state in result["states"].values()), (result, output[-6000:])
    return result


def _assert_landed_and_joined(mlops_home: Path, data: ChurnData) -> None:
    # The landing dir was drained into the offline store, once per file.
    for dataset in ("orders", "customer_stats"):
        assert (mlops_home / "landing" / dataset / "_landed" / f"{dataset}.parquet").is_file()
        assert len(list((mlops_home / "offline" / dataset / "_batches").glob("*.json"))) == 1
    # The training set joined the customer's stats as of each order: every order, no missing feature.
    [lineage_file] = (mlops_home / "training_sets" / MODEL).glob("*.json")
    lineage = json.loads(lineage_file.read_text())
    assert lineage["rows"] == len(data.orders)  # 21 days < lookback_days (30): every order is in
    assert lineage["feature_service"] == "churn_v1" and set(lineage["feature_views"]) == {"customer_stats"}
    assert lineage["missing"] and not any(lineage["missing"].values()), lineage["missing"]


def _assert_registered(mlops_home: Path) -> None:
    """MLflow (SQLite in MLOPS_HOME): churn v1 under alias challenger, with a roc_auc the features explain.

    On this data the request features alone give roc_auc ~0.52; the joined customer stats take it to ~0.84.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{mlops_home / 'mlflow' / 'mlflow.db'}")
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(version.version) == "1"
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1
    metrics = client.get_run(str(version.run_id)).data.metrics
    assert metrics["roc_auc"] > 0.7, metrics  # the README spec's own threshold


def test_readme_add_your_own_model_end_to_end(mlops_home: Path, tmp_path: Path) -> None:
    project = _scratch_project(tmp_path, mlops_home)
    env = _user_env(mlops_home, project)
    check = own_model_readme().check_command
    spec_path, message = _readme_example_error()
    with contextlib.ExitStack() as stack:
        # A fresh state dir needs its Airflow metadata DB (`airflow-mlops init`); it migrates meanwhile.
        init = stack.enter_context(_background([str(VENV / "bin" / "airflow-mlops"), "init"], project, env))
        data = _land_and_add_files(project, mlops_home, env)
        # Step 4, with the README's command: consistent as written; with the README's wrong service name,
        # the README's error (on a copy of the models dir, in the background).
        bad_models = _models_with_bad_service(project, spec_path, message)
        bad_check = stack.enter_context(_background(["bash", "-euo", "pipefail", "-c", check], project,
                                                    {**env, "MLOPS_MODELS_DIR": str(bad_models)}))
        checked = _bash(check, project, env)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "specs and feature repo are consistent" in checked.stdout
        _finished(init)

        # Airflow picks the model up: the feature DAG lands and materializes, then the generated training DAG.
        _run_dags(project, env)
        _assert_landed_and_joined(mlops_home, data)
        _assert_registered(mlops_home)
        assert not (project / "mlruns").exists(), "MLflow wrote outside MLOPS_HOME"
        _assert_check_printed(_finished(bad_check, expect=1), spec_path, message, bad_models)
