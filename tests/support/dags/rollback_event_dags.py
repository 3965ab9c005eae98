"""The DAG file of tests/integration/test_deploy_rollback_event.py (`DAG_FILE`).

Written as `rollback_event_dags.py` into the test's own DAGs folder,
imported by the runner as a module.
"""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import DAG, AssetAlias, task

from airflow_mlops.dags.assets import champion_asset
from airflow_mlops.exceptions import CanaryFailed
from airflow_mlops.operators.deployment import ChampionRollbackEventOperator, _record_rollback

if TYPE_CHECKING:
    from airflow.sdk import Context

START = datetime(2026, 1, 1, tzinfo=UTC)

with DAG("rides__train", schedule=None, start_date=START, catchup=False, params={"roll_back": True}) as train:
    @task(task_id="deploy", retries=0)
    def deploy(**context: Any) -> Any:  # not `dict`: Airflow would infer multiple_outputs from it
        if context["params"]["roll_back"]:
            _record_rollback(cast("Context", context), "rides", "1", "2",
                             "canary breached: error rate 0.2000 > 0.01", 3)
            raise CanaryFailed("rides v2: canary breached; champion alias restored from v2 to v1", restored="1")
        return {"version": "2"}

    restored = ChampionRollbackEventOperator(
        task_id="champion_restored", model_name="rides", deploy_task_id="deploy",
        outlets=[AssetAlias(name="mlops.model.rides.champion.restored", group="mlops")]).as_teardown()
    deploy() >> restored

# A DAG scheduled on the champion (like <model>__batch_predict): the asset is registered in the metadata DB.
with DAG("rides__batch_predict", schedule=champion_asset("rides"), start_date=START, catchup=False) as batch:
    @task
    def score() -> None:
        return None

    score()
