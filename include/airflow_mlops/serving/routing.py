"""Routing of the serving app: the slot snapshot (primary + canary/shadow + experiment arms) and sticky buckets.

`Slots` is what serves right now; `ModelManager` replaces it as a whole (one attribute assignment),
so `route()` reads one consistent snapshot and never takes a lock. Canary routing is sticky per
entity: `canary_bucket` (blake2b of the key text, not Python's per-process salted `hash()`) is the
same in every replica, process and run. An online experiment (`Arms`, from the registry's experiment
record) splits entity keys over 2..N versions by cumulative shares of `arm_bucket`, salted with the
experiment id: sticky within an experiment, and a fresh split for the next one (the same entities are
not the treatment group of every experiment).
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops.serving.loaded import LoadedModel

MODES = ("full", "canary", "shadow")
_HASH_SPACE = float(2**64)


@dataclass(frozen=True)
class Arms:
    """The arms of a running experiment: `models[i]` answers the keys whose bucket is below `bounds[i]`."""

    experiment_id: str
    route: str  # the route label of its rows: "experiment:<id>"
    models: tuple[LoadedModel, ...]
    shares: tuple[float, ...]  # as the record gives them
    bounds: tuple[float, ...]  # cumulative shares; the last is 1.0

    @classmethod
    def of(cls, experiment_id: str, route: str, models: Sequence[LoadedModel], shares: Sequence[float]) -> Arms:
        if len(models) != len(shares) or not models:
            raise ValueError(f"experiment {experiment_id}: {len(models)} models for {len(shares)} shares")
        total, bounds = float(sum(shares)), []
        running = 0.0
        for share in shares:
            running += float(share) / total
            bounds.append(running)
        bounds[-1] = 1.0  # rounding must never leave a bucket without an arm
        return cls(experiment_id, route, tuple(models), tuple(float(s) for s in shares), tuple(bounds))

    def pick(self, entity_key: str) -> LoadedModel:
        return self.models[min(bisect_right(self.bounds, arm_bucket(self.experiment_id, entity_key)),
                               len(self.models) - 1)]

    def describe(self) -> dict[str, Any]:
        return {"id": self.experiment_id, "route": self.route,
                "arms": [{"version": m.version, "share": s} for m, s in zip(self.models, self.shares, strict=True)]}


@dataclass(frozen=True)
class Slots:
    """What serves right now; replaced as a whole, never mutated."""

    primary: LoadedModel
    secondary: LoadedModel | None = None
    mode: str = "single"
    fraction: float = 0.0
    experiment: Arms | None = None  # routes every key while set, except during a canary

    def route(self, entity_key: str) -> tuple[LoadedModel, LoadedModel | None, str]:
        """(model that answers, model to shadow-score or None, route label "primary"|"canary"|"experiment:<id>")."""
        if self.experiment is not None and self.mode != "canary":
            arms = self.experiment
            return arms.pick(entity_key), self.secondary if self.mode == "shadow" else None, arms.route
        if self.secondary is None:
            return self.primary, None, "primary"
        if self.mode == "shadow":
            return self.primary, self.secondary, "primary"
        if canary_bucket(entity_key) < self.fraction:
            return self.secondary, None, "canary"
        return self.primary, None, "primary"


def canary_bucket(entity_key: str) -> float:
    """Stable position of an entity key in [0, 1): the same in every process, machine and run."""
    digest = hashlib.blake2b(entity_key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


def arm_bucket(experiment_id: str, entity_key: str) -> float:
    """Stable position of an entity key in [0, 1) within one experiment: blake2b of "<experiment id>:<key>".

    (A prefix, not blake2b's `key=`: keying costs one more compression per call, ~2.8 vs ~1.5 us here.)"""
    digest = hashlib.blake2b(f"{experiment_id}:{entity_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


def entity_key_text(entity: Mapping[str, Any]) -> str:
    """Canonical text of an entity's keys ({"driver_id": 1001} -> '{"driver_id":1001}') for `route()`."""
    return json.dumps(dict(entity), sort_keys=True, separators=(",", ":"), default=str)
