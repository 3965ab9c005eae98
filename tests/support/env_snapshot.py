"""Child program: what loading part of our package changes in `os.environ`, as JSON on the last stdout line.

    python tests/support/env_snapshot.py plugin        # the airflow.plugins entry point, loaded as Airflow does
    python tests/support/env_snapshot.py dag-factory   # what a DAG file imports (every operator, sensor, trigger)

Run by tests/adapter/test_plugin_side_effects.py as `python -P` (tests/support stays off sys.path) in a fresh
interpreter with a minimal environment; it imports nothing of ours before taking the "before" snapshot.
"""

from __future__ import annotations

import json
import os
import sys


def load_plugin_entry_point() -> None:
    from importlib.metadata import entry_points

    (entry_point,) = [e for e in entry_points(group="airflow.plugins") if e.name == "airflow_mlops"]
    plugin_class = entry_point.load()
    assert plugin_class.__name__ == "MLOpsPlugin", plugin_class
    plugin_class().on_load()  # what Airflow's plugins manager does with it


def import_dag_factory() -> None:
    import airflow_mlops.dags.factory  # noqa: F401 - the import is the side effect under test


LOADS = {"plugin": load_plugin_entry_point, "dag-factory": import_dag_factory}


def changed_by(load: str) -> dict[str, list[str | None]]:
    before = dict(os.environ)
    LOADS[load]()
    after = dict(os.environ)
    return {k: [before.get(k), after.get(k)] for k in set(before) | set(after) if before.get(k) != after.get(k)}


if __name__ == "__main__":
    print(json.dumps(changed_by(sys.argv[1])))
