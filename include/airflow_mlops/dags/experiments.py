"""`<model>__experiment`: the scheduled readout of a model's online experiment (only when the spec has one).

The training DAG's `start_experiment` task starts the experiment; this DAG looks at it every
`promotion.experiment.update_schedule` (ExperimentReadoutOperator) until it promotes or rolls back.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG

from airflow_mlops.core.spec import ModelSpec
from airflow_mlops.dags.assets import champion_experiment_alias, experiment_alias
from airflow_mlops.dags.docs import experiment_dag_doc
from airflow_mlops.operators.experiments import ExperimentReadoutOperator


def experiment_dag_id(model: str) -> str:
    return f"{model}__experiment"


def experiment_dag(spec: ModelSpec, default_args: dict[str, Any], start_date: Any) -> DAG:
    experiment = spec.promotion.experiment
    assert experiment is not None, "experiment_dag is built for specs with promotion.experiment only"
    with DAG(
        dag_id=experiment_dag_id(spec.name),
        schedule=experiment.update_schedule,
        start_date=start_date,
        catchup=False,
        max_active_runs=1,  # two looks at once would both spend alpha and race for the lease
        default_args=default_args,
        tags=["mlops", "experiment", spec.name, *spec.tags],
        doc_md=experiment_dag_doc(spec),
    ) as dag:
        ExperimentReadoutOperator(
            task_id="readout", model_name=spec.name, label=spec.features.label,
            entity_keys=list(spec.features.entity_keys),
            labels=spec.monitoring.performance.labels.model_dump(mode="json"),
            outlets=[experiment_alias(spec.name), champion_experiment_alias(spec.name)],
        )
    return dag
