"""Configuration errors fail fast: a wrong store URL fails the first task in seconds, once, with the masked URL.

The DAG run uses the real operators (retrain gate, Feast materialize), the real hooks and the factory's
retry policy (retries=2, 1 min exponential): a config error must fail the task at once (try 1, state
failed, never up_for_retry) instead of MLflow's ~4 min HTTP retry ladder per try plus the task's
retries. The hook-level tests run tiny loopback HTTP servers that answer 401 / 404 / 503 or nothing,
to check which answers count as configuration (no retry) and which as transient (retried).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from airflow_mlops.exceptions import StoreConfigError, StoreUnavailable
from airflow_mlops.hooks.mlflow import MLflowHook
from support.connects import connect_attempts
from support.dag_runs import dag_file, fresh_airflow_env, program, result_of, run_script

pytestmark = pytest.mark.integration

SECRET = "s3cret-pw"

DAG_FILE = dag_file("fail_fast")

RUNNER = program("fail_fast_runner")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_wrong_store_urls_fail_their_first_task_at_once_without_retry(tmp_path: Path) -> None:
    http, pg, redis = _closed_port(), _closed_port(), _closed_port()
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "fail_fast.py").write_text(DAG_FILE)
    env = fresh_airflow_env(tmp_path, dags)
    env.update(
        MLFLOW_TRACKING_URI=f"http://ops:{SECRET}@127.0.0.1:{http}",  # nothing listens: a stopped server
        AIRFLOW_CONN_MLFLOW_PG=json.dumps({"conn_type": "mlflow",  # wrong port
                                           "host": f"postgresql://mlflow:{SECRET}@127.0.0.1:{pg}/mlflow"}),
        AIRFLOW_CONN_MLFLOW_TYPO=json.dumps({"conn_type": "mlflow",  # mistyped scheme
                                             "host": f"postgressql://mlflow:{SECRET}@127.0.0.1:5432/mlflow"}),
        MLOPS_FEAST_ONLINE_STORE=f"redis://:{SECRET}@127.0.0.1:{redis}/0",
    )
    # Before: ~4.3 min per try for the HTTP store alone (MLflow's 7 retries with back-off), then 2 task retries.
    done = run_script(RUNNER, str(dags), env=env, cwd=tmp_path, timeout=240)
    result, output = result_of(done), done.stdout + done.stderr

    assert result["seconds"] < 30, result  # all four tasks, in one dag.test() run
    assert result["state"] == "failed"
    for task, info in result["tasks"].items():
        assert info["state"] == "failed" and info["try_number"] == 1, (task, info)  # never up_for_retry
        assert info["max_tries"] == 2, "the factory's retries stay in place for transient errors"
    assert f"MLflow tracking server at http://ops:***@127.0.0.1:{http} is unreachable (connection refused)" in output
    assert f"MLflow backend store at postgresql://mlflow:***@127.0.0.1:{pg}/mlflow is unreachable " \
           "(connection refused)" in output
    assert "at postgressql://mlflow:***@127.0.0.1:5432/mlflow is unreachable (MLflow has no store for the scheme " \
           "'postgressql')" in output
    assert f"Feast online store (Redis) at redis://127.0.0.1:{redis}/0 is unreachable (connection refused)" in output
    assert "docker compose -f docker/compose.yaml up -d mlflow" in output  # what to start
    assert f"redis-server --port {redis}" in output
    assert "Not retried: this is a configuration error" in output
    assert SECRET not in output


# ------------------------------------------------------------------------ hook level: which answers retry
class _Answer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # http.server's name
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _server(status: int) -> Iterator[str]:
    handler = type("Answer", (_Answer,), {"status": status})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT",
                 "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("status", "config_error", "words"), [
    (401, True, "credentials missing or refused"),
    (403, True, "credentials refused"),
    (404, True, "not an MLflow tracking server at this URL"),
    (503, False, "server error"),
    (429, False, "server error"),
])
def test_http_answers_are_config_or_transient(no_mlflow_env: None, status: int, config_error: bool,
                                              words: str) -> None:
    with _server(status) as url, pytest.raises(StoreUnavailable) as caught:
        MLflowHook(tracking_uri=url).check_backend(timeout=1.0)
    assert isinstance(caught.value, StoreConfigError) is config_error
    assert f"answered HTTP {status}: {words}" in str(caught.value)
    assert ("Not retried" in str(caught.value)) is config_error


def test_a_silent_server_is_transient_and_retried(no_mlflow_env: None) -> None:
    """TCP accepts, no HTTP answer: a busy or hung server, not a wrong URL — the task's retries apply."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            MLflowHook(tracking_uri=url).check_backend(timeout=0.5)
    assert not isinstance(caught.value, StoreConfigError)
    assert "no answer within 0.5 s" in str(caught.value)
    assert time.monotonic() - started < 10


def test_get_conn_probes_once_per_process_then_trusts_the_store(no_mlflow_env: None) -> None:
    with _server(200) as url:
        port = int(url.rsplit(":", 1)[1])
        with connect_attempts(port) as first:
            MLflowHook(tracking_uri=url).get_conn()
        with connect_attempts(port) as again:
            MLflowHook(tracking_uri=url).get_conn()  # the serving app and triggerer make clients again and again
    assert len(first) == 3, first  # TCP probe, /health, the experiments API
    assert again == []

