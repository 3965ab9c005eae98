"""The `RUNNER` program of tests/integration/test_add_your_own_model.py, run as the README's user would.

Run as `python add_your_own_model_runner.py <dag id>...` in the scratch project with the user's environment:
like `airflow-mlops demo`, it applies the project's Airflow environment (Airflow reads it at import), builds
the DAGs from the specs in MLOPS_MODELS_DIR, runs dag.test() of each DAG named and prints the DAG ids and run
states as one `RESULT <json>` line.
"""

import json
import sys

from airflow_mlops.runtime_env import apply_airflow_env

apply_airflow_env()

from airflow_mlops.dags import build_dags  # noqa: E402 - after apply_airflow_env(): Airflow reads it at import

dags = build_dags()
states: dict[str, str] = {}
result = {"dag_ids": sorted(dags), "states": states}
for dag_id in sys.argv[1:]:
    run = dags[dag_id].test()
    states[dag_id] = str(getattr(run, "state", None))
print("RESULT " + json.dumps(result))
