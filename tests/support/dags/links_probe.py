"""The DAG file of tests/integration/test_plugin_models_api.py (`LINKS_DAG`).

Written as `links_probe.py` into the test's own DAGs folder; its operators' extra links are computed by
Airflow's real task runner.
"""

from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops.operators.evaluation import EvaluateModelOperator
from airflow_mlops.operators.links import DriftHistoryLink, ModelVersionLink
from airflow_mlops.operators.training import SklearnTrainModelOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class Train(SklearnTrainModelOperator):  # the real class and its links; only the work is skipped
    def execute(self, context: "Context") -> Any:
        return {"run_id": "abc123", "model_uri": "models:/m-1", "metrics": {}, "experiment_id": "1"}


class Evaluate(EvaluateModelOperator):  # a missed threshold: the task fails before returning anything
    def execute(self, context: "Context") -> Any:
        raise AirflowFailException("roc_auc 0.51 < 0.7")


class Register(BaseOperator):
    operator_extra_links = (ModelVersionLink(),)

    def execute(self, context: "Context") -> Any:
        return {"name": "ride_completion", "version": "3"}


class Drift(BaseOperator):
    operator_extra_links = (DriftHistoryLink(),)
    model_name = "ride_completion"

    def execute(self, context: "Context") -> Any:
        return {"status": "ok", "share": 0.1}


with DAG("links_probe", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    Train(task_id="train", model_name="ride_completion", training_set={}, estimator="x", label="y")
    Evaluate(task_id="evaluate", model_name="ride_completion", training_set={}, challenger={"run_id": "abc123",
             "model_uri": "models:/m-1"}, evaluation={}, label="y")
    Register(task_id="register")
    Drift(task_id="drift")
