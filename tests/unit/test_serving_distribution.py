"""The serving distribution (serving/pyproject.toml) ships what `airflow-mlops serve` imports, at the main pins.

- requirements/serving.txt pins every package at requirements/lock.txt's version and holds no Airflow, GX or
  Evidently;
- the wheel's force-include list covers every airflow_mlops module the server can reach (the import graph of
  import-linter's grimp, lazy imports included), and none of the Airflow adapter layer.
The install itself (fresh venv, `import airflow` fails, same /predict answer) is
tests/integration/test_serving_without_airflow.py.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[2]
# What the serve command runs: the app (uvicorn factory), the CLI's serve path (runtime_env, privacy, processes).
ENTRY_POINTS = ("airflow_mlops.serving", "airflow_mlops.processes", "airflow_mlops.runtime_env",
                "airflow_mlops.privacy")
ADAPTERS = ("hooks", "operators", "sensors", "triggers", "dags", "plugin", "jobs", "openlineage")


def _pins(path: Path) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)(?:\[[^\]]*\])?==(\S+)", path.read_text(), re.M)}


def _shipped() -> list[str]:
    """Module paths the wheel force-includes, as dotted prefixes (airflow_mlops.core, airflow_mlops.cli, ...)."""
    config = tomllib.loads((PROJECT / "serving" / "pyproject.toml").read_text())
    targets = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"].values()
    return [t.removesuffix(".py").replace("/", ".").removesuffix(".__init__") for t in targets]


def test_the_serving_lock_pins_the_main_locks_versions_and_no_airflow() -> None:
    serving, main = _pins(PROJECT / "requirements" / "serving.txt"), _pins(PROJECT / "requirements" / "lock.txt")
    assert {"mlflow", "feast", "scikit-learn", "fastapi", "uvicorn"} <= set(serving)
    assert {n: (v, main.get(n)) for n, v in serving.items() if main.get(n) != v} == {}, "run `make lock`"
    heavy = [n for n in serving if n.startswith(("apache-airflow", "great-expectations", "evidently"))]
    assert heavy == []
    assert "--constraint requirements/lock.txt" in (PROJECT / "requirements" / "serving.txt").read_text()


def test_the_wheel_ships_every_module_the_server_reaches_and_no_adapter() -> None:
    import grimp

    graph = grimp.build_graph("airflow_mlops", cache_dir=None)
    starts = {m for m in graph.modules if m.startswith(ENTRY_POINTS)}
    reached = set(starts)
    for module in starts:
        reached |= graph.find_upstream_modules(module)
    reached = {m for m in reached if m.startswith("airflow_mlops")}
    shipped = _shipped()
    missing = sorted(m for m in reached if not any(m == s or m.startswith(s + ".") for s in shipped))
    assert missing == [], "add them to serving/pyproject.toml's force-include"
    assert not [s for s in shipped if s.split(".")[1:2] and s.split(".")[1] in ADAPTERS]
    assert not [m for m in reached if m.split(".")[1:2] and m.split(".")[1] in ADAPTERS]
