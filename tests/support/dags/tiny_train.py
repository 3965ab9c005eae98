"""The DAG file of tests/integration/test_train_register.py (`DAG_FILE`).

Written as `tiny_train.py` into the test's own DAGs folder.
Its parameters come from the environment: TEST_DAG_PARAMS, a JSON object the test sets
({"lineage_file": <the training set's lineage JSON>}).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

import airflow_mlops  # noqa: F401 - kept from the DAG file this was: the package itself is imported too
from airflow_mlops.operators.registry import MLflowRegisterModelOperator
from airflow_mlops.operators.training import SklearnTrainModelOperator

PARAMS = json.loads(os.environ["TEST_DAG_PARAMS"])

with DAG("tiny_train", schedule=None, tags=["test"]):
    @task
    def build_training_set() -> dict:  # type: ignore[type-arg]  # `dict`, as Airflow reads it: multiple_outputs
        result: dict[str, Any] = json.loads(Path(PARAMS["lineage_file"]).read_text())
        return result

    train = SklearnTrainModelOperator(
        task_id="train", model_name="tiny", training_set=build_training_set(),
        estimator="sklearn.linear_model.LogisticRegression", params={"max_iter": 300},
        label="completed", exclude_columns=["driver_id"],
    )
    MLflowRegisterModelOperator(
        task_id="register", model_name="tiny", run_id=train.output["run_id"],  # type: ignore[index]
        model_uri=train.output["model_uri"],  # type: ignore[index]  # XComArg: an XCom key, at runtime
    )
