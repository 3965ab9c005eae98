"""The real `airflow-mlops serve` process for e2e tests: started, polled until ready, always stopped."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support.airflow_stack import _die_with_parent, free_port

READY_TIMEOUT_S = 180


@dataclass
class ServingProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 10) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def ready(self) -> dict[str, Any] | None:
        """/ready's body once a model is loaded, else None (503 or not listening yet)."""
        if self.proc.poll() is not None:
            raise AssertionError(f"serving process exited with {self.proc.returncode}:\n{self.tail()}")
        try:
            response = httpx.get(f"{self.url}/ready", timeout=5)
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    def served_version(self) -> str | None:
        body = self.ready()
        return str(body["primary"]["version"]) if body else None

    def predict(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = httpx.post(f"{self.url}/predict", json={"entities": rows}, timeout=30)
        assert response.status_code == 200, f"/predict answered {response.status_code}: {response.text}"
        return list(response.json()["predictions"])

    def logged_records(self) -> float:
        """Records the serving process's prediction log has stored (its /metrics counter)."""
        response = httpx.get(f"{self.url}/metrics", timeout=10)
        response.raise_for_status()
        for line in response.text.splitlines():
            if line.startswith("mlops_serving_prediction_log_written_total{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"/metrics has no mlops_serving_prediction_log_written_total:\n{response.text[:2000]}")

    def tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def serving_process(model: str, env: Mapping[str, str], log_path: Path,
                    cli: Path | None = None, workers: int = 1) -> Iterator[ServingProcess]:
    """`airflow-mlops serve --model <model> --workers <workers>` on a free port with `env`; waits for /ready (a
    loaded champion; with several workers, the one that answered).

    `cli`: the `airflow-mlops` of another environment (default: this interpreter's)."""
    cli = cli or Path(sys.executable).with_name("airflow-mlops")
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as sink:
        proc = subprocess.Popen([str(cli), "serve", "--model", model, "--port", str(port), "--workers", str(workers)],
                                env=dict(env),
                                stdout=sink, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)  # noqa: PLW1509 - killed with the test process
    server = ServingProcess(proc=proc, port=port, log_path=log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while server.ready() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"serving not ready after {READY_TIMEOUT_S}s:\n{server.tail()}")
            time.sleep(0.5)
        yield server
    except BaseException:
        print(f"[serving] log tail ({log_path}):\n{server.tail()}", flush=True)
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
