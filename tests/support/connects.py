"""Count a process's connection attempts to one port, so "fails fast" is checked as "does not retry".

A wall-clock bound ("fails within 3 s") flakes on a loaded machine; what the product promises is that
an unreachable store is tried once and reported, not retried with backoff. Python's audit hook sees
every `socket.connect` of this process (redis-py, httpx, requests; not libpq, which connects in C).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

_watches: list[tuple[int, list[Any]]] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _watches:
        address = args[1]
        if isinstance(address, tuple) and len(address) >= 2:
            for port, attempts in _watches:
                if address[1] == port:
                    attempts.append(address)


sys.addaudithook(_hook)


@contextlib.contextmanager
def connect_attempts(port: int) -> Iterator[list[Any]]:
    """Yield a list that collects the addresses of every connect to `port` made inside the block."""
    attempts: list[Any] = []
    watch = (port, attempts)
    _watches.append(watch)
    try:
        yield attempts
    finally:
        _watches.remove(watch)
