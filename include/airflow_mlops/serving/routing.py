"""Routing of the serving app: the slot snapshot (primary + canary/shadow) and sticky canary buckets.

`Slots` is what serves right now; `ModelManager` replaces it as a whole (one attribute assignment),
so `route()` reads one consistent snapshot and never takes a lock. Canary routing is sticky per
entity: `canary_bucket` (blake2b of the key text, not Python's per-process salted `hash()`) is the
same in every replica, process and run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops.serving.loaded import LoadedModel

MODES = ("full", "canary", "shadow")
_HASH_SPACE = float(2**64)


@dataclass(frozen=True)
class Slots:
    """What serves right now; replaced as a whole, never mutated."""

    primary: LoadedModel
    secondary: LoadedModel | None = None
    mode: str = "single"
    fraction: float = 0.0

    def route(self, entity_key: str) -> tuple[LoadedModel, LoadedModel | None, str]:
        """(model that answers, model to shadow-score or None, route label "primary"|"canary")."""
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


def entity_key_text(entity: Mapping[str, Any]) -> str:
    """Canonical text of an entity's keys ({"driver_id": 1001} -> '{"driver_id":1001}') for `route()`."""
    return json.dumps(dict(entity), sort_keys=True, separators=(",", ":"), default=str)
