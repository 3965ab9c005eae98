"""The DAG file of tests/adapter/test_mlflow_alias_sensor.py (`DAG_FILE`).

Written as `alias_wait.py` into the test's own DAGs folder.
"""

from airflow.sdk import DAG

from airflow_mlops.sensors.mlflow import MLflowModelAliasSensor

with DAG("alias_wait", schedule=None, tags=["test"], default_args={"retries": 0}):
    poke = MLflowModelAliasSensor(task_id="poke_until_moved", model_name="alias_model", from_version="1",
                                  deferrable=False, poke_interval=0.3, timeout=60)
    deferred = MLflowModelAliasSensor(task_id="defer_until_v3", model_name="alias_model", version="3",
                                      deferrable=True, poke_interval=0.3, timeout=60)
    timeout = MLflowModelAliasSensor(task_id="defer_until_v9", model_name="alias_model", version="9",
                                     deferrable=True, poke_interval=0.3, timeout=1, trigger_rule="all_done")
    poke >> deferred >> timeout
