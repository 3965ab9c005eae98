"""A real Airflow for e2e and browser tests: scheduler, dag-processor, triggerer and api-server.

`airflow_stack(home)` runs on a fresh MLOPS_HOME the way an operator would: the project's own
environment (`runtime_env.airflow_env()`), `airflow db migrate`, then each component as its own
subprocess and process group, LocalExecutor on the SQLite metadata DB, the api-server on a free
port of 127.0.0.1. Readiness is polled with timeouts; each component logs to a file whose tail is
printed when something fails; teardown always kills the process groups.

Airflow 3.3 and SQLite: the LocalExecutor is the default executor and is allowed with SQLite
(`airflow standalone` uses exactly this pair); tasks reach the DB only through the api-server's
execution API. Parallelism is kept small because LocalExecutor forks `parallelism` workers at start.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from unittest import mock

import httpx
import psutil

from support.airflow_client import AirflowClient, wait_for
from support.airflow_db import migrated_airflow_home, uses_default_sqlite

PROJECT = Path(__file__).resolve().parents[2]
NETAUDIT = PROJECT / "tests" / "support" / "netaudit"
WORKER_HOSTNAME = PROJECT / "tests" / "support" / "worker_hostname"
ALL_COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
# /api/v2/monitor/health names components with underscores.
HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
USERNAME = "admin"
MIGRATE_TIMEOUT_S = 300
STOP_TIMEOUT_S = 20
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_exe(name: str = "airflow") -> str:
    exe = Path(sys.executable).with_name(name)
    if not exe.exists():
        raise FileNotFoundError(f"no `{name}` next to {sys.executable}; run `make install` first")
    return str(exe)


def project_env(home: Path) -> dict[str, str]:
    """What the project itself gives Airflow for this MLOPS_HOME (runtime_env.airflow_env())."""
    from airflow_mlops.runtime_env import airflow_env

    with mock.patch.dict(os.environ, {"MLOPS_HOME": str(home)}):
        return airflow_env()


def stack_env(home: Path, port: int, password_file: Path, audit_log: Path | None,
              extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment of every component: the caller's env minus any Airflow/MLOps state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS", "MLFLOW"))}
    env.update(project_env(home))
    base_url = f"http://127.0.0.1:{port}"
    env.update({
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"{base_url}/",
        "AIRFLOW__API__WORKERS": "1",
        # Every component must share these; set them so no component invents its own. The Fernet key
        # too: the components start together on a home without airflow.cfg (the metadata DB is a copy,
        # no `db migrate` wrote one first), and trigger kwargs encrypted by one must decrypt in another.
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "PYTHONUNBUFFERED": "1",
    })
    if audit_log is not None:  # tests/support/netaudit: every Python process records and blocks outbound traffic
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETAUDIT), env.get("PYTHONPATH")]))
        env["MLOPS_NETAUDIT_LOG"] = str(audit_log)
    env.update(extra or {})
    return env


def _die_with_parent() -> None:
    """Child side of Popen: own process group, and SIGTERM if the test process dies (Linux)."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return "(no file)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


