"""The DAG file of tests/integration/test_fail_fast.py (`DAG_FILE`).

Written as `fail_fast.py` into the test's own DAGs folder.
"""

from datetime import datetime

from airflow.sdk import DAG

from airflow_mlops.dags.factory import _default_args
from airflow_mlops.operators.features import FeastMaterializeOperator
from airflow_mlops.operators.retraining import MLflowRetrainGateOperator

with DAG("fail_fast", schedule=None, start_date=datetime(2026, 1, 1), default_args=_default_args("mlops")):
    for conn_id in ("mlflow_default", "mlflow_pg", "mlflow_typo"):
        MLflowRetrainGateOperator(task_id=f"retrain_gate_{conn_id}", model_name="m", cooldown="6h", gated_assets=[],
                                  mlflow_conn_id=conn_id)
    FeastMaterializeOperator(task_id="materialize")
