"""Stack-test services: a fresh PostgreSQL database and a real `mlflow server` subprocess on it.

The server runs as in docker/compose.yaml (ARCHITECTURE.md §9): one worker, no job runner, telemetry
off, artifacts proxied (`mlflow-artifacts:/`) into a local directory. It gets its own process group,
so stop() ends the uvicorn worker too. Failures raise with the reason and the server log tail:
stack tests error, they never skip.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def _admin_connection() -> Any:
    import psycopg2

    try:
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}, trust auth) is required by the stack tests and is "
            f"not reachable: {str(exc).strip()}. "
            "Start it (e.g. `docker compose -f docker/compose.yaml up -d postgres`)."
        ) from exc
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return conn


@contextmanager
def fresh_postgres_database(name: str) -> Iterator[str]:
    """An empty database `name` for the block (dropped after, even with open connections)."""
    admin = _admin_connection()
    try:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MLflowServer:
    """`mlflow server` on 127.0.0.1:`port` with `backend_uri` as tracking and registry store."""

    backend_uri: str
    artifacts: Path
    log_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait for GET /health; returns the seconds it took."""
        self.port = self.port or free_port()
        self.artifacts.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | SERVER_ENV
        mlflow = Path(sys.executable).with_name("mlflow")
        command = [str(mlflow), "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(self.port),
                   "--backend-store-uri", self.backend_uri, "--serve-artifacts",
                   "--artifacts-destination", str(self.artifacts)]
        started = time.perf_counter()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, env=env, cwd=self.artifacts.parent, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_healthy(started + timeout)
        return time.perf_counter() - started

    def _wait_healthy(self, deadline: float) -> None:
        import requests

        assert self.process is not None
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server at {self.url} did not answer /health in time:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the server's process group (SIGKILL after 15 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no server log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
