"""Loading our plugin changes no environment variable of the process (issue 18 item 3).

Airflow loads plugins in every process, other teams' tasks included: a variable set at import would
change their libraries' behaviour. Each check runs in a fresh interpreter with a minimal environment
(nothing of ours inherited), the way an Airflow process starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.adapter

SNAPSHOT = Path(__file__).resolve().parents[1] / "support" / "env_snapshot.py"


def _changed_environment(load: str, tmp_path: Path) -> dict[str, list[str | None]]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([sys.executable, "-P", str(SNAPSHOT), load], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_loading_the_plugin_entry_point_leaves_os_environ_unchanged(tmp_path: Path) -> None:
    assert _changed_environment("plugin", tmp_path) == {}


def test_importing_what_a_dag_file_imports_leaves_os_environ_unchanged(tmp_path: Path) -> None:
    # the DAG factory imports every operator, sensor and trigger module of ours
    assert _changed_environment("dag-factory", tmp_path) == {}