@dataclass
class AirflowStack:
    """A running (or about to run) Airflow; use `airflow_stack()` rather than this directly."""

    home: Path
    port: int = field(default_factory=free_port)
    audit_network: bool = True
    extra_env: Mapping[str, str] | None = None
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _log_handles: list[IO[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(json.dumps({USERNAME: self.password}) + "\n")
        audit = self.home / "netaudit.log" if self.audit_network else None
        self.env = stack_env(self.home, self.port, self.password_file, audit, self.extra_env)

    # --- where things are ----------------------------------------------------------------------

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def log_dir(self) -> Path:
        return self.home / "stack-logs"

    @property
    def password_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json.generated"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def username(self) -> str:
        return USERNAME

    def client(self) -> AirflowClient:
        return AirflowClient(self.base_url, USERNAME, self.password)

    def network_attempts(self) -> str:
        log = self.home / "netaudit.log"
        return log.read_text() if log.exists() else ""

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self, args: list[str], name: str, timeout: float = MIGRATE_TIMEOUT_S, exe: str = "airflow") -> None:
        """Run one command to completion with the stack's env, output to <log_dir>/<name>.log."""
        log = self.log_dir / f"{name}.log"
        started = time.monotonic()
        with log.open("wb") as out:
            result = subprocess.run([airflow_exe(exe), *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    timeout=timeout, check=False, cwd=self.home)
        if result.returncode != 0:
            raise RuntimeError(f"`{exe} {' '.join(args)}` exited {result.returncode}:\n{_tail(log, 40)}")
        print(f"[stack] {exe} {' '.join(args)}: {time.monotonic() - started:.1f}s", flush=True)

    def start(self, components: Iterable[str]) -> None:
        for name in components:
            self.spawn(name, [name])

    def spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> None:
        """Start `airflow <args>` as process `name` (log <log_dir>/<name>.log), with `env` on top of the stack's."""
        out = (self.log_dir / f"{name}.log").open("ab")
        self._log_handles.append(out)
        # preexec_fn is only safe while no other thread exists (the stack's start). A process spawned
        # later (a spare worker mid-test) gets its own session without the parent-death signal; stop()
        # still ends it.
        alone = threading.active_count() == 1
        self.procs[name] = subprocess.Popen(
            [airflow_exe(), *args], env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.home, start_new_session=not alone,
            preexec_fn=_die_with_parent if alone else None,  # noqa: PLW1509
        )

    def start_celery_worker(self, name: str, queues: str, concurrency: int = 1) -> None:
        """`airflow celery worker` for `queues` as process `name`; it reports itself as host `name` on its tasks.

        Each worker gets its own log-server port (two on one machine would collide on 8793) and its own
        `hostname_callable` result, so a task instance's `hostname` names the worker that ran it.
        """
        pythonpath = os.pathsep.join(filter(None, [str(WORKER_HOSTNAME), self.env.get("PYTHONPATH")]))
        env = {
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "mlops_test_worker_hostname.hostname",
            "MLOPS_TEST_WORKER_NAME": name,
            "PYTHONPATH": pythonpath,
        }
        self.spawn(name, ["celery", "worker", "--queues", queues, "--concurrency", str(concurrency),
                          "--celery-hostname", f"{name}@%h", "--without-gossip", "--without-mingle"], env)

    def wait_worker_ready(self, name: str, timeout: float = 120) -> float:
        """Wait until worker `name` has connected to the broker and logged `ready.`; returns the seconds."""
        started = time.monotonic()
        log = self.log_dir / f"{name}.log"
        wait_for(lambda: log.exists() and f"{name}@" in log.read_text(errors="replace")
                 and " ready." in log.read_text(errors="replace"),
                 timeout, f"Celery worker {name} to be ready (log {log})", on_poll=self.check_alive)
        return time.monotonic() - started

    def kill_tree(self, name: str) -> list[int]:
        """SIGKILL process `name` and every process below it at once (a worker machine that dies); the pids."""
        proc = self.procs.pop(name)
        family = [psutil.Process(proc.pid), *_descendants(proc.pid)]
        for member in family:
            with contextlib.suppress(psutil.Error):
                member.kill()
        psutil.wait_procs(family, timeout=10)
        proc.wait(timeout=10)
        return [member.pid for member in family]

    def check_alive(self) -> None:
        dead = {name: proc.returncode for name, proc in self.procs.items() if proc.poll() is not None}
        if dead:
            tails = "\n".join(f"--- {name} (exit {rc}) ---\n{_tail(self.log_dir / f'{name}.log', 40)}"
                              for name, rc in dead.items())
            raise RuntimeError(f"Airflow component(s) died: {sorted(dead)}\n{tails}")

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL what is left after STOP_TIMEOUT_S; never raises.

        Task processes start their own process group (the LocalExecutor's supervisor), so every
        descendant is looked up first and killed too if it outlives its component.
        """
        family = [child for proc in self.procs.values() for child in _descendants(proc.pid)]
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for child in family:
            with contextlib.suppress(psutil.Error):
                child.kill()  # psutil refuses if the pid now belongs to another process
        psutil.wait_procs(family, timeout=5)
        for handle in self._log_handles:
            handle.close()

    # --- readiness -----------------------------------------------------------------------------

    def wait_ready(self, dag_ids: Iterable[str] = (), timeout: float = 180) -> float:
        """Wait for the api-server, healthy components and parsed DAGs; returns the seconds it took."""
        started = time.monotonic()
        wait_for(self._health_ok, timeout, f"api-server on {self.base_url} and healthy {sorted(self.procs)}",
                 on_poll=self.check_alive)
        client = self.client()
        try:
            for dag_id in dag_ids:
                remaining = max(1.0, timeout - (time.monotonic() - started))
                wait_for(lambda d=dag_id: self._dag_parsed(client, d), remaining, f"DAG {dag_id} to be parsed",
                         on_poll=self.check_alive)
        finally:
            client.close()
        return time.monotonic() - started

    def _health_ok(self) -> bool:
        try:
            response = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
        except httpx.TransportError:
            return False
        if response.status_code != 200:
            return False
        health = response.json()
        wanted = [HEALTH_KEYS[name] for name in self.procs if name in HEALTH_KEYS]
        return all((health.get(key) or {}).get("status") == "healthy" for key in wanted)

    @staticmethod
    def _dag_parsed(client: AirflowClient, dag_id: str) -> bool:
        errors = client.import_errors()
        if errors:
            details = "\n".join(f"{e['filename']}: {e['stack_trace']}" for e in errors)
            raise RuntimeError(f"DAG import errors:\n{details}")
        response = client.request("GET", "/dags", params={"dag_id_pattern": dag_id})
        return any(dag["dag_id"] == dag_id for dag in response["dags"])

    # --- diagnostics ---------------------------------------------------------------------------

    def dump_logs(self, stream: IO[str] | None = None, lines: int = 60) -> None:
        """Print the tail of every component log and every task log (for a failed test)."""
        out = stream or sys.stderr
        for log in sorted(self.log_dir.glob("*.log")):
            print(f"\n===== {log.name} (last {lines} lines; full file: {log}) =====\n{_tail(log, lines)}", file=out)
        for log in sorted((self.airflow_home / "logs").glob("dag_id=*/**/*.log")):
            print(f"\n===== task log {log.relative_to(self.airflow_home)} =====\n{_tail(log, lines)}", file=out)
        attempts = self.network_attempts()
        if attempts:
            print(f"\n===== outbound network attempts =====\n{attempts}", file=out)
        out.flush()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@contextlib.contextmanager
def airflow_stack(home: Path, components: Iterable[str] = ALL_COMPONENTS, dag_ids: Iterable[str] = (),
                  ready_timeout: float = 180, celery_workers: Mapping[str, str] | None = None,
                  **options: Any) -> Iterator[AirflowStack]:
    """Migrate, start `components`, wait until they are healthy and `dag_ids` are parsed, yield; always stop.

    `celery_workers` maps a worker name to its queues (`{"training": "training"}`): each is started as
    `airflow celery worker` after the components and waited for (the stack's env must select Celery).
    Any exception inside the block (a failed assertion too) prints the component and task logs.
    """
    stack = AirflowStack(home=home, **options)
    try:
        if uses_default_sqlite(stack.env):
            migrated_airflow_home(stack.airflow_home)  # the session's one migrate, copied
        else:
            stack.run(["db", "migrate"], name="db-migrate")
        stack.start(components)
        for name, queues in (celery_workers or {}).items():
            stack.start_celery_worker(name, queues)
        for name in celery_workers or {}:
            stack.wait_worker_ready(name, timeout=ready_timeout)
        took = stack.wait_ready(dag_ids, timeout=ready_timeout)
        print(f"[stack] {', '.join(components)} ready on {stack.base_url} in {took:.1f}s", flush=True)
        yield stack
    except BaseException:
        stack.dump_logs()
        raise
    finally:
        stack.stop()


@contextlib.contextmanager
def airflow_stack_for_fixture(request: Any, home: Path, **kwargs: Any) -> Iterator[AirflowStack]:
    """`airflow_stack` for a (module- or session-scoped) pytest fixture.

    Pytest does not raise a test's failure into its fixtures, so the logs are printed when the
    session's failure count grew while the stack was up. `request` is the fixture's FixtureRequest.
    """
    failed_before = request.session.testsfailed
    with airflow_stack(home, **kwargs) as stack:
        yield stack
        if request.session.testsfailed > failed_before:
            stack.dump_logs()
