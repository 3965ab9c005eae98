"""DelayedLabelPerformanceOperator records bad label input in the monitoring history, then fails naming the file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops.exceptions import MonitoringInputError
from support.performance_data import END, labels, log, truth

pytestmark = pytest.mark.adapter


def test_the_operator_records_bad_label_input_then_fails_naming_the_file(mlops_home: Path) -> None:
    from airflow_mlops import config
    from airflow_mlops.core import monitoring_history
    from airflow_mlops.operators.monitoring import DelayedLabelPerformanceOperator

    _, p = truth(20)
    log(config.paths().predictions_dir, p)
    bad = labels(config.paths().home, "m/late.csv", pd.DataFrame({"request_id": ["r1"], "done": [1]}))

    def operator(min_rows: int) -> DelayedLabelPerformanceOperator:
        return DelayedLabelPerformanceOperator(
            task_id="performance", model_name="m", monitoring={"window": "24h", "min_rows": min_rows},
            label="completed", entity_keys=["driver_id"], window_end=END.isoformat())

    small = operator(100).execute({"run_id": "manual__small"})  # type: ignore[arg-type]
    assert small["status"] == "skipped" and "only 20 prediction(s)" in small["reason"]
    assert "monitoring.min_rows is 100: nothing to check, no event" in small["reason"]
    with pytest.raises(MonitoringInputError, match=rf"{bad}: no column\(s\) \['completed'\]"):
        operator(1).execute({"run_id": "manual__bad"})  # type: ignore[arg-type]
    skipped, record = monitoring_history.history("m", "performance")
    assert skipped["status"] == "skipped" and skipped["rows"] == 20
    assert record["status"] == "error" and "late.csv" in record["details"]["error"]
    assert record["run_id"] == "manual__bad" and record["window_end"] == END.isoformat()
