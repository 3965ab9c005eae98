"""The DAG file of tests/integration/test_freshness_dag.py (`DAG_FILE`).

Written as `freshness_gate.py` into the test's own DAGs folder.
"""

from airflow.sdk import DAG

from airflow_mlops.sensors.feast import FeastCheckFreshnessOperator, FeastFeatureFreshnessSensor

with DAG("freshness_gate", schedule=None, tags=["test"]):
    stale = FeastFeatureFreshnessSensor(task_id="wait_for_10m_fresh", max_staleness="10m", deferrable=True,
                                        timeout=2, poke_interval=0.5)
    check = FeastCheckFreshnessOperator(task_id="check_tag_rule", trigger_rule="all_done")
    stale >> check
