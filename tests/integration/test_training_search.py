"""training.search end to end against a real SQLite MLflow store: child runs, the best fitted, the DAG wiring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_mlops.core import lineage
from airflow_mlops.core.spec import ModelSpec
from airflow_mlops.hooks.mlflow import MLflowHook
from integration import test_train_register as trained_here
from integration.test_train_register import MODEL, context, register, train_operator

# test_train_register's fixture (a fresh MLOPS_HOME with a copy of the session's migrated MLflow DB, tests/conftest.py,
# and a demo training set)
training_set = trained_here.training_set

pytestmark = pytest.mark.integration

SEARCH = {"method": "grid", "space": {"max_leaf_nodes": [4, 8], "learning_rate": [0.1]}, "cv": "time",
          "folds": 2, "n_iter": 10, "metric": "roc_auc", "max_seconds": None}


def test_a_search_logs_every_candidate_as_a_child_run_and_fits_the_best(training_set: dict[str, Any]) -> None:
    trained = train_operator(training_set, params={"max_iter": 15}, search=SEARCH).execute(context())
    client = MLflowHook().get_conn()
    parent = client.get_run(trained["run_id"])
    children = client.search_runs([trained["experiment_id"]],
                                  filter_string=f"tags.mlflow.parentRunId = '{trained['run_id']}'")
    assert len(children) == 2 and all(run.info.status == "FINISHED" for run in children)
    by_leaves = {run.data.params["params.max_leaf_nodes"]: run for run in children}
    assert set(by_leaves) == {"4", "8"}
    assert {run.data.tags[lineage.TAG_MODEL_NAME] for run in children} == {MODEL}
    assert not any(lineage.TAG_DAG_ID in run.data.tags for run in children)  # never taken for the task's run
    best = min(children, key=lambda run: run.data.metrics["cv_rank"])
    assert best.data.metrics["cv_rank"] == 1
    assert {"cv_roc_auc_mean", "cv_roc_auc_std", "cv_roc_auc_fold0", "cv_roc_auc_fold1"} <= set(best.data.metrics)
    params = parent.data.params
    assert params["params.max_leaf_nodes"] == best.data.params["params.max_leaf_nodes"]
    assert params["params.max_iter"] == "15" and params["params.learning_rate"] == "0.1"
    assert (params["search.method"], params["search.evaluated"], params["search.planned"]) == ("grid", "2", "2")
    summary = json.loads(Path(client.download_artifacts(trained["run_id"], "training/summary.json")).read_text())
    assert summary["search"]["best_params"]["max_leaf_nodes"] == int(params["params.max_leaf_nodes"])
    # the search is part of the fingerprint: the same training without it is a new version, not a repeat
    registered = register(trained)
    plain = register(train_operator(training_set, params={"max_iter": 15}).execute(context(run_id="manual__plain")))
    assert (registered["version"], plain["version"], plain["repeat"]) == ("1", "2", False)


def test_the_training_dag_passes_the_resolved_search_to_train(tmp_path: Path) -> None:
    from airflow_mlops.dags.factory import training_dag

    spec_file = Path(__file__).resolve().parents[2] / "include" / "models" / "ride_completion.yaml"
    data = yaml.safe_load(spec_file.read_text())
    data["training"]["search"] = {"method": "random", "n_iter": 3,
                                  "space": {"learning_rate": {"distribution": "loguniform", "low": 0.01, "high": 0.3}}}
    data["training"]["params"].pop("learning_rate", None)
    spec = ModelSpec.model_validate(data)
    train = training_dag(spec).get_task("train")
    assert train.search == spec.search_config()
    assert train.search["cv"] == spec.training.split.method.replace("random", "kfold")
    assert train.search["metric"] == spec.evaluation.primary_metric
