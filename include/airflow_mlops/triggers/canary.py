"""CanaryTrigger: watch a canary's traffic on the serving app's /metrics until there is a verdict.

The deploy operator deploys the canary, takes a baseline snapshot of the canary route's counters
and defers here with it and the absolute end of the window (so a triggerer restart resumes the
same window instead of starting a new one). Each poll runs `core.canary.assess()` — the same check
the operator runs when `deferrable=False` (it drives this trigger inline) — and the trigger
yields one event, then stops:

- `{"status": "breached", ...}` as soon as a limit is crossed with at least `min_requests`;
- `{"status": "healthy" | "inconclusive", ...}` when the window ends;
- `{"status": "error", ...}` when the window ends and /metrics could not be read at the last poll.

Every event carries `model`, `version`, `verdict` (Verdict.to_dict() or None) and `message`.
httpx and prometheus_client are imported inside functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.boundary import TriggerBoundary
from airflow_mlops.core.canary import PENDING, CanaryLimits, CanaryMetricsError, RouteCounts, Verdict, assess


class CanaryTrigger(TriggerBoundary, BaseTrigger):
    """Poll `{url}/metrics` every `poll_interval` seconds until the canary of `version` has a verdict.

    :param url: base URL of the serving app.
    :param model_name: registered model name (the `model` label of the metrics).
    :param version: the canary's model version (the `version` label).
    :param baseline: RouteCounts.to_dict() of the canary route taken when the window started.
    :param window_end: ISO time at which the window closes.
    :param limits: CanaryLimits.to_dict().
    :param timeout: seconds per HTTP request.
    """

    def __init__(self, *, url: str, model_name: str, version: str, baseline: dict[str, Any], window_end: str,
                 limits: dict[str, Any], poll_interval: float = 15.0, timeout: float = 10.0,
                 **kwargs: Any) -> None:
        # Airflow's BaseTrigger.__init__(**kwargs) is unannotated; mypy's untyped_calls_exclude does not reach super()
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.version = str(version)
        self.baseline = dict(baseline)
        self.window_end = window_end
        self.limits = dict(limits)
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"url": self.url, "model_name": self.model_name, "version": self.version, "baseline": self.baseline,
             "window_end": self.window_end, "limits": self.limits, "poll_interval": self.poll_interval,
             "timeout": self.timeout},
        )

    def seconds_left(self) -> float:
        end = datetime.fromisoformat(self.window_end)
        end = end.replace(tzinfo=UTC) if end.tzinfo is None else end
        return (end - datetime.now(UTC)) / timedelta(seconds=1)

    def check(self, text: str, *, window_over: bool) -> Verdict:
        return assess(text, RouteCounts.from_dict(self.baseline), CanaryLimits(**self.limits),
                      model=self.model_name, version=self.version, window_over=window_over)

    def _event(self, status: str, message: str, verdict: Verdict | None = None) -> TriggerEvent:
        return TriggerEvent({"status": status, "model": self.model_name, "version": self.version,
                             "verdict": verdict.to_dict() if verdict else None, "message": message})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import httpx

        async with httpx.AsyncClient(timeout=self.timeout) as client:
            while True:
                window_over = self.seconds_left() <= 0
                try:
                    response = await client.get(f"{self.url}/metrics")
                    response.raise_for_status()
                    verdict = self.check(response.text, window_over=window_over)
                except (httpx.HTTPError, CanaryMetricsError) as err:
                    problem = f"{self.url}/metrics could not be read ({type(err).__name__}: {err})"
                    if window_over:
                        yield self._event("error", f"canary of v{self.version} has no verdict: {problem}")
                        return
                    self.log.warning("%s; retrying in %.0fs", problem, self.poll_interval)
                else:
                    if verdict.status != PENDING:
                        yield self._event(verdict.status, verdict.reason, verdict)
                        return
                    self.log.info("canary %s v%s: %s; %.0fs of the window left", self.model_name, self.version,
                                  verdict.reason, self.seconds_left())
                await asyncio.sleep(max(0.0, min(self.poll_interval, self.seconds_left())))


async def first_event(trigger: BaseTrigger) -> dict[str, Any]:
    """Run a trigger to its first event (the operator's non-deferrable mode runs the same code)."""
    async for event in trigger.run():
        return dict(event.payload)
    raise CanaryMetricsError(f"{type(trigger).__name__} ended without an event")
