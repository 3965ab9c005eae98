"""MLflowHook against a real SQLite MLflow store in a fresh MLOPS_HOME; unreachable servers fail fast."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from airflow_mlops.exceptions import StoreUnavailable
from airflow_mlops.hooks.mlflow import MLflowHook, scheme_of, with_installed_driver
from airflow_mlops.profile import mask_url
from support.connects import connect_attempts

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_live_in_the_state_dir(
    mlops_home: Path, no_mlflow_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a stray ./mlruns would show up here
    hook = MLflowHook()
    db = mlops_home / "mlflow" / "mlflow.db"
    assert hook.tracking_uri == f"sqlite:///{db}"
    assert hook.registry_uri == hook.tracking_uri
    assert hook.settings.source == "defaults"

    experiment_id = hook.experiment_id("ride_completion")
    assert hook.experiment_id("ride_completion") == experiment_id  # get, not a second create
    client = hook.get_conn()
    artifacts = (mlops_home / "mlflow" / "artifacts").resolve()
    assert client.get_experiment(experiment_id).artifact_location == f"{artifacts.as_uri()}/ride_completion"
    # The Default experiment MLflow creates on a fresh database must not point at ./mlruns.
    assert client.get_experiment("0").artifact_location.startswith(artifacts.as_uri())
    assert db.is_file()
    assert not (tmp_path / "mlruns").exists()


def test_env_tracking_uri_is_used_without_a_connection(
    mlops_home: Path, no_mlflow_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{mlops_home / 'other.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert MLflowHook().tracking_uri == uri


def test_connection_then_explicit_arguments_win(
    mlops_home: Path, no_mlflow_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_db, reg_db = mlops_home / "conn.db", mlops_home / "registry.db"
    conn = {"conn_type": "mlflow", "host": f"sqlite:///{conn_db}", "extra": {"registry_uri": f"sqlite:///{reg_db}"}}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))
    hook = MLflowHook()
    assert hook.tracking_uri == f"sqlite:///{conn_db}"
    assert hook.registry_uri == f"sqlite:///{reg_db}"
    assert hook.settings.source == "connection mlflow_default"

    explicit = MLflowHook(tracking_uri=f"sqlite:///{mlops_home / 'x.db'}")
    assert explicit.tracking_uri.endswith("x.db") and explicit.registry_uri.endswith("x.db")
    mixed = MLflowHook(registry_uri="http://registry:5000")
    assert mixed.tracking_uri == f"sqlite:///{conn_db}" and mixed.registry_uri == "http://registry:5000"


def test_connection_with_bare_host_and_credentials(no_mlflow_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "mlflow", "host": "mlflow.internal", "port": 5000, "login": "ops", "password": "s3cret"}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_PROD", json.dumps(conn))
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    hook = MLflowHook("mlflow_prod")
    assert hook.tracking_uri == "http://mlflow.internal:5000"
    assert hook.settings.artifact_root is None  # the server owns its artifact root
    hook._apply_credentials()
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "ops"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"


def test_connection_with_empty_host_keeps_env_and_defaults(
    mlops_home: Path, no_mlflow_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """airflow_settings.yaml ships mlflow_default with an empty host so the environment still decides."""
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow"}))
    assert MLflowHook().tracking_uri == f"sqlite:///{mlops_home / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    hook = MLflowHook()
    assert hook.tracking_uri == "http://mlflow:5000" and hook.settings.source == "defaults"


def test_missing_connection_falls_back_to_defaults(mlops_home: Path, no_mlflow_env: None) -> None:
    hook = MLflowHook("no_such_connection")
    assert hook.tracking_uri == f"sqlite:///{mlops_home / 'mlflow' / 'mlflow.db'}"


def test_activated_points_fluent_api_and_restores_env(mlops_home: Path, no_mlflow_env: None) -> None:
    import mlflow

    hook = MLflowHook()
    with hook.activated() as client:
        assert mlflow.get_tracking_uri() == hook.tracking_uri
        assert mlflow.get_registry_uri() == hook.registry_uri
        assert client.tracking_uri == hook.tracking_uri
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; it must not leak into later hooks.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ


def test_unreachable_http_server_fails_fast_naming_the_url(no_mlflow_env: None) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with connect_attempts(port) as attempts, pytest.raises(StoreUnavailable) as caught:
        MLflowHook(tracking_uri=url).check_backend(timeout=1.0)
    assert len(attempts) == 1, f"probed once, not through MLflow's HTTP retries: {attempts}"
    message = str(caught.value)
    assert url in message and "mlflow server" in message
    assert caught.value.url == url


def test_unreachable_postgres_fails_fast_and_hides_the_password(no_mlflow_env: None) -> None:
    url = f"postgresql://mlflow:topsecret@127.0.0.1:{_free_port()}/mlflow"
    started = time.perf_counter()
    with pytest.raises(StoreUnavailable) as caught:
        MLflowHook(tracking_uri=url).check_backend(timeout=1.0)
    # libpq connects in C (no audit event to count): bound the time far below the ~100 s of retries
    assert time.perf_counter() - started < 30
    message = str(caught.value)
    assert "topsecret" not in message
    assert mask_url(url) in message and "postgresql" in message
    assert "Traceback" not in message and len(message.splitlines()) == 1
    # get_conn() probes too: MLflow alone would retry the engine ~10 times (~100 s) first.
    started = time.perf_counter()
    with pytest.raises(StoreUnavailable):
        MLflowHook(tracking_uri=url).get_conn()
    assert time.perf_counter() - started < 30, "MLflow alone retries the engine for ~100 s"


def test_ui_field_behaviour_and_helpers() -> None:
    behaviour = MLflowHook.ui_field_behaviour()
    assert behaviour["relabeling"]["host"] == "Tracking URI"
    assert "registry_uri" in behaviour["placeholders"]["extra"]
    assert MLflowHook.conn_type == "mlflow" and MLflowHook.default_conn_name == "mlflow_default"
    assert scheme_of("postgresql+psycopg2://u@h/db") == "postgresql"
    assert mask_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"


def test_bare_postgres_uri_gets_the_installed_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    uri = "postgresql://u@h/db"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a))
    assert with_installed_driver(uri) == "postgresql+psycopg2://u@h/db"  # SQLAlchemy 2.1 would pick psycopg 3
    monkeypatch.setattr(importlib.util, "find_spec", real)
    expected = uri if real("psycopg") else "postgresql+psycopg2://u@h/db"
    assert with_installed_driver(uri) == expected
    assert with_installed_driver("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert with_installed_driver("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_check_and_test_connection(mlops_home: Path, no_mlflow_env: None) -> None:
    hook = MLflowHook()
    hook.check_backend()  # embedded store: nothing to reach
    ok, message = hook.test_connection()
    assert ok, message


def test_module_does_not_import_mlflow_at_top() -> None:
    import subprocess
    import sys

    code = "import sys, airflow_mlops.hooks.mlflow; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
