"""The DAG file of tests/integration/test_drift_operator.py (`DAG_FILE`).

Written as `drift_dags.py` into the test's own DAGs folder,
imported by the runner for its ENDS, MODEL and MONITORING.
"""

from datetime import UTC, datetime

from airflow.sdk import DAG

from airflow_mlops.core.spec import Monitoring
from airflow_mlops.dags.assets import drift_alias
from airflow_mlops.operators.evidently import EvidentlyDriftCheckOperator

MODEL = "drift_demo"
ENDS = {"drifted": datetime(2026, 11, 20, 6, tzinfo=UTC), "quiet": datetime(2026, 11, 20, 12, tzinfo=UTC),
        "empty": datetime(2026, 11, 20, 18, tzinfo=UTC), "few": datetime(2026, 11, 21, 0, tzinfo=UTC)}
MONITORING = {
    "window": "6h", "min_rows": 100,
    "drift": {"method": "psi", "threshold": 0.2, "drift_share": 0.5, "sample_rows": 1000,
              "columns": {"trip_km": {"method": "ks", "threshold": 0.01}}},
}

for name, end in ENDS.items():
    with DAG(f"drift_{name}", schedule=None, start_date=datetime(2026, 11, 1, tzinfo=UTC), tags=["test"]):
        EvidentlyDriftCheckOperator(task_id="drift", model_name=MODEL,
                                    monitoring=Monitoring.model_validate(MONITORING).model_dump(mode="json"),
                                    window_end=end.isoformat(), outlets=[drift_alias(MODEL)])
