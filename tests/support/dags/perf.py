"""The DAG file of tests/integration/test_performance_operator.py (`DAG_FILE`).

Written as `perf.py` into the test's own DAGs folder.
Its parameters come from the environment: TEST_DAG_PARAMS, a JSON object the test sets
({"labels": {"healthy": <folder>, "degraded": <folder>}, "end": <window end, ISO>, "model": <model name>}).
"""

import json
import os

from airflow.sdk import DAG

from airflow_mlops.dags.assets import performance_alias
from airflow_mlops.operators.monitoring import DelayedLabelPerformanceOperator

PARAMS = json.loads(os.environ["TEST_DAG_PARAMS"])
LABELS = PARAMS["labels"]
for name, end in (("healthy", PARAMS["end"]), ("degraded", PARAMS["end"]), ("empty", "2026-01-01T00:00:00+00:00")):
    with DAG(f"perf_{name}", schedule=None, tags=["test"]):
        DelayedLabelPerformanceOperator(
            task_id="performance", model_name=PARAMS["model"], label="completed", entity_keys=["driver_id"],
            primary_metric="roc_auc", window_end=end, outlets=[performance_alias(PARAMS["model"])],
            monitoring={"window": "24h", "performance": {
                "tolerance": 0.05, "min_labels": 100, "labels": {"path": LABELS.get(name, LABELS["healthy"])}}},
        )
