"""The DAG file of tests/integration/test_feature_dag.py (`DAG_FILE`).

Written as `tiny_features.py` into the test's own DAGs folder.
Its parameters come from the environment: TEST_DAG_PARAMS, a JSON object the test sets
({"conn_id": <the two-view Feast connection>, "views": [<feature view>, ...]}).
"""

import json
import os

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, chain

from airflow_mlops.dags.assets import features_alias, features_asset
from airflow_mlops.operators.features import FeastApplyOperator, FeastMaterializeOperator, LandRawBatchesOperator

PARAMS = json.loads(os.environ["TEST_DAG_PARAMS"])

with DAG("tiny_features", schedule=None, tags=["test"]):
    chain(
        LandRawBatchesOperator(task_id="land"),
        FeastApplyOperator(task_id="apply", feast_conn_id=PARAMS["conn_id"]),
        FeastMaterializeOperator(task_id="materialize", feast_conn_id=PARAMS["conn_id"],
                                 outlets=[features_alias(v) for v in PARAMS["views"]]),
    )

for view in PARAMS["views"]:
    with DAG(f"consumer_of_{view}", schedule=features_asset(view), tags=["test"]):
        EmptyOperator(task_id="noop")
