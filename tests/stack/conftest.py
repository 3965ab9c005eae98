"""Stack fixtures: a real `mlflow server` backed by a fresh PostgreSQL database."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support.mlflow_server import MLflowServer, fresh_postgres_database


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLflowServer]:
    """One server per test module on database mlops_server_<pid>; errors (never skips) when it cannot start."""
    root = tmp_path_factory.mktemp("mlflow_server")
    with fresh_postgres_database(f"mlops_server_{os.getpid()}") as backend_uri:
        server = MLflowServer(backend_uri=backend_uri, artifacts=root / "artifacts", log_path=root / "server.log")
        took = server.start()
        print(f"mlflow server {server.url} healthy after {took:.1f} s (log {server.log_path})")
        try:
            yield server
        finally:
            server.stop()
