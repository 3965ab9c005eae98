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
    assert "training.estimator" in text and "not a probabilistic classifier" in text
    assert "validation.suite: 'no_such_suite' has no file" in text


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
