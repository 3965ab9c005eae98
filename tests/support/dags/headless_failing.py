"""The DAG file of tests/integration/test_headless_cli.py (`FAILING_DAG`).

Written as `failing.py` into the DAGs folder of the headless Airflow the test starts.
"""

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task

with DAG("headless_failing", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         default_args={"retries": 3}):
    @task
    def check(**context: Any) -> str:
        if context["dag_run"].conf.get("fail"):
            raise ValueError("asked to fail by --conf")
        return "ok"

    @task
    def after(value: Any) -> Any:
        return value

    after(check())
