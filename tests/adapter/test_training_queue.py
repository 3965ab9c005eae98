"""`training.queue` routes the heavy training tasks (build_training_set, train) to their own Celery queue."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from airflow_mlops.core.spec import parse_spec

pytestmark = pytest.mark.adapter

PROJECT = Path(__file__).resolve().parents[2]
HEAVY = {"build_training_set", "train"}


def training_dag(**training: object) -> object:
    from airflow_mlops.dags.factory import training_dag as build

    data = yaml.safe_load((PROJECT / "include" / "models" / "ride_completion.yaml").read_text())
    data["training"].update(training)
    return build(parse_spec(yaml.safe_dump(data), "ride_completion.yaml"))


def queues(dag: object) -> dict[str, str]:
    return {task.task_id: task.queue for task in dag.tasks}  # type: ignore[attr-defined]


def test_heavy_tasks_go_to_the_spec_queue_and_light_tasks_stay_on_default() -> None:
    placed = queues(training_dag(queue="training"))
    assert {task for task, queue in placed.items() if queue == "training"} == HEAVY
    assert {queue for task, queue in placed.items() if task not in HEAVY} == {"default"}


def test_without_a_queue_every_task_is_on_the_default_queue() -> None:
    assert set(queues(training_dag()).values()) == {"default"}


def test_a_kubernetes_fit_is_routed_too() -> None:
    placed = queues(training_dag(queue="training", compute={"backend": "kubernetes"}))
    assert {task for task, queue in placed.items() if queue == "training"} == HEAVY
