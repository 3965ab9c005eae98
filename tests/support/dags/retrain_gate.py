"""The DAG file of tests/integration/test_retrain_gate.py (`GATE_DAG`).

Written as `gate_test.py` into the test's own DAGs folder.
"""

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from airflow_mlops.dags.assets import drift_asset, features_asset, performance_asset
from airflow_mlops.operators.registry import MLflowRegisterModelOperator
from airflow_mlops.operators.retraining import MLflowRetrainGateOperator

with DAG("gate_test", schedule=features_asset("gate_view") | drift_asset("gate_model")
         | performance_asset("gate_model"), tags=["test"], default_args={"retries": 0}):
    gate = MLflowRetrainGateOperator(task_id="retrain_gate", model_name="gate_model", cooldown="6h",
                                     gated_assets=["mlops.drift.gate_model", "mlops.performance.gate_model"])
    register = MLflowRegisterModelOperator(task_id="register", model_name="gate_model",
                                           run_id="{{ dag_run.conf['run_id'] }}",
                                           model_uri="{{ dag_run.conf['model_uri'] }}", retrain=gate.output)
    gate >> register >> EmptyOperator(task_id="after")
