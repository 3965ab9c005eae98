"""The DAG file of tests/integration/test_kubernetes_training.py (`DAG_FILE`).

Written as `k8s_train.py` into the test's own DAGs folder.
Its parameters come from the environment: TEST_DAG_PARAMS, a JSON object the test sets
({"models_dir": <the specs' folder>, "lineage_file": <the training set's lineage JSON>}).
"""

import json
import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

from airflow_mlops.core.spec import load_specs
from airflow_mlops.operators.kubernetes import kubernetes_train_operator

PARAMS = json.loads(os.environ["TEST_DAG_PARAMS"])
spec = load_specs(PARAMS["models_dir"])[0]

with DAG("k8s_train", schedule=None, tags=["test"], default_args={"retries": 0}):
    @task
    def build_training_set() -> dict:  # type: ignore[type-arg]  # `dict`, as Airflow reads it: multiple_outputs
        result: dict[str, Any] = json.loads(Path(PARAMS["lineage_file"]).read_text())
        return result

    kubernetes_train_operator(task_id="train", spec=spec, training_set=build_training_set())
