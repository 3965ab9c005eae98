"""Alias moves on the MLflow model registry, guarded by a lease and written to the audit trail.

Used by the promote, rollback and approval operators. Takes an `MlflowClient` (from MLflowHook);
mlflow itself is imported lazily so DAG parsing never pays for it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_mlops.core import audit
from airflow_mlops.core.lineage import TAG_PREFIX
from airflow_mlops.exceptions import PromotionConflict, RollbackRefused

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
# Long enough that a competing claim made at the same moment is visible when we read back,
# short against a training run. See core/audit.py for why this makes the second writer fail.
LEASE_SETTLE_SECONDS = 1.0


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

    def __init__(self, client: MlflowClient, name: str, settle_seconds: float = LEASE_SETTLE_SECONDS) -> None:
        self.client = client
        self.name = name
        self.settle_seconds = settle_seconds

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
        """Hold the model's promotion lease for the block; PromotionConflict when someone else does."""
        owner = f"{owner_prefix}/{uuid.uuid4().hex[:12]}"
        self._claim(owner)
        try:
            yield owner
        finally:
            self._release(owner)

    def _claim(self, owner: str) -> None:
        from mlflow.exceptions import MlflowException

        self._refuse_if_held(owner, "holds")
        try:
            self.client.set_registered_model_tag(self.name, audit.LEASE_TAG, audit.lease_value(owner))
        except MlflowException:
            # SQL stores insert a new tag row: two claims at the same instant collide on its unique
            # key. The loser sees the winner's lease below; anything else is a real registry error.
            self._refuse_if_held(owner, "claimed")
            raise
        time.sleep(self.settle_seconds)
        self._refuse_if_held(owner, "claimed")

    def _refuse_if_held(self, owner: str, verb: str) -> None:
        holder = audit.lease_of(self.tags())
        if holder and holder["owner"] != owner and not (verb == "holds" and audit.same_task(holder["owner"], owner)):
            raise PromotionConflict(
                f"{self.name}: another promotion or rollback ({holder['owner']}) {verb} the registry lease since "
                f"{holder['at']}; aliases were left untouched. Wait for it to finish, then re-run this task "
                f"(a lease older than {int(audit.LEASE_TTL.total_seconds() // 60)} min is treated as abandoned)"
            )

    def _release(self, owner: str) -> None:
        holder = audit.lease_of(self.tags())
        if holder and holder["owner"] == owner:
            self.client.delete_registered_model_tag(self.name, audit.LEASE_TAG)

    def release_task_lease(self, owner_prefix: str) -> None:
        """Release the lease an earlier try of this task (`owner_prefix` = dag/run/task) died holding."""
        holder = audit.lease_of(self.tags(), ttl=timedelta.max)
        if holder and audit.same_task(holder["owner"], f"{owner_prefix}/-"):
            self.client.delete_registered_model_tag(self.name, audit.LEASE_TAG)

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
        self.client.set_registered_model_alias(self.name, CHAMPION, event.version)
        stored = self.record(event)
        self.tag_move(stored)
        log.info("%s: champion v%s -> v%s (%s by %s)", self.name, event.previous, event.version,
                 event.action, event.actor)
        return stored

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
