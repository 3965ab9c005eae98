"""The history of an online experiment: one MLflow run per experiment, one metric step per look.

The record (a registered-model tag every serving worker reads) keeps only the running state; every look goes
to the experiment's run in the MLflow experiment `<model>.online_experiments`, so the MLflow UI charts it too
and the plugin's readout page draws the difference, its interval and the bandit shares from it. Metric keys:
`difference`, `ci_low`, `ci_high` (A/B, finite values only: an interval still open on one side has no bound
to draw), `alpha_spent`, and per arm `predictions.v<N>` (its pulls: predictions it answered so far),
`labels.v<N>`, `value.v<N>` (the metric on its labelled predictions) and `share.v<N>` (its traffic share after
the look). Step = the look's number (0 = the start). No Airflow.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.lineage import TAG_PREFIX

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from airflow_mlops.core.experiment_readout import Look
    from airflow_mlops.core.experiments import ExperimentRecord

TAG_EXPERIMENT_ID = f"{TAG_PREFIX}experiment_id"
TAG_MODEL = f"{TAG_PREFIX}model"
_PER_ARM = ("labels", "value", "share", "predictions")


def history_experiment(model: str) -> str:
    """The MLflow experiment holding a model's online-experiment runs (apart from its training runs)."""
    return f"{model}.online_experiments"


def start_run(client: MlflowClient, mlflow_experiment_id: str, model: str, record_id: str,
              settings: Mapping[str, Any]) -> str:
    """The run of experiment `record_id`, with the spec's settings as params; returns its id."""
    run = client.create_run(mlflow_experiment_id, run_name=f"{settings.get('type', 'experiment')} {record_id}",
                            tags={TAG_EXPERIMENT_ID: record_id, TAG_MODEL: model})
    for key, value in settings.items():
        client.log_param(run.info.run_id, key, json.dumps(value) if not isinstance(value, str) else value)
    return str(run.info.run_id)


def log_start(client: MlflowClient, record: ExperimentRecord) -> None:
    """Step 0: the arms and their starting shares."""
    if record.run_id:
        _log(client, record.run_id, {f"share.v{v}": s for v, s in record.arms.items()}, step=0)


def log_look(client: MlflowClient, record: ExperimentRecord, look: Look) -> None:
    """Append one look (step = record.looks, the look's number) to the experiment's run."""
    if not record.run_id:
        return
    values: dict[str, float | None] = {}
    if look.interval is not None:
        values.update(difference=look.interval.estimate, ci_low=look.interval.low, ci_high=look.interval.high,
                      alpha_spent=look.interval.alpha_spent)
    for version in record.arms:
        values[f"labels.v{version}"] = look.labels.get(version)
        values[f"value.v{version}"] = look.values.get(version)
        values[f"share.v{version}"] = record.arms[version]
        values[f"predictions.v{version}"] = (look.served or {}).get(version)
    _log(client, record.run_id, values, step=record.looks)


def end_run(client: MlflowClient, run_id: str | None) -> None:
    if run_id:
        client.set_terminated(run_id, "FINISHED")


def read_history(client: MlflowClient, run_id: str) -> list[dict[str, Any]]:
    """Every look of the run as {step, difference, ci_low, ci_high, alpha_spent, arms: {version: {labels, value,
    share}}}, oldest first."""
    keys = list(client.get_run(run_id).data.metrics)
    steps: dict[int, dict[str, Any]] = {}
    for key in keys:
        for point in client.get_metric_history(run_id, key):
            look = steps.setdefault(int(point.step), {"step": int(point.step), "arms": {}})
            kind, _, version = key.partition(".v")
            if kind in _PER_ARM and version:
                look["arms"].setdefault(version, {})[kind] = point.value
            else:
                look[key] = point.value
    return [steps[step] for step in sorted(steps)]


def _log(client: MlflowClient, run_id: str, values: Mapping[str, float | None], step: int) -> None:
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    metrics = [Metric(key, float(value), stamp, step) for key, value in values.items()
               if value is not None and math.isfinite(value)]
    if metrics:
        client.log_batch(run_id, metrics=metrics)
