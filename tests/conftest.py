"""Shared fixtures. Every test must carry exactly one layer marker; an unmarked test fails collection."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

LAYER_MARKERS = {"unit", "adapter", "integration", "stack", "e2e", "browser", "dags"}
PROJECT_DIR = Path(__file__).resolve().parents[1]

# Tests must never touch the developer's .local state: point everything at a session temp dir
# before airflow or our package is imported by any test module.
_SESSION_HOME = Path(os.environ.setdefault("MLOPS_TEST_ROOT", f"/tmp/mlops-tests-{os.getpid()}"))
os.environ["MLOPS_HOME"] = str(_SESSION_HOME / "home")
os.environ["AIRFLOW_HOME"] = str(_SESSION_HOME / "home" / "airflow")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_DIR / "dags"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
# The test session runs our code the way the CLI does: telemetry off before any library is imported
# (importing the package no longer sets it; tests/integration/test_demo_serving.py proves the CLI does).
from airflow_mlops import privacy  # noqa: E402 - after the state dirs above

privacy.disable_telemetry()


def pytest_configure(config: pytest.Config) -> None:
    from support.unit_guard import UnitGuard

    config.pluginmanager.register(UnitGuard(), "unit-guard")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    errors = []
    for item in items:
        layers = {m.name for m in item.iter_markers()} & LAYER_MARKERS
        if len(layers) != 1:
            found = sorted(layers) or "none"
            errors.append(f"{item.nodeid}: has markers {found}; give it exactly one of {sorted(LAYER_MARKERS)}")
    if errors:
        raise pytest.UsageError("unmarked or multiply-marked tests:\n" + "\n".join(errors))


@pytest.fixture
def mlops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty state dir for one test (MLOPS_HOME)."""
    home = tmp_path / "mlops_home"
    home.mkdir()
    monkeypatch.setenv("MLOPS_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def small_demo():
    """A small, seeded demo dataset (3 days, 20 drivers) shared by tests that only read it."""
    from datetime import UTC, datetime

    from airflow_mlops.core.demo_data import DemoConfig, generate

    cfg = DemoConfig(start=datetime(2026, 10, 1, tzinfo=UTC), days=3, drivers=20, rides_per_day=400, seed=11)
    return cfg, generate(cfg)


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite database to copy: migrating one costs ~4 s, so once per session."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    template = tmp_path_factory.mktemp("mlflow_template")
    SqlAlchemyStore(f"sqlite:///{template / 'mlflow.db'}", str(template / "artifacts")).engine.dispose()
    return template / "mlflow.db"


@pytest.fixture(autouse=True)
def _mlflow_uris_restored() -> Iterator[None]:
    """MLflow's process-global tracking/registry URIs (and the env vars it exports) as they were before the test.

    `MLflowHook.activated()` sets and restores them; two threads inside it at once (the promotion race tests)
    restore each other's values, which would point every later client without an explicit registry URI at a
    finished test's store."""
    globals_of = {"mlflow.tracking._tracking_service.utils": "_tracking_uri",
                  "mlflow.tracking._model_registry.utils": "_registry_uri"}
    saved = {name: getattr(sys.modules[name], attr, None) if name in sys.modules else None
             for name, attr in globals_of.items()}
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    for name, attr in globals_of.items():
        if name in sys.modules:
            setattr(sys.modules[name], attr, saved[name])
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
