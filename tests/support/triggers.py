"""Drive an event trigger's `run()` with asyncio for a while and collect what it fires."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from airflow.triggers.base import BaseTrigger


async def collect_events(trigger: BaseTrigger, seconds: float, during: Callable[[], Awaitable[Any]] | None = None,
                         events: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run the trigger for `seconds` (after `during()`, if given); return the event payloads.

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
        await asyncio.sleep(seconds)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if task.done() and not task.cancelled() and task.exception():
        raise task.exception()  # type: ignore[misc]
    return events
