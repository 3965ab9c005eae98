"""The DAG file of tests/e2e/test_headless_up.py (`PROBE_DAG`); its file name is its DAG id.

Written as `probe.py` into the DAGs folder of the headless Airflow the test starts.
"""

from datetime import datetime

from airflow.sdk import DAG, task

with DAG("headless_up_probe", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    @task
    def hello() -> list[str]:
        import sys

        # which heavy libraries this task process has without importing them: the scheduler's preload
        return sorted(name for name in ("pandas", "sklearn", "mlflow", "feast") if name in sys.modules)

    hello()
