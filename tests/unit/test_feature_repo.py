"""core.feature_repo: the shared in-process parser of the Feast repo, its hash and Feast's output in the log."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from airflow_mlops import config
from airflow_mlops.core.checks import index_feature_repo
from airflow_mlops.core.feature_repo import (
    definitions_hash,
    feast_output_to_log,
    importable_repo,
    parse_feature_repo,
)
from airflow_mlops.exceptions import FeatureRepoError

pytestmark = pytest.mark.unit

VIEW = "driver_hourly_stats"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the shipped repo: tests may edit it and check it stays clean."""
    target = tmp_path / "feature_repo"
    shutil.copytree(config.feature_repo_dir(), target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _source_path(repo: Path) -> str:
    [view] = [v for v in parse_feature_repo(repo).feature_views if v.name == VIEW]
    return str(view.batch_source.path)


def test_a_second_parse_under_another_mlops_home_sees_the_new_paths(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: Feast imports definitions by cwd-relative module name; a cached module kept MLOPS_HOME=A."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home_a"))
    assert _source_path(repo).startswith(str(tmp_path / "home_a" / "offline" / VIEW))

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home_b"))
    assert _source_path(repo).startswith(str(tmp_path / "home_b" / "offline" / VIEW))
    # `airflow-mlops check` uses the same parser, so it sees the same (fresh) definitions.
    assert index_feature_repo(repo).views == {VIEW: ["driver_id"]}


def test_parsing_leaves_the_process_and_the_repo_as_it_found_them(repo: Path) -> None:
    cwd, path, bytecode = os.getcwd(), list(sys.path), sys.dont_write_bytecode
    contents = parse_feature_repo(repo, project="p1")
    assert [p.name for p in contents.projects] == ["p1"]
    assert (os.getcwd(), sys.path, sys.dont_write_bytecode) == (cwd, path, bytecode)
    assert "definitions" not in sys.modules
    assert not list(repo.rglob("__pycache__"))


def test_a_failing_definition_file_is_a_repo_error_and_state_is_restored(repo: Path) -> None:
    (repo / "broken.py").write_text("raise ValueError('boom')\n")
    cwd, path = os.getcwd(), list(sys.path)
    message = f"cannot load Feast definitions from {repo}: ValueError: boom"
    with pytest.raises(FeatureRepoError, match=re.escape(message)):
        parse_feature_repo(repo)
    assert (os.getcwd(), sys.path) == (cwd, path)
    assert not {"broken", "definitions"} & set(sys.modules)


def test_missing_repo_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(FeatureRepoError, match=r"does not exist; set MLOPS_FEATURE_REPO"):
        parse_feature_repo(tmp_path / "nowhere")


def test_importable_repo_drops_modules_imported_inside(repo: Path) -> None:
    import importlib

    with importable_repo(repo):
        importlib.import_module("definitions")
        assert os.getcwd() == str(repo)
    assert "definitions" not in sys.modules


def test_definitions_hash_covers_files_project_and_online_store(repo: Path) -> None:
    base = definitions_hash(repo, project="mlops", online_store="sqlite:///x.db")
    assert base == definitions_hash(repo, project="mlops", online_store="sqlite:///x.db")
    assert base != definitions_hash(repo, project="other", online_store="sqlite:///x.db")
    assert base != definitions_hash(repo, project="mlops", online_store="redis://h:6379/0")
    (repo / "notes.txt").write_text("not a definition file")
    assert base == definitions_hash(repo, project="mlops", online_store="sqlite:///x.db")
    defs = repo / "definitions.py"
    defs.write_text(defs.read_text() + "\n# changed\n")
    assert base != definitions_hash(repo, project="mlops", online_store="sqlite:///x.db")


def test_feast_prints_become_log_lines(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
    logger = logging.getLogger("test.feast_output")
    with caplog.at_level(logging.INFO, logger="test.feast_output"), feast_output_to_log(logger):
        print("\x1b[1m\x1b[32mdriver_hourly_stats\x1b[0m from 2026-10-01")
        print("2026-10-01T00:00:00.000000Z [info] an already formatted record")
        print("   ")
    assert [r.getMessage() for r in caplog.records] == ["feast: driver_hourly_stats from 2026-10-01"]
    assert capsys.readouterr().out == "2026-10-01T00:00:00.000000Z [info] an already formatted record\n"
