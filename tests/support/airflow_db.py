"""One `airflow db migrate` per test session: every test Airflow gets a copy of that migrated SQLite DB.

A migrate costs ~8 s on an idle 2-core machine (more on a loaded one) and some twenty tests each need a
fresh metadata DB. A freshly migrated SQLite DB holds no path of its Airflow home (checked: no
AIRFLOW_HOME string in the file), so a byte copy at `<AIRFLOW_HOME>/airflow.db`, Airflow's default
location, plus the `airflow.cfg` the migrate wrote (its paths rewritten to the new home) is what a
migrate there would have made. Only for the default SQLite DB: a test that
points Airflow at PostgreSQL migrates that server itself.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

MIGRATE_TIMEOUT_S = 300
# Variables that would point the migration at another DB or home than the template's own.
_ISOLATED_PREFIXES = ("AIRFLOW_", "AIRFLOW__", "MLOPS_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY")


@functools.cache
def _template() -> Path:
    root = Path(os.environ.get("MLOPS_TEST_ROOT") or f"/tmp/mlops-tests-{os.getpid()}") / "airflow-db-template"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ISOLATED_PREFIXES)}
    env.update(AIRFLOW_HOME=str(root), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True, text=True,
                          timeout=MIGRATE_TIMEOUT_S, check=False, cwd=root)
    output = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, f"`airflow db migrate` of the template DB failed:\n{output}"
    return root / "airflow.db"


def migrated_airflow_home(airflow_home: Path) -> Path:
    """Give `airflow_home` a freshly migrated SQLite metadata DB (Airflow's default `airflow.db`); return it.

    The `airflow.cfg` that the migrate wrote comes along, its paths moved to `airflow_home`: without it,
    components started together on this home would each write one with their own random Fernet key,
    and a trigger encrypted by one could not be decrypted by another.
    """
    template = _template()
    airflow_home.mkdir(parents=True, exist_ok=True)
    target = airflow_home / "airflow.db"
    shutil.copyfile(template, target)
    config = airflow_home / "airflow.cfg"
    if not config.exists():
        text = (template.parent / "airflow.cfg").read_text()
        config.write_text(text.replace(str(template.parent), str(airflow_home)))
    return target


def uses_default_sqlite(env: dict[str, str]) -> bool:
    """True when an Airflow started with `env` uses the default DB at <AIRFLOW_HOME>/airflow.db."""
    conn = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or env.get("AIRFLOW__CORE__SQL_ALCHEMY_CONN")
    home = env.get("AIRFLOW_HOME", "")
    return not conn or conn == f"sqlite:///{home}/airflow.db"
