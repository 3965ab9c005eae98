"""Alias moves on the MLflow model registry, guarded by a lease and written to the audit trail.

Used by the promote, rollback and approval operators, and by the serving app to follow an alias (reads
only). Takes an `MlflowClient` (from `core.mlflow_store.MLflowStore` or `hooks.mlflow.MLflowHook`); no
Airflow import, and mlflow itself is imported lazily so DAG parsing never pays for it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_mlops.core import audit
from airflow_mlops.core import lease as leases
from airflow_mlops.core.lineage import TAG_PREFIX
from airflow_mlops.exceptions import PromotionConflict, RollbackRefused

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from airflow_mlops.core.experiments import ExperimentRecord

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


def ensure_registered_model(client: MlflowClient, name: str, description: str | None = None) -> bool:
    """Create registered model `name` (tagged as ours) unless it exists; True when this call created it.

    A parallel DAG run may create it between our get and create: that counts as existing.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return False
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        client.create_registered_model(name, tags={f"{TAG_PREFIX}managed_by": "airflow-mlops"},
                                       description=description)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
        return False
    return True


class ModelRegistry:
    """Aliases, versions and the audit trail of one registered model."""

    def __init__(self, client: MlflowClient, name: str) -> None:
        self.client = client
        self.name = name
        self._held: str | None = None  # our lease claim's tag key while we hold the lease

    # ------------------------------------------------------------------ reads
    def tags(self) -> dict[str, str]:
        return dict(self.client.get_registered_model(self.name).tags or {})

    def alias_version(self, alias: str) -> str | None:
        """The version an alias points at, None when the alias (or the model) does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def version(self, version: str) -> ModelVersion:
        """The model version, or RollbackRefused (a RegistryError) naming the versions that do exist."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise
        known = sorted(int(mv.version) for mv in self.client.search_model_versions(f"name = '{self.name}'"))
        raise RollbackRefused(f"{self.name} has no version {version!r}; existing versions: {known or 'none'}") from None

    def history(self) -> list[audit.AuditEvent]:
        return audit.history(self.tags())

    def experiment(self) -> ExperimentRecord | None:
        """The online-experiment record (core/experiments.py); None when there is none."""
        from airflow_mlops.core.experiments import read_record

        return read_record(self.tags())

    def input_example(self, version: str, rows: int = 5) -> list[dict[str, Any]] | None:
        """Up to `rows` rows of the input example logged with the version (NaN as None); None when it has none."""
        import math

        from mlflow.models import Model

        model = Model.load(f"models:/{self.name}/{version}")
        if not model.saved_input_example_info:
            return None
        example: Any = model.load_input_example()
        records = example.head(rows).to_dict(orient="records") if hasattr(example, "to_dict") else None
        if not records:
            return None
        return [{str(k): None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
                for row in records]

    # ------------------------------------------------------------------ lease
    @contextmanager
    def lease(self, owner_prefix: str) -> Iterator[str]:
        """Hold the model's registry lease for the block; PromotionConflict when another task holds it.

        `owner_prefix` is '<dag_id>/<run_id>/<task_id>'. Protocol: write our own claim (a tag no one else
        writes), then read every claim; go on only when a read made after our claim landed shows no other
        live claim. An older live claim makes us withdraw; younger ones we wait out (`leases.WAIT`).

        Why two holders can never both go on, whatever the latency of any write: say A and B both went on,
        and A's claim landed first. B's deciding read came after B's claim landed, so after A's claim landed,
        and A was still holding (a claim goes only when its holder releases or withdraws), so B saw A's claim
        and did not go on. This needs only that a read which starts after a write returned sees that write:
        true of the SQL stores (every MLflow call commits before it returns; SQLite and PostgreSQL reads see
        committed rows), of `mlflow server` in front of them (it answers after the store call returned) and
        of the local-filesystem store. It needs no compare-and-set, which registry tags and aliases lack.
        Waiting is for liveness only: two simultaneous claimants see each other, the younger withdraws and
        the older goes on, instead of both giving up.

        The one timing assumption left is the TTL every lease has (a dead holder and a slow one look alike):
        a claim older than `leases.TTL` (10 min, against seconds of work) is treated as abandoned, which also
        needs the workers' clocks to agree within minutes. `move_champion` re-reads our claim right before
        the alias moves and refuses if it expired or someone removed it; the callers re-check the aliases
        (challenger still the evaluated version, champion still the compared one) inside the lease.

        Why not Airflow pools or `max_active_runs`: the train DAG's promote and canary teardown and the
        `<model>__rollback` DAG are different DAGs (max_active_runs=1 each), a pool must exist before any
        task uses it (one per model, outside our tasks' reach: tasks may not touch the metadata DB), a
        canary deploy would hold it for its whole window, and none of them covers a second Airflow or a
        person using MLflow directly. Why not a lock model (`create_registered_model(f"{name}.lock")`,
        atomic on SQL stores): it shows up as a model in every listing, and reclaiming an abandoned one is
        check-then-delete again; an expired claim here is its own tag, so deleting it touches no one else.
        """
        owner = f"{owner_prefix}/{uuid.uuid4().hex[:12]}"
        key = self._claim(owner)
        self._held = key
        try:
            yield owner
        finally:
            self._held = None
            self.client.delete_registered_model_tag(self.name, key)

    def _claim(self, owner: str) -> str:
        """Write our claim and wait for our turn; our claim is withdrawn when we do not get it."""
        key = leases.claim_key(datetime.now(UTC), owner.rsplit("/", 1)[-1])
        self.client.set_registered_model_tag(self.name, key, leases.claim_value(owner))
        try:
            self._await_turn(key, owner)
        except PromotionConflict:
            self.client.delete_registered_model_tag(self.name, key)
            raise
        return key

    def _await_turn(self, key: str, owner: str) -> None:
        deadline = time.monotonic() + leases.WAIT.total_seconds()
        pause = 0.05
        while True:
            tags = self.tags()
            if key not in tags:
                raise self._lost(key, "removed")
            standing = leases.standing(tags, key, owner)
            for claim in standing.stale:  # only its own (dead) holder ever used this key
                log.info("%s: removing the abandoned registry lease claim of %s (%s)", self.name, claim.owner,
                         claim.at)
                self.client.delete_registered_model_tag(self.name, claim.key)
            if standing.older:
                raise self._conflict(standing.older[0], "holds")
            if not standing.younger:
                return
            if time.monotonic() >= deadline:
                raise self._conflict(standing.younger[0], f"kept for over {leases.WAIT.total_seconds():.0f} s")
            time.sleep(pause)  # polling: a younger claimant withdraws or finishes in seconds
            pause = min(pause * 2, 1.0)

    def _conflict(self, holder: leases.Claim, verb: str) -> PromotionConflict:
        since = holder.at.isoformat() if holder.at else "an unknown time"
        return PromotionConflict(
            f"{self.name}: another task ({holder.owner}) {verb} the registry lease since {since}; aliases were "
            f"left untouched. Wait for it to finish, then re-run this task (a claim older than "
            f"{int(leases.TTL.total_seconds() // 60)} min is treated as abandoned; if its owner is gone, delete "
            f"the registered-model tag {holder.key})"
        )

    def _check_held(self) -> None:
        """Refuse to move an alias when our claim expired or was removed (we were too slow, and someone
        judged it abandoned): the move is ours only while the claim is live."""
        if self._held is None:
            return
        mine = next((c for c in leases.claims(self.tags()) if c.key == self._held), None)
        if mine is None or mine.expired(datetime.now(UTC)):
            raise self._lost(self._held, "removed" if mine is None else "expired")

    def _lost(self, key: str, how: str) -> PromotionConflict:
        return PromotionConflict(
            f"{self.name}: this task lost its registry lease (claim {key} {how}: another task took it for "
            f"abandoned, older than {int(leases.TTL.total_seconds() // 60)} min or from a clock that far off) "
            "before moving an alias; aliases were left untouched. Check the workers' clocks, then re-run this task"
        )

    def release_task_lease(self, owner_prefix: str) -> None:
        """Remove the claims earlier tries of this task (`owner_prefix` = dag/run/task) died holding."""
        for claim in leases.claims(self.tags()):
            if leases.same_task(claim.owner, f"{owner_prefix}/-"):
                self.client.delete_registered_model_tag(self.name, claim.key)

    # ------------------------------------------------------------------ writes
    def record(self, event: audit.AuditEvent) -> audit.AuditEvent:
        """Append an event to the trail (call while holding the lease for alias moves)."""
        stored = replace(event, seq=audit.next_seq(self.tags()))
        self.client.set_registered_model_tag(self.name, audit.audit_tag(stored.seq), stored.to_json())
        return stored

    def move_champion(self, event: audit.AuditEvent) -> audit.AuditEvent:
        """Point `champion` at event.version (one registry call), then write the trail and tags.

        Version tags are appended, never replaced: the first promotion's promoted_* tags stay (a rollback
        or re-promotion adds a `champion_history.<seq>` entry instead); see `audit.version_move_tags`.
        """
        self._check_held()
        self.client.set_registered_model_alias(self.name, CHAMPION, event.version)
        stored = self.record(event)
        self.tag_move(stored)
        log.info("%s: champion v%s -> v%s (%s by %s)", self.name, event.previous, event.version,
                 event.action, event.actor)
        return stored

    def write_experiment(self, record: ExperimentRecord) -> None:
        """Replace the experiment record; only under the lease (every serving worker routes by it)."""
        from airflow_mlops.core.experiments import TAG

        if self._held is None:
            raise PromotionConflict(f"{self.name}: the experiment record is written only under the registry lease "
                                    "(ModelRegistry.lease), like alias moves; nothing was written")
        self._check_held()
        self.client.set_registered_model_tag(self.name, TAG, record.to_json())

    def tag_move(self, stored: audit.AuditEvent) -> None:
        """Write the version tags of a recorded move that the versions do not carry yet.

        Also how a retry completes a move whose try died after the audit entry: the same stored event gives
        the same tags, and only the missing or different ones are written.
        """
        current = dict(self.client.get_model_version(self.name, stored.version).tags or {})
        for version, tags in audit.version_move_tags(stored, current).items():
            have = current if version == stored.version else dict(
                self.client.get_model_version(self.name, version).tags or {})
            for key, value in tags.items():
                if have.get(key) != value:
                    self.client.set_model_version_tag(self.name, version, key, value)

    def tag_decision(self, version: str, decision: str, actor: str, reason: str) -> None:
        for key, value in ((audit.TAG_DECISION, decision), (audit.TAG_DECIDED_BY, actor),
                           (audit.TAG_DECISION_REASON, reason[:4000] or "(no reason given)")):
            self.client.set_model_version_tag(self.name, version, key, value)
