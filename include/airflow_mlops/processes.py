"""Child processes that stop when we stop: `up` (airflow standalone) and `serve` (uvicorn).

`airflow standalone` starts scheduler, dag-processor, triggerer and api-server; they start LocalExecutor
workers, log servers and task processes (some in their own session). A SIGTERM to standalone kills it
alone (it only handles Ctrl-C) and leaves the rest running. `run_supervised` therefore starts the
command in its own session, makes this process the subreaper of everything below it (an orphan is
re-parented here, not to init, so it can still be found and reaped), and on SIGTERM/SIGINT/SIGHUP
asks the command to stop, then signals whatever is left of the tree: SIGTERM, later SIGKILL, all
within `STOP_DEADLINE_S`.

`arm_stop_watchdog` is the in-process counterpart for a server that handles signals itself (uvicorn):
once armed, the process and its children are killed if a graceful shutdown outlasts the deadline.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

STOP_DEADLINE_S = 25.0  # the promise is 30 s; keep a margin for the last SIGKILLs and reaping
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    """Linux prctl(2); a no-op elsewhere (macOS has neither option)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _child_setup(parent_death_signal: int) -> None:
    """In the child before exec: own session (a terminal's Ctrl-C reaches only us), and a signal if we die."""
    os.setsid()
    _prctl(_PR_SET_PDEATHSIG, parent_death_signal)


def _descendants() -> list[Any]:
    import psutil

    try:
        return list(psutil.Process().children(recursive=True))
    except psutil.Error:
        return []


def _send(processes: Sequence[Any], sig: int) -> None:
    import psutil

    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)  # psutil refuses when the pid now belongs to another process


def _alive(processes: Sequence[Any]) -> list[Any]:
    """The processes still running; reaps the ones that are our zombies."""
    import psutil

    _, alive = psutil.wait_procs(list(processes), timeout=0)
    return [p for p in alive if _status(p) != psutil.STATUS_ZOMBIE]


def _cmdline(proc: Any) -> list[str]:
    import psutil

    try:
        return list(proc.cmdline())
    except psutil.Error:
        return []


def _status(proc: Any) -> str:
    import psutil

    try:
        return str(proc.status())
    except psutil.Error:
        return str(psutil.STATUS_DEAD)


def stop_tree(graceful: Mapping[int, int] | None = None, deadline_s: float = STOP_DEADLINE_S) -> list[int]:
    """Stop every descendant of this process within `deadline_s`; returns the pids that needed SIGKILL.

    `graceful` maps a pid to the signal that asks it to shut down on its own (standalone: SIGINT, which
    makes it stop its components); the rest of the tree gets SIGTERM after 40 % of the deadline if
    still running, SIGKILL after 85 %. New descendants that appear meanwhile are included.
    """
    import psutil

    started = time.monotonic()
    family = {p.pid: p for p in _descendants()}
    for pid, sig in (graceful or {}).items():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    if not graceful:
        _send(list(family.values()), signal.SIGTERM)
    phases = [(0.40 * deadline_s, signal.SIGTERM), (0.85 * deadline_s, signal.SIGKILL)]
    killed: list[int] = []
    while True:
        family.update({p.pid: p for p in _descendants()})
        alive = _alive(list(family.values()))
        if not alive:
            return killed
        elapsed = time.monotonic() - started
        if phases and elapsed >= phases[0][0]:
            _, sig = phases.pop(0)
            if sig == signal.SIGKILL:
                killed.extend(p.pid for p in alive)
                print(f"    still running after {elapsed:.0f} s, killing: "
                      f"{[(p.pid, ' '.join(_cmdline(p))[:120]) for p in alive]}", file=sys.stderr, flush=True)
            _send(alive, sig)
        elif not phases and elapsed >= deadline_s:
            return killed + [p.pid for p in alive if p.pid not in killed]
        with contextlib.suppress(psutil.Error):
            psutil.wait_procs(alive, timeout=0.2)


def run_supervised(command: Sequence[str], env: Mapping[str, str], stop_signal: int = signal.SIGTERM,
                   deadline_s: float = STOP_DEADLINE_S) -> int:
    """Run `command` in its own session until it exits or we get SIGTERM/SIGINT/SIGHUP; then stop its tree.

    `stop_signal` is what asks the command itself to shut down. Returns the command's exit status, or
    0 after a requested stop that left nothing running (1 if something had to be killed).
    """
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    requested: list[int] = []

    def _request_stop(signum: int, _frame: Any) -> None:
        requested.append(signum)

    previous = {sig: signal.signal(sig, _request_stop) for sig in STOP_SIGNALS}
    try:
        proc = subprocess.Popen(list(command), env=dict(env), preexec_fn=lambda: _child_setup(stop_signal))  # noqa: PLW1509 - no thread runs yet
        while proc.poll() is None and not requested:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
        if requested:
            name = signal.Signals(requested[0]).name
            print(f"\n==> {name}: stopping {os.path.basename(command[0])} and every process it started "
                  f"(at most {deadline_s:.0f} s)", flush=True)
        graceful = {proc.pid: stop_signal} if proc.poll() is None else {}
        killed = stop_tree(graceful, deadline_s)
        if killed:
            print(f"    killed after the deadline: pids {killed}", file=sys.stderr, flush=True)
        if requested:
            print("    stopped", flush=True)
            return 1 if killed else 0
        return int(proc.returncode)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_watchdog_lock = threading.Lock()
_watchdog: list[threading.Thread] = []


def arm_stop_watchdog(deadline_s: float = STOP_DEADLINE_S) -> None:
    """Once a shutdown has begun: kill the children and exit if it is not over within `deadline_s`.

    Idempotent (the first call sets the deadline). The thread is a daemon: a shutdown that finishes in
    time exits normally and the watchdog dies with the process.
    """
    with _watchdog_lock:
        if _watchdog:
            return

        def _expire() -> None:
            time.sleep(deadline_s)
            print(f"shutdown took longer than {deadline_s:.0f} s: killing the process and its children",
                  file=sys.stderr, flush=True)
            _send(_descendants(), signal.SIGKILL)
            os._exit(1)

        thread = threading.Thread(target=_expire, name="stop-watchdog", daemon=True)
        _watchdog.append(thread)
        thread.start()
