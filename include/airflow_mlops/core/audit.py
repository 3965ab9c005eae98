"""The champion audit trail, as plain data (no MLflow import).

The registry is the source of truth, so the trail lives in it: every alias move of `champion`
(promotion, rollback) and every human decision (approve, reject) is one registered-model tag
`airflow_mlops.audit.<seq>` holding a JSON event. Tags survive any MLflow backend (SQLite,
PostgreSQL, a server), need no extra table and are shown by the MLflow UI as they are.

Alias moves happen under the registry lease (`core/lease.py`, `core/model_registry.ModelRegistry.lease`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from airflow_mlops.core.lineage import TAG_PREFIX

AUDIT_TAG_PREFIX = f"{TAG_PREFIX}audit."
# experiment_start / experiment_stop: an online experiment began or ended without moving `champion`
# (core/experiments.py); one that promotes writes a "promote".
ACTIONS = ("promote", "rollback", "approve", "reject", "not_promoted", "experiment_start", "experiment_stop")
ALIAS_MOVES = ("promote", "rollback")

# Model-version tags written with each decision (the version's own view of the trail).
TAG_WAS_CHAMPION = f"{TAG_PREFIX}was_champion"
TAG_PROMOTED_AT = f"{TAG_PREFIX}promoted_at"
TAG_PROMOTED_BY = f"{TAG_PREFIX}promoted_by"
TAG_PREVIOUS_CHAMPION = f"{TAG_PREFIX}previous_champion"
TAG_PROMOTION_REASON = f"{TAG_PREFIX}promotion_reason"
TAG_DEMOTED_AT = f"{TAG_PREFIX}demoted_at"
TAG_DECISION = f"{TAG_PREFIX}decision"
TAG_DECIDED_BY = f"{TAG_PREFIX}decided_by"
TAG_DECISION_REASON = f"{TAG_PREFIX}decision_reason"
# One tag per alias move that involved the version, keyed by the move's audit seq (append-only):
# {"role": "champion" | "demoted", action, other (the version it replaced / that replaced it), actor, at, reason,
# dag_id, run_id}. The promoted_* tags above keep the version's FIRST promotion; these hold every move since.
CHAMPION_HISTORY_PREFIX = f"{TAG_PREFIX}champion_history."


@dataclass(frozen=True)
class AuditEvent:
    """One entry of a model's champion history."""

    action: str
    version: str
    previous: str | None
    actor: str
    trigger: str
    dag_id: str | None
    run_id: str | None
    at: str
    reason: str
    seq: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"audit action {self.action!r} is not one of {ACTIONS}")

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "seq"}, sort_keys=True)


def champion_history_tag(seq: int) -> str:
    return f"{CHAMPION_HISTORY_PREFIX}{seq:06d}"


def version_move_tags(event: AuditEvent, version_tags: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The model-version tags an alias move writes, as {version: {key: value}}; nothing is ever overwritten.

    The new champion gets the promoted_* tags only when it has none yet (its first promotion stays on
    record through later rollbacks and re-promotions) and, like the version it replaced, one
    `champion_history.<seq>` entry; the replaced version's `demoted_at` says when it last lost the alias.
    `version_tags` are the new champion's current tags; `event.seq` must be the stored audit seq. The result
    depends only on the event and those tags, so a retry recomputes what an interrupted move left unwritten.
    """
    entry = {"action": event.action, "actor": event.actor, "at": event.at, "reason": event.reason[:2000],
             "dag_id": event.dag_id, "run_id": event.run_id}
    champion: dict[str, str] = {
        TAG_WAS_CHAMPION: "true",
        champion_history_tag(event.seq): json.dumps({"role": "champion", "other": event.previous, **entry},
                                                    sort_keys=True),
    }
    if not version_tags.get(TAG_PROMOTED_AT):
        champion.update({  # promoted_at last: written in this order, it marks the set complete
            TAG_PROMOTED_BY: event.actor,
            TAG_PROMOTION_REASON: event.reason[:4000],
            TAG_PREVIOUS_CHAMPION: event.previous or "none",
            TAG_PROMOTED_AT: event.at,
        })
    tags = {event.version: champion}
    if event.previous and event.previous != event.version:
        tags[event.previous] = {
            TAG_DEMOTED_AT: event.at,
            champion_history_tag(event.seq): json.dumps({"role": "demoted", "other": event.version, **entry},
                                                        sort_keys=True),
        }
    return tags


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def audit_tag(seq: int) -> str:
    """Zero-padded so tags sort in order in the MLflow UI too."""
    return f"{AUDIT_TAG_PREFIX}{seq:06d}"


def history(tags: Mapping[str, str]) -> list[AuditEvent]:
    """The audit events of a registered model's tags, oldest first (unreadable entries skipped)."""
    events = []
    for key, value in tags.items():
        if not key.startswith(AUDIT_TAG_PREFIX) or not key[len(AUDIT_TAG_PREFIX):].isdigit():
            continue
        try:
            data = json.loads(value)
            events.append(AuditEvent(seq=int(key[len(AUDIT_TAG_PREFIX):]), **data))
        except (ValueError, TypeError):
            continue  # a hand-edited tag must not break promotions; it is simply not history
    return sorted(events, key=lambda e: e.seq)


def next_seq(tags: Mapping[str, str]) -> int:
    seqs = [int(k[len(AUDIT_TAG_PREFIX):]) for k in tags if k.startswith(AUDIT_TAG_PREFIX)
            and k[len(AUDIT_TAG_PREFIX):].isdigit()]
    return max(seqs, default=0) + 1


def champions(events: Iterable[AuditEvent]) -> list[str]:
    """Every version that ever held `champion`, in the order they got it (repeats kept)."""
    return [e.version for e in events if e.action in ALIAS_MOVES]


def previous_champion(events: list[AuditEvent], current: str | None) -> str | None:
    """The version that was champion right before `current` got the alias (most recent move)."""
    for event in reversed(events):
        if event.action in ALIAS_MOVES and event.version == current:
            return event.previous
    return None


def move_by_run(events: Iterable[AuditEvent], action: str, version: str, dag_id: str | None,
                run_id: str | None) -> AuditEvent | None:
    """The alias move this Airflow run already made (a cleared task re-running finds it)."""
    if not run_id:
        return None
    for event in events:
        if (event.action, event.version, event.dag_id, event.run_id) == (action, version, dag_id, run_id):
            return event
    return None
