"""Drive an event trigger's `run()` with asyncio and collect what it fires."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from airflow.triggers.base import BaseTrigger

EXPECT_TIMEOUT_S = 60.0


async def collect_events(trigger: BaseTrigger, seconds: float, during: Callable[[], Awaitable[Any]] | None = None,
                         events: list[dict[str, Any]] | None = None, expect: int | None = None) -> list[dict[str, Any]]:
    """Run the trigger (after `during()`, if given) and return the event payloads.

    With `expect`, wait until that many events came (up to EXPECT_TIMEOUT_S: a slow machine only makes
    it take longer), then listen `seconds` more so that an extra event would be caught. Without it,
    listen `seconds` (for "nothing fires" checks, where a slow machine can only weaken the check).
    Pass `events` to watch the payloads arrive while `during()` runs.
    """
    events = [] if events is None else events

    async def consume() -> None:
        async for event in trigger.run():
            events.append(event.payload)

    task = asyncio.create_task(consume())
    try:
        if during is not None:
            await during()
        deadline = time.monotonic() + EXPECT_TIMEOUT_S
        while expect is not None and len(events) < expect and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.01)
        await asyncio.sleep(seconds)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if task.done() and not task.cancelled() and task.exception():
        raise task.exception()  # type: ignore[misc]
    return events
