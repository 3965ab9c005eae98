"""`airflow-mlops check`: specs and the real Feast repo validated together, all problems at once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_mlops.core.checks import check_project
from support.spec_edits import read_with_fields

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
UNTYPED_GLOB_REPO = (PROJECT / "tests" / "support" / "feature_repos" / "untyped_glob_defs.py").read_text()


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(PROJECT / "include" / "models" / "ride_completion.yaml", folder)
    return folder


def _edit(folder: Path, **fields: object) -> None:
    path = folder / "ride_completion.yaml"
    path.write_text(yaml.safe_dump(read_with_fields(path, **fields)))


def test_shipped_project_is_consistent(models: Path) -> None:
    assert check_project(models) == []


def test_every_cross_check_problem_reported_together(models: Path) -> None:
    _edit(
        models,
        features__feature_service="ride_completion_v9",
        training__estimator="sklearn.ensemble.HistGradientBoostingRegressor",
        validation={"suite": "no_such_suite"},
    )
    problems = check_project(models)
    text = "\n".join(problems)
    assert len(problems) == 3, text
    assert "features.feature_service: 'ride_completion_v9' is not defined" in text and "ride_completion_v1" in text
    assert "training.estimator" in text and "is a regressor, but the spec's task is binary" in text
    assert "validation.suite: 'no_such_suite' has no file" in text


def test_estimator_kind_and_threshold_direction_are_checked_against_the_task(models: Path) -> None:
    shutil.copy(PROJECT / "include" / "models" / "ride_duration.yaml", models)
    path = models / "ride_duration.yaml"
    path.write_text(yaml.safe_dump(read_with_fields(
        path, training__estimator="sklearn.ensemble.HistGradientBoostingClassifier",
        evaluation__thresholds={"rmse": {"min": 1.0}, "r2": {"min": 0.5}})))
    problems = [p for p in check_project(models) if "ride_duration.yaml" in p]
    text = "\n".join(problems)
    assert len(problems) == 2, text
    assert "training.estimator: sklearn.ensemble.HistGradientBoostingClassifier is a classifier, but the spec's " \
           "task is regression" in text and "label contract ride_duration_training.json" in text
    assert "evaluation.thresholds.rmse: only `min` is set, but rmse is lower-is-better" in text and "set `max`" in text


def test_views_keys_and_params_checked(models: Path) -> None:
    _edit(models, features__feature_views=["other_view"], features__entity_keys=["rider_id"],
          training__params={"max_iterations": 3})
    text = "\n".join(check_project(models))
    assert "features.feature_views: got ['other_view']" in text and "['driver_hourly_stats']" in text
    assert "features.entity_keys" in text and "add ['driver_id']" in text
    assert "training.params: rejected by HistGradientBoostingClassifier" in text and "max_iterations" in text


def test_unimportable_estimator(models: Path) -> None:
    _edit(models, training__estimator="sklearn.ensemble.NoSuchForest")
    [problem] = check_project(models)
    assert "training.estimator: 'sklearn.ensemble.NoSuchForest' cannot be imported" in problem


def test_broken_feature_repo_is_reported_not_raised(models: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text((PROJECT / "include" / "feature_repo" / "feature_store.yaml").read_text())
    (repo / "broken.py").write_text("raise RuntimeError('oops in definitions')\n")
    [problem] = check_project(models, repo)
    assert f"cannot load Feast definitions from {repo}: RuntimeError: oops in definitions" in problem


def test_untyped_join_key_over_a_glob_is_reported(models: Path, tmp_path: Path) -> None:
    """The shared parser (core.feature_repo) applies the hook's join-key check in `check` too."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text((PROJECT / "include" / "feature_repo" / "feature_store.yaml").read_text())
    (repo / "defs.py").write_text(UNTYPED_GLOB_REPO)
    [problem] = check_project(models, repo)
    assert "join key 'rider_id' is not declared" in problem and "value_type=ValueType.INT64" in problem


def test_cli_exit_codes(models: Path, tmp_path: Path) -> None:
    env = {"MLOPS_MODELS_DIR": str(models), "MLOPS_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-m", "airflow_mlops.cli", "check", "--fast"], check=False, env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    _edit(models, training__bogus=1)
    bad = subprocess.run([sys.executable, "-m", "airflow_mlops.cli", "check", "--fast"], check=False, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "training.bogus: unknown field" in bad.stdout


def test_fairness_groups_and_slices_must_be_training_set_columns_and_attributes_must_not_shadow_features(
        models: Path) -> None:
    """Only with the Feast repo does a fairness group or slice column tell a feature from a typo; a label-table
    column that is no model input must be an attribute, and an attribute that a feature shadows is refused."""
    _edit(models, features__entity_df__attributes=["region", "conv_rate"],
          evaluation__fairness={"groups": ["region", "gender"]},
          evaluation__slices=[{"column": "rating"}, {"column": "pickup_hour"}, {"column": "hour_of_pickup"}])
    problems = check_project(models)
    text = "\n".join(problems)
    assert len(problems) == 4, text
    spec = str(models / "ride_completion.yaml")
    assert (f"{spec}: features.entity_df.attributes: ['conv_rate'] are also features of service 'ride_completion_v1'"
            in text)
    assert f"{spec}: evaluation.fairness.groups: ['gender'] are not columns of the training set" in text
    assert f"{spec}: evaluation.slices: ['hour_of_pickup'] are not columns of the training set" in text
    assert "goes in features.entity_df.attributes" in text and "'acc_rate'" in text
    # the data side: the attributes are read from the label dataset, whose suite fixes its column set
    assert f"{spec}: features.entity_df.attributes: ['region', 'conv_rate'] are not in dataset 'rides'" in text
