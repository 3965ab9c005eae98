"""Serving a model imports no Airflow, and the serving install (no Airflow at all) answers as the full one.

1. `airflow-mlops serve` of the full install on the trained demo state, run with PYTHONPROFILEIMPORTTIME=1:
   every module the process imports, at startup, while it loads the champion and answers /predict, and at
   shutdown, is one `import time:` line of its log; none may be `airflow` or below it.
2. A fresh venv made with uv from requirements/serving.txt plus the `serving/` distribution (--no-deps, as
   docker/serving.Dockerfile installs it): `import airflow` fails there, and its `airflow-mlops serve` gives
   the same /predict answer, probability for probability, as the full install's.

Cost: ~10 s for the venv (uv's cache is warm; the wheels are hard-linked), ~2 x 10-20 s per server start;
the demo state is the session's shared one (support/demo_state).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.demo_state import checkout_trained_demo
from support.serving_process import serving_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PROJECT = Path(__file__).resolve().parents[2]
MODEL = "ride_completion"
REQUEST = {"trip_distance_km": 3.2, "surge_multiplier": 1.25, "pickup_hour": 8}
ROWS = [{"driver_id": 1001, **REQUEST}, {"driver_id": 1003, "trip_distance_km": 12.0, "surge_multiplier": 2.5,
                                          "pickup_hour": 23}]
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", re.MULTILINE)
STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_FEAST_ONLINE_STORE",
                   "AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW_CONN_FEAST_DEFAULT")


@pytest.fixture(scope="module")
def demo() -> Any:
    return checkout_trained_demo()


def _env(demo: Any) -> dict[str, str]:
    env = {k: v for k, v in demo.env.items() if k not in STORE_VARIABLES}
    # a wheel install has no project dir of its own: the specs and the feature repo are this checkout's
    return {**env, "MLOPS_PROJECT_DIR": str(PROJECT), "PYTHONPROFILEIMPORTTIME": "1"}


def _imported(log: Path) -> list[str]:
    return IMPORT_LINE.findall(log.read_text(errors="replace"))


def _predict(demo: Any, log: Path, cli: Path | None = None) -> list[dict[str, Any]]:
    with serving_process(MODEL, _env(demo), log, cli=cli) as server:
        return server.predict(ROWS)


@pytest.fixture(scope="module")
def full_install(demo: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    log = tmp_path_factory.mktemp("serve-full") / "serve.log"
    return _predict(demo, log), log


@pytest.fixture(scope="module")
def serving_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """requirements/serving.txt, then the serving distribution without deps: what the serving image runs."""
    venv = tmp_path_factory.mktemp("serving-venv") / "venv"
    uv = Path(sys.executable).with_name("uv")
    python = venv / "bin" / "python"
    for command in ([str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)],
                    [str(uv), "pip", "install", "--quiet", "--python", str(python), "-r",
                     str(PROJECT / "requirements" / "serving.txt")],
                    [str(uv), "pip", "install", "--quiet", "--python", str(python), "--no-deps",
                     str(PROJECT / "serving")]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                              env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"})
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    yield venv


def test_serving_a_prediction_imports_no_airflow_module(full_install: tuple[list[dict[str, Any]], Path]) -> None:
    predictions, log = full_install
    imported = _imported(log)
    assert {"airflow_mlops.serving.app", "mlflow", "feast", "sklearn", "uvicorn"} <= set(imported), \
        "the importtime log of the serving process was read"
    assert len(predictions) == len(ROWS)
    assert [name for name in imported if name == "airflow" or name.startswith("airflow.")] == []
    assert "Finished server process" in log.read_text(), "uvicorn's own logging config stays in place"


def test_the_serving_install_has_no_airflow_and_answers_as_the_full_install(
        demo: Any, serving_venv: Path, full_install: tuple[list[dict[str, Any]], Path],
        tmp_path: Path) -> None:
    python = serving_venv / "bin" / "python"
    done = subprocess.run([str(python), "-c", "import airflow"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode != 0 and "No module named 'airflow'" in done.stderr, done.stderr
    for absent in ("great_expectations", "evidently", "airflow_mlops.hooks", "airflow_mlops.operators"):
        done = subprocess.run([str(python), "-c", f"import {absent}"], capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode != 0, f"{absent} is importable in the serving install"

    predictions = _predict(demo, tmp_path / "serve.log", cli=serving_venv / "bin" / "airflow-mlops")

    expected, _ = full_install
    assert [{k: v for k, v in p.items() if k != "request_id"} for p in predictions] == \
        [{k: v for k, v in p.items() if k != "request_id"} for p in expected]  # prediction, version, route, entity


def test_other_commands_say_they_need_the_full_install(serving_venv: Path) -> None:
    done = subprocess.run([str(serving_venv / "bin" / "airflow-mlops"), "run", "mlops_features"], capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, "MLOPS_PROJECT_DIR": str(PROJECT)})
    assert done.returncode == 2
    assert "serving install" in done.stderr and "`airflow-mlops run`" in done.stderr, done.stderr
