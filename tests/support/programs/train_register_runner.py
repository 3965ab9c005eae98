"""The `RUNNER` program of tests/integration/test_train_register.py.

Run in a child process through `support.dag_runs.run_script` with the environment the test builds.

Its parameters come from argv and the environment the test gives it; it prints its result as one `RESULT <json>`
line.
"""

import sys

from airflow.dag_processing.dagbag import DagBag

dag = DagBag(dag_folder=sys.argv[1]).dags["tiny_train"]
run = dag.test()
print("STATE", run.state)
