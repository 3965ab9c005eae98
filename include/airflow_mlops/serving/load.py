"""A small load generator for a running serving app: client threads posting /predict, recording every answer.

Used by `airflow-mlops demo --serve` to show a champion switch under load: each answer is kept as
(send and answer time, HTTP status, model version), so the caller can count failures, list the versions
in the order they answered and time the switch. Any non-200 answer or transport error is a failure.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Answer:
    client: int  # which client thread asked
    sent: float  # time.monotonic() when the request left
    at: float  # time.monotonic() when its answer arrived
    status: int  # 0: no HTTP answer (connection refused, timeout, ...)
    version: str | None
    error: str | None = None


@dataclass
class LoadLoop:
    """`clients` threads, each with one keep-alive connection, posting /predict rows round-robin until stopped."""

    url: str
    rows: Sequence[dict[str, Any]]
    clients: int = 4
    timeout: float = 10.0
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> LoadLoop:
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(n,), name=f"mlops-load-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _client(self, n: int) -> None:
        import httpx

        rows = itertools.islice(itertools.cycle(self.rows), n, None, self.clients)
        with httpx.Client(base_url=self.url, timeout=self.timeout) as client:
            for row in rows:
                if self._stop.is_set():
                    return
                answer = self._post(client, row, n)
                with self._lock:
                    self.answers.append(answer)

    @staticmethod
    def _post(client: Any, row: dict[str, Any], n: int) -> Answer:
        import httpx

        sent = time.monotonic()
        try:
            response = client.post("/predict", json=row)
        except httpx.HTTPError as exc:
            return Answer(n, sent, time.monotonic(), 0, None, f"{type(exc).__name__}: {exc}")
        if response.status_code != 200:
            return Answer(n, sent, time.monotonic(), response.status_code, None, response.text[:300])
        versions = {p["model_version"] for p in response.json()["predictions"]}
        return Answer(n, sent, time.monotonic(), 200, ",".join(sorted(versions)))

    # ------------------------------------------------------------------ results
    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def failures(self) -> list[Answer]:
        return [a for a in self.snapshot() if a.status != 200]

    def versions_per_client(self) -> list[list[str]]:
        """Each client's versions in the order it got them, repeats collapsed: [["1", "2"], ...] for a clean switch.

        Per client, because its requests are strictly sequential: a version flipping back within one
        client is a real mixed switch. Across clients, send times say little (a thread can wait for
        the GIL between taking the time and sending) and in-flight requests legitimately overlap."""
        answers = self.snapshot()
        return [[v for v, _ in itertools.groupby(a.version for a in answers if a.client == n and a.version)]
                for n in range(self.clients)]

    def first_answer_of(self, version: str) -> float | None:
        times = [a.at for a in self.snapshot() if a.version == version]
        return min(times) if times else None
