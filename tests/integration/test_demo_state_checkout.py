"""Putting a shared state back at its path leaves this process reading the new files, never the replaced ones.

`support/demo_state.checkout_trained_demo()` deletes the trained demo state and copies the pristine one to
the same path before each module that uses it. MLflow's lru-cached registry store keeps the SQLAlchemy
engine it was built with; when that engine is no longer in `SqlAlchemyStore._engine_map` (the previous
checkout popped it from there) and a second store on the same URI has put a new one in the map, closing
only the map's engines left the first one's pooled connection on the deleted file: in the full run,
tests/integration/test_serving_app.py read "existing versions: [1]" after its subprocess had registered 2 and 3.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from support.dag_runs import program
from support.open_files import dispose_engines_under, open_on_deleted_files

pytestmark = pytest.mark.integration

REGISTER = program("demo_state_checkout_register")


def register(uri: str, source: str) -> None:
    """A version registered by another process, as the serving tests' RUNNER does."""
    subprocess.run([sys.executable, str(REGISTER), uri, source], check=True, capture_output=True, timeout=120)


def versions(uri: str) -> list[int]:
    from mlflow import MlflowClient

    return sorted(int(v.version) for v in MlflowClient(uri, uri).search_model_versions("name = 'm'"))


def test_a_cached_store_reads_the_state_put_back_even_when_its_engine_left_the_map(tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    root, pristine = tmp_path / "state", tmp_path / "state.pristine"
    root.mkdir()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    register(uri, "file:///v1")
    shutil.copytree(root, pristine)

    def checkout() -> None:
        dispose_engines_under(root)
        shutil.rmtree(root)
        shutil.copytree(pristine, root)
        assert open_on_deleted_files(root) == []

    checkout()
    assert versions(uri) == [1]  # the cached registry store of (uri, uri) and its engine are now in use
    with SqlAlchemyStore._engine_map_lock:  # what the previous checkout did: the cached store keeps the engine
        SqlAlchemyStore._engine_map.pop(uri)
    MlflowClient(f"sqlite:///{tmp_path / 'other.db'}", uri).search_model_versions("name = 'm'")  # 2nd engine
    assert SqlAlchemyStore._engine_map[uri] is not MlflowClient(uri, uri)._get_registry_client().store.engine

    checkout()
    register(uri, "file:///v2")
    assert versions(uri) == [1, 2]


def test_a_connection_left_open_on_a_replaced_file_is_named(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir()
    held = sqlite3.connect(root / "held.db")
    try:
        held.execute("create table t (x)")
        shutil.rmtree(root)
        root.mkdir()
        found = open_on_deleted_files(root)
    finally:
        held.close()
    assert len(found) == 1 and f"{root / 'held.db'} (deleted)" in found[0], found
    assert open_on_deleted_files(root) == []
