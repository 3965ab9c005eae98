"""Run a test's DAG script (`dag.test()` calls printing one `RESULT <json>` line) in a fresh Airflow.

Integration tests that drive whole DAGs do so in a subprocess with its own AIRFLOW_HOME, metadata DB
(`airflow db migrate`) and MLOPS_HOME, so nothing leaks between test modules or from the developer's
environment. The script reports by printing `RESULT ` + JSON; the last such line is its result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# Variables the child must not inherit: it gets its own Airflow, MLOps state and MLflow registry.
ISOLATED_PREFIXES = ("AIRFLOW_", "AIRFLOW__", "MLOPS_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY")
RESULT_PREFIX = "RESULT "


def run_in_fresh_airflow(tmp_path: Path, script: str, *args: str, dags_folder: Path,
                         timeout: float) -> tuple[dict[str, Any], str]:
    """Run `python -c script *args` in tmp_path on a migrated AIRFLOW_HOME and MLOPS_HOME under tmp_path.

    Asserts the script succeeded and printed a RESULT line; returns (that result, stdout + stderr).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(ISOLATED_PREFIXES)}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder), MLOPS_HOME=str(tmp_path / "home"))
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    done = subprocess.run([sys.executable, "-c", script, *args], check=False, env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=tmp_path)
    output = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert done.returncode == 0 and lines, output[-8000:]
    return dict(json.loads(lines[-1][len(RESULT_PREFIX):])), output
