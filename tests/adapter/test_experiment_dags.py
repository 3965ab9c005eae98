"""DAGs of a spec with promotion.experiment: the training DAG ends by starting the experiment, the readout DAG."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.adapter


def _spec(**experiment: Any) -> Any:
    import yaml

    from airflow_mlops import config
    from airflow_mlops.core.spec import parse_spec

    path = config.project_dir() / "include" / "models" / "ride_completion.yaml"
    data = yaml.safe_load(path.read_text())
    data["promotion"]["experiment"] = experiment
    data["serving"] = {"target": "local", "url": "http://serving:8000"}
    return parse_spec(yaml.safe_dump(data), str(path))


def test_the_training_dag_starts_the_experiment_instead_of_promote_and_deploy() -> None:
    from airflow_mlops.dags.factory import build_dags

    spec = _spec(type="ab", traffic=0.2, metric="accuracy", update_schedule="*/30 * * * *")
    dags = build_dags([spec])
    train = dags["ride_completion__train"]
    assert "promote" not in train.task_ids and "deploy" not in train.task_ids
    start = train.get_task("start_experiment")
    assert train.get_task("model_card").downstream_task_ids == {"start_experiment"} and not start.downstream_task_ids
    assert (start.experiment["traffic"], start.url, start.task, start.primary_metric) == (
        0.2, "http://serving:8000", "binary", "roc_auc")
    assert [o.name for o in start.outlets] == ["mlops.model.ride_completion.champion.experiment"]
    readout = dags["ride_completion__experiment"]
    assert readout.timetable.expression == "*/30 * * * *" and readout.max_active_runs == 1
    assert {"mlops", "experiment", "ride_completion"} <= set(readout.tags) and "promotion.experiment" in readout.doc_md
    [task] = readout.tasks
    assert task.retries >= 2 and (task.label_column, task.entity_keys) == ("completed", ["driver_id"])
    assert [o.name for o in task.outlets] == ["mlops.experiment.ride_completion.decided",
                                              "mlops.model.ride_completion.champion.experiment"]
    assert "start_experiment" in train.doc_md


def test_a_manual_approval_comes_before_the_start_and_no_spec_experiment_no_readout_dag() -> None:

    from airflow_mlops import config
    from airflow_mlops.core.spec import parse_spec
    from airflow_mlops.dags.factory import build_dags

    spec = _spec(type="bandit", arms=3)
    spec = spec.model_copy(update={"promotion": spec.promotion.model_copy(update={"approval": "manual"})})
    train = build_dags([spec])["ride_completion__train"]
    assert train.get_task("approve").downstream_task_ids == {"start_experiment"}
    path = config.project_dir() / "include" / "models" / "ride_completion.yaml"
    plain = parse_spec(path.read_text(), str(path))
    assert "ride_completion__experiment" not in build_dags([plain])
