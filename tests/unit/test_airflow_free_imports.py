"""The spec and the serving app import no Airflow module (issue 18 items 1 and 4).

Measured before: `import airflow_mlops.core.spec` loaded ~1,360 modules (~240 of them Airflow's, through
exceptions.py), ~3.5-5 s. A fresh interpreter with `-X importtime` lists every module it imports.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def _imported(module: str) -> list[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", done.stderr, re.MULTILINE)


@pytest.mark.parametrize("module", ["airflow_mlops.core.spec", "airflow_mlops.serving.app",
                                    "airflow_mlops.exceptions", "airflow_mlops.config", "airflow_mlops.profile"])
def test_importing_loads_no_airflow_module(module: str) -> None:
    imported = _imported(module)
    assert module in imported, "the -X importtime listing was parsed"
    assert [name for name in imported if name == "airflow" or name.startswith("airflow.")] == []
