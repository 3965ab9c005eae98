"""`[core] hostname_callable` of the test Celery workers: the worker's own name, not the machine's.

Both workers of tests/stack/test_celery_stack.py run on one machine, so the default (the FQDN) is
the same for both; with this the task instance's `hostname` (REST API) says which worker ran it.
Only on sys.path of the worker processes (tests/support/airflow_stack.py sets PYTHONPATH).
"""

import os


def hostname() -> str:
    return os.environ["MLOPS_TEST_WORKER_NAME"]
