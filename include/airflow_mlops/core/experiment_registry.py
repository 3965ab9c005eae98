"""Start and conclude online experiments on the MLflow registry, under the registry lease, with the audit trail.

The experiment record (core/experiments.py) is a registered-model tag every serving worker routes by, so it is
written like an alias move: holding the model's registry lease, after re-checking what the evidence is about,
and with an audit entry (`experiment_start`, `experiment_stop`, or the `promote` that moves `champion`).
Used by operators/experiments.py; no Airflow import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_mlops.core import audit
from airflow_mlops.core.experiment_readout import Look, after_look
from airflow_mlops.core.experiment_stats import PROMOTE, ROLLBACK
from airflow_mlops.core.experiments import STOPPED, ExperimentRecord, new_record
from airflow_mlops.core.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from airflow_mlops.exceptions import PromotionConflict

if TYPE_CHECKING:
    from airflow_mlops.core.spec import Experiment

log = logging.getLogger(__name__)
# Versions that never get an arm: a person or the evaluation said no, or a canary failed.
_REFUSED = {audit.TAG_DECISION: ("not_promoted", "rejected"), "airflow_mlops.canary": ("failed", "inconclusive")}


@dataclass(frozen=True)
class Who:
    """Who acts, for the lease owner and the audit trail."""

    actor: str
    trigger: str
    dag_id: str | None
    run_id: str | None
    task_id: str | None

    @property
    def owner(self) -> str:
        return f"{self.dag_id}/{self.run_id}/{self.task_id}"

    @property
    def ids(self) -> dict[str, Any]:
        return {"dag_id": self.dag_id, "run_id": self.run_id}

    def event(self, action: str, version: str, previous: str | None, reason: str, at: datetime) -> audit.AuditEvent:
        return audit.AuditEvent(action=action, version=version, previous=previous, actor=self.actor,
                                trigger=self.trigger, dag_id=self.dag_id, run_id=self.run_id,
                                at=at.isoformat(timespec="seconds"), reason=reason[:4000])


def arm_versions(registry: ModelRegistry, spec: Experiment, champion: str, candidate: str) -> list[str]:
    """The versions a new experiment routes: champion and candidate, and for a bandit the others it names."""
    if spec.type == "ab":
        return [champion, candidate]
    if not isinstance(spec.arms, int):
        listed = [str(v) for v in spec.arms]
        for version in listed:
            registry.version(version)  # RollbackRefused naming the existing versions when it does not exist
        return list(dict.fromkeys([champion, candidate, *listed]))
    found = registry.client.search_model_versions(f"name = '{registry.name}'")
    others = sorted((mv for mv in found if str(mv.version) not in (champion, candidate) and _eligible(mv.tags or {})
                     and int(mv.version) < int(candidate)), key=lambda mv: int(mv.version), reverse=True)
    return [champion, candidate, *[str(mv.version) for mv in others[: spec.arms - 2]]]


def _eligible(tags: dict[str, str]) -> bool:
    return not any(tags.get(key) in refused for key, refused in _REFUSED.items())


def start(registry: ModelRegistry, spec: Experiment, *, task: str, primary_metric: str, candidate: str,
          evaluated_champion: str | None, who: Who, at: datetime, run_id: str | None) -> ExperimentRecord:
    """Write a new running record (a running one is superseded) and its `experiment_start` audit entry.

    Under the lease it re-checks that `challenger` is still `candidate` and `champion` still the version the
    evaluation compared with (PromotionConflict otherwise: the evidence is about a registry that is gone).
    """
    with registry.lease(who.owner):
        champion = registry.alias_version(CHAMPION)
        check_aliases(registry, candidate, champion, evaluated_champion)
        assert champion is not None  # the caller promotes directly when there is no champion
        arms = arm_versions(registry, spec, champion, candidate)
        current = registry.experiment()
        if current is not None and current.running:
            reason = f"superseded by the experiment of v{candidate} (a newer training run); the champion stays"
            registry.record(who.event("experiment_stop", current.candidate, current.champion, reason, at))
            log.warning("%s: experiment %s %s", registry.name, current.id, reason)
        record = new_record(spec, task=task, primary_metric=primary_metric, champion=champion, candidate=candidate,
                            arms=arms, at=at, started_by=who.ids, run_id=run_id)
        registry.write_experiment(record)
        shares = ", ".join(f"v{v} {s:.0%}" for v, s in record.arms.items())
        deadline = record.deadline().strftime("%Y-%m-%d %H:%M")
        registry.record(who.event("experiment_start", candidate, champion, (
            f"{spec.type} experiment {record.id} on {record.metric}: {shares}; decides by {deadline} UTC at the "
            f"latest (alpha {record.alpha:g}, min_labels {record.min_labels} per arm)"), at))
    return record


def check_aliases(registry: ModelRegistry, candidate: str, champion: str | None, evaluated: str | None) -> None:
    challenger = registry.alias_version(CHALLENGER)
    if challenger != candidate:
        raise PromotionConflict(f"{registry.name}: alias challenger now points at v{challenger}, not the evaluated "
                                f"v{candidate}: a newer training run registered another challenger; no experiment "
                                "was started")
    if (champion or None) != (evaluated or None):
        raise PromotionConflict(f"{registry.name}: champion moved from v{evaluated} (compared in evaluation) to "
                                f"v{champion} before the experiment of v{candidate} could start; nothing was started. "
                                "Re-run the training DAG to evaluate against the new champion")


def first_champion(registry: ModelRegistry, candidate: str, evaluated_champion: str | None, who: Who,
                   at: datetime, summary: str) -> audit.AuditEvent:
    """No champion to experiment against: `candidate` becomes the first champion (repeats nothing on a retry)."""
    done = audit.move_by_run(registry.history(), "promote", candidate, who.dag_id, who.run_id)
    if done is not None:
        registry.tag_move(done)  # an earlier try may have died after the audit entry
        return done
    with registry.lease(who.owner):
        check_aliases(registry, candidate, registry.alias_version(CHAMPION), evaluated_champion)
        return registry.move_champion(who.event("promote", candidate, None, (
            f"no champion to run an experiment against: v{candidate} becomes the first champion ({summary})"), at))


def conclude(registry: ModelRegistry, record_id: str, look: Look, who: Who) -> tuple[ExperimentRecord,
                                                                                     audit.AuditEvent | None]:
    """Record a look under the lease: promote (champion moves), rollback (the experiment ends), or keep going."""
    at = datetime.fromisoformat(look.at)
    with registry.lease(who.owner):
        current = registry.experiment()
        if current is None or current.id != record_id or not current.running:
            state = "no record" if current is None else f"experiment {current.id} is {current.status}"
            raise PromotionConflict(f"{registry.name}: experiment {record_id} is no longer running ({state}): another "
                                    "task ended or replaced it while this readout ran; nothing was written")
        updated = after_look(current, look, who.ids)
        event = None
        if look.decision == PROMOTE:
            updated, event = _promote(registry, current, updated, look, who, at)
        elif look.decision == ROLLBACK:
            event = registry.record(who.event("experiment_stop", current.candidate, current.champion,
                                              f"experiment {current.id}: {look.reason}", at))
        registry.write_experiment(updated)
    return updated, event


def _promote(registry: ModelRegistry, current: ExperimentRecord, updated: ExperimentRecord, look: Look, who: Who,
             at: datetime) -> tuple[ExperimentRecord, audit.AuditEvent]:
    """Move champion to the winner (an earlier try of this run may have moved it already)."""
    winner = str(look.winner)
    done = audit.move_by_run(registry.history(), "promote", winner, who.dag_id, who.run_id)
    if done is not None:
        registry.tag_move(done)
        return updated, done
    champion = registry.alias_version(CHAMPION)
    reason = f"experiment {current.id}: {look.reason}"
    if champion != current.champion:
        why = (f"champion moved from v{current.champion} to v{champion} during the experiment (a rollback or "
               f"promotion by hand): its evidence no longer applies; v{winner} was not promoted")
        stopped = replace(updated, status=STOPPED, decision="stop", reason=f"{why} ({look.reason})")
        return stopped, registry.record(who.event("experiment_stop", winner, champion, why, at))
    return updated, registry.move_champion(who.event("promote", winner, champion, reason, at))
