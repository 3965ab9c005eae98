"""The registry lease as plain data: claims, their order and what a claimant does next (no MLflow import).

One registered-model tag per claimant, `airflow_mlops.lease.<microseconds>.<token>` = {owner, at}. The
protocol (`core/model_registry.ModelRegistry.lease`) is "write your own claim, then read all claims":
a claimant goes on only when a read made after its own claim landed shows no other live claim. That is
mutual exclusion without compare-and-set and without any bound on write latency — see the hook's docstring
for the argument. `standing()` turns such a read into the next step: go, withdraw, or wait.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from airflow_mlops.core import lineage

TAG_PREFIX = f"{lineage.TAG_PREFIX}lease."
# A claim older than this is abandoned: its holder died (a live one finishes its alias move in seconds).
TTL = timedelta(minutes=10)
# How long an older claimant waits for younger claims to go (they withdraw, or finish and release).
WAIT = timedelta(minutes=2)


@dataclass(frozen=True, order=True)
class Claim:
    """One claim; claims sort oldest first (by key: time, then token)."""

    key: str
    owner: str = field(compare=False)
    at: datetime | None = field(compare=False)  # None: unreadable value and key, so it never expires

    def expired(self, now: datetime, ttl: timedelta = TTL) -> bool:
        return self.at is not None and now - self.at > ttl


@dataclass(frozen=True)
class Standing:
    """Where our claim stands among the others, from one read made after it landed."""

    older: list[Claim]  # live claims made before ours: we withdraw
    younger: list[Claim]  # live claims made after ours: wait until they are gone (they may not have seen us)
    stale: list[Claim]  # expired, or an earlier try of our own task: anyone may delete them


def claim_key(at: datetime, token: str) -> str:
    """Zero-padded microseconds first, so keys sort by claim time (ties by the random token)."""
    return f"{TAG_PREFIX}{int(at.timestamp() * 1_000_000):017d}.{token}"


def claim_value(owner: str, at: datetime | None = None) -> str:
    return json.dumps({"owner": owner, "at": (at or datetime.now(UTC)).isoformat()})


def claims(tags: Mapping[str, str]) -> list[Claim]:
    """Every claim among a registered model's tags, oldest first."""
    found = []
    for key, raw in tags.items():
        if not key.startswith(TAG_PREFIX):
            continue
        try:
            value = json.loads(raw)
            found.append(Claim(key, str(value["owner"]), datetime.fromisoformat(value["at"])))
        except (ValueError, KeyError, TypeError):
            found.append(Claim(key, "(unreadable claim)", _time_of(key)))
    return sorted(found)


def _time_of(key: str) -> datetime | None:
    """The claim time a key carries: an unreadable value (edited by hand) still expires."""
    try:
        return datetime.fromtimestamp(int(key[len(TAG_PREFIX):].split(".", 1)[0]) / 1_000_000, UTC)
    except ValueError:
        return None


def same_task(owner_a: str, owner_b: str) -> bool:
    """Owners are '<dag_id>/<run_id>/<task_id>/<token>': Airflow runs one try of a task at a time, so a
    claim of an earlier try of the same task belongs to a try that is gone."""
    return owner_a.rsplit("/", 1)[0] == owner_b.rsplit("/", 1)[0]


def standing(tags: Mapping[str, str], mine: str, owner: str, now: datetime | None = None) -> Standing:
    """Sort the other claims relative to ours (`mine` = our claim's key, which must be among `tags`)."""
    now = now or datetime.now(UTC)
    older: list[Claim] = []
    younger: list[Claim] = []
    stale: list[Claim] = []
    for claim in claims(tags):
        if claim.key == mine:
            continue
        if claim.expired(now) or same_task(claim.owner, owner):
            stale.append(claim)
        else:
            (older if claim.key < mine else younger).append(claim)
    return Standing(older, younger, stale)
