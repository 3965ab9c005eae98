"""Move the `champion` alias: promotion after a passed evaluation, and rollback by hand.

Both hold the model's registry lease while they check and move, write the audit trail
(core/audit.py) and emit `mlops.model.<name>.champion` with {version, run_id, metrics, previous}.
A cleared or retried task finds the move its own Airflow run already made and repeats nothing: it only
writes the version tags and releases the lease that a try which died half-way (registry outage) left undone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator

from airflow_mlops.boundary import TaskBoundary

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.core.audit import AuditEvent
    from airflow_mlops.hooks.mlflow_registry import ModelRegistry
    from airflow_mlops.openlineage.datasets import Lineage


def actor_of(context: Context) -> str:
    """Who caused this: the user who triggered the run, else what kind of run it is."""
    dag_run = context.get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None)
    run_type = getattr(dag_run, "run_type", None)
    return str(user) if user else f"airflow:{getattr(run_type, 'value', run_type) or 'adhoc'}"


def trigger_of(context: Context) -> str:
    """What started the run: its type plus the asset events it consumed (names and sources)."""
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", None)
    text = str(getattr(run_type, "value", run_type) or "adhoc")
    try:
        events = context.get("triggering_asset_events") or {}
        names = sorted({getattr(key, "name", str(key)) for key in events})
    except Exception:  # noqa: BLE001 - an accessor that cannot be read must not stop a promotion
        names = []
    return f"{text} by {', '.join(names)}" if names else text


def skip_not_promoted(mlflow_conn_id: str, model_name: str, version: str, evaluation: Mapping[str, Any],
                      context: Context) -> NoReturn:
    """Tag the version not_promoted with the evaluation's reasons, then skip (approval and promotion)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.hooks.mlflow_registry import ModelRegistry

    why = "; ".join(evaluation.get("reasons") or ["the evaluation did not recommend promotion"])
    with MLflowHook(mlflow_conn_id).activated() as client:
        ModelRegistry(client, model_name).tag_decision(version, "not_promoted", actor_of(context), why)
    raise AirflowSkipException(f"{model_name} v{version} stays challenger: {why}")


def _run_ids(context: Context) -> tuple[str | None, str | None, str | None]:
    ti = context.get("ti")
    dag_run = context.get("dag_run")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None)
    return dag_id, context.get("run_id") or getattr(dag_run, "run_id", None), getattr(ti, "task_id", None)


class _ChampionMoveOperator(TaskBoundary, BaseOperator):
    """Shared machinery: lease, idempotency, audit, asset event."""

    ui_color = "#d9f2d9"
    action = "promote"

    def __init__(self, *, model_name: str, mlflow_conn_id: str = "mlflow_default", **kwargs: Any) -> None:
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.model_name = model_name
        self.mlflow_conn_id = mlflow_conn_id

    def _registry(self, client: Any) -> ModelRegistry:
        from airflow_mlops.hooks.mlflow_registry import ModelRegistry

        return ModelRegistry(client, self.model_name)

    def _move(self, context: Context, target: str, reason: str, check: Any) -> dict[str, Any]:
        """Under the lease: `check(registry, current)` refuses, or returns the previous champion to
        record; then the alias moves once."""
        from airflow_mlops.core import audit
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.hooks.mlflow_registry import CHAMPION

        dag_id, run_id, task_id = _run_ids(context)
        hook = MLflowHook(self.mlflow_conn_id)
        hook.check_backend()
        with hook.activated() as client:
            registry = self._registry(client)
            done = audit.move_by_run(registry.history(), self.action, target, dag_id, run_id)
            current = registry.alias_version(CHAMPION)
            if done is not None and current == target:
                self.log.info("%s v%s already made champion by this run (audit #%s); completing its version "
                              "tags and lease only", self.model_name, target, done.seq)
                registry.tag_move(done)  # an earlier try may have died after the audit entry
                registry.release_task_lease(f"{dag_id}/{run_id}/{task_id}")
                return self._remembered(context, hook.settings.registry_uri, self._result(registry, done, context))
            with registry.lease(f"{dag_id}/{run_id}/{task_id}"):
                current = registry.alias_version(CHAMPION)
                previous = check(registry, current)
                event = registry.move_champion(audit.AuditEvent(
                    action=self.action, version=target, previous=previous, actor=actor_of(context),
                    trigger=trigger_of(context), dag_id=dag_id, run_id=run_id, at=audit.now_iso(), reason=reason,
                ))
        return self._remembered(context, hook.settings.registry_uri, self._result(registry, event, context))

    def _remembered(self, context: Context, registry_uri: str, result: dict[str, Any]) -> dict[str, Any]:
        from airflow_mlops.openlineage.record import remember

        remember(self, context, {"result": result, "registry_uri": registry_uri})
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """The version made champion, read and written: its `airflowMlopsModelVersion` facet gains the alias
        `champion` (input: the version as registered; the previous champion is a run facet)."""
        from airflow_mlops.hooks.mlflow_registry import CHAMPION
        from airflow_mlops.openlineage.datasets import lineage, model_version_dataset
        from airflow_mlops.openlineage.record import recall

        recorded = recall(self, task_instance)
        if not recorded:  # skipped (not promotable) or refused: no alias moved
            return None
        result, registry = recorded["result"], recorded["registry_uri"]
        version = str(result["version"])
        read = model_version_dataset(registry, self.model_name, version, run_id=result["run_id"])
        champion = model_version_dataset(registry, self.model_name, version, aliases=[CHAMPION],
                                         run_id=result["run_id"])
        return lineage([read], [champion], {k: result[k] for k in ("action", "previous", "audit_seq")})

    def _result(self, registry: ModelRegistry, event: AuditEvent, context: Context) -> dict[str, Any]:
        version = registry.version(event.version)
        metrics: dict[str, float] = {}
        if version.run_id:
            metrics = dict(registry.client.get_run(version.run_id).data.metrics)
        result = {"name": self.model_name, "version": event.version, "previous": event.previous,
                  "run_id": version.run_id, "metrics": metrics, "audit_seq": event.seq, "action": event.action,
                  "reason": event.reason}
        self._annotate_outlets(context, result)
        return result

    def _annotate_outlets(self, context: Context, result: Mapping[str, Any]) -> None:
        from airflow.sdk import Asset

        for outlet in self.outlets or []:
            if isinstance(outlet, Asset) and outlet.name == f"mlops.model.{self.model_name}.champion":
                context["outlet_events"][outlet].extra = {
                    key: result[key] for key in ("version", "previous", "run_id", "metrics", "action")
                }


class MLflowPromoteModelOperator(_ChampionMoveOperator):
    """Make the evaluated challenger the champion, if the evaluation says so and nothing moved since.

    Skips (AirflowSkipException, reasons logged and tagged on the version) when the evaluation's
    verdict is not to promote. Otherwise, holding the registry lease, it re-checks that alias
    `challenger` still points at `version` and that `champion` is still the version the challenger
    was compared with, then moves `champion` in one call and records the audit trail.
    PromotionConflict (no retry) when either moved: the evidence is about a registry that is gone.

    :param model_name: registered model name. (templated)
    :param version: the registered challenger version (register task's "version"). (templated)
    :param evaluation: the evaluation task's result (promote, champion_version, reasons, summary). (templated)
    :param reason: free text for the audit trail; the evaluation summary when empty. (templated)
    :param registered: the register task's result; when it is a repeat (the run registered nothing because
        an existing version has its fingerprint) the task skips with register's reason before touching the
        registry (no tag, no alias move, no audit entry). (templated)
    :param mlflow_conn_id: Airflow connection of type "mlflow".
    :return: {name, version, previous, run_id, metrics, audit_seq, action, reason}
    """

    template_fields: Sequence[str] = ("model_name", "version", "evaluation", "reason", "registered")
    template_fields_renderers = {"evaluation": "json", "registered": "json"}

    def __init__(self, *, version: Any, evaluation: Any, reason: str = "", registered: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = version
        self.evaluation = evaluation
        self.reason = reason
        self.registered = registered

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.xcom import as_dict
        from airflow_mlops.operators.registry import skip_if_repeat

        skip_if_repeat(self.registered, "promotion")
        evaluation = as_dict(self.evaluation)
        target = str(self.version)
        if not evaluation.get("promote"):
            skip_not_promoted(self.mlflow_conn_id, self.model_name, target, evaluation, context)
        expected = evaluation.get("champion_version")

        def check(registry: ModelRegistry, current: str | None) -> str | None:
            from airflow_mlops.exceptions import PromotionConflict
            from airflow_mlops.hooks.mlflow_registry import CHALLENGER

            challenger = registry.alias_version(CHALLENGER)
            if challenger != target:
                raise PromotionConflict(
                    f"{self.model_name}: alias challenger now points at v{challenger}, not the evaluated v{target}; "
                    "a newer training run registered another challenger; this run's evidence is stale; "
                    "champion untouched"
                )
            last = next((e for e in reversed(registry.history()) if e.action in ("promote", "rollback")), None)
            if current == target and last is not None and last.version == target:
                raise PromotionConflict(
                    f"{self.model_name}: v{target} is champion already, moved there by {last.dag_id}/{last.run_id} "
                    f"(audit #{last.seq}) while this run waited for the registry lease; nothing to do here"
                )
            if current == target:
                # An earlier try moved the alias and died before writing the trail: finish its job.
                self.log.warning("%s v%s is champion already, without this run's audit entry; recording it",
                                 self.model_name, target)
                return expected
            if (current or None) != (expected or None):
                raise PromotionConflict(
                    f"{self.model_name}: champion moved from v{expected} (compared in evaluation) to v{current} "
                    f"before v{target} could be promoted (a concurrent promotion or rollback); champion untouched; "
                    "re-run the training DAG to evaluate against the new champion"
                )
            return current

        reason = self.reason or evaluation.get("summary") or "evaluation passed"
        return self._move(context, target, reason, check)


class MLflowRollbackModelOperator(_ChampionMoveOperator):
    """Point `champion` back at an earlier champion: a version number, or "previous".

    "previous" = the version that was champion right before the current one got the alias (from
    the audit trail). The target must exist and must have been champion before (tag
    `airflow_mlops.was_champion` or an audit entry) — rollback never promotes an unvetted version.

    :param model_name: registered model name. (templated)
    :param target: a version number or "previous". (templated)
    :param reason: why, for the audit trail (required). (templated)
    :return: {name, version, previous, run_id, metrics, audit_seq, action, reason}
    """

    template_fields: Sequence[str] = ("model_name", "target", "reason")
    action = "rollback"

    def __init__(self, *, target: Any = "previous", reason: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.reason = reason

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.hooks.mlflow import MLflowHook

        if not str(self.reason).strip():
            from airflow_mlops.exceptions import RollbackRefused

            raise RollbackRefused("reason: a rollback needs a reason for the audit trail; pass params.reason")
        with MLflowHook(self.mlflow_conn_id).activated() as client:
            target = self._resolve(self._registry(client), context)
        self.log.info("Rolling %s back to v%s: %s", self.model_name, target, self.reason)
        return self._move(context, target, str(self.reason), lambda registry, current: self._check(current, target))

    def _check(self, current: str | None, target: str) -> str | None:
        from airflow_mlops.exceptions import RollbackRefused

        if current == target:
            raise RollbackRefused(f"{self.model_name} v{target} is already champion; nothing to roll back")
        return current

    def _resolve(self, registry: ModelRegistry, context: Context) -> str:
        from airflow_mlops.core import audit
        from airflow_mlops.exceptions import RollbackRefused
        from airflow_mlops.hooks.mlflow_registry import CHAMPION

        history = registry.history()
        dag_id, run_id, _ = _run_ids(context)
        # A cleared rollback task must not resolve "previous" again from the state it created itself.
        mine = [e for e in history if e.action == self.action and (e.dag_id, e.run_id) == (dag_id, run_id)]
        if run_id and mine:
            return mine[-1].version
        wanted = str(self.target).strip().lower().removeprefix("v")
        if wanted == "previous":
            current = registry.alias_version(CHAMPION)
            previous = audit.previous_champion(history, current)
            if previous is None:
                raise RollbackRefused(
                    f"{self.model_name}: champion v{current} has no previous champion in the audit trail; "
                    f"pass a version number as target (former champions: {sorted(set(audit.champions(history)))})"
                )
            wanted = previous
        if not wanted.isdigit():
            raise RollbackRefused(f"target: got {self.target!r}; use a version number like 3, or 'previous'")
        version = registry.version(wanted)
        if wanted not in audit.champions(history) and (version.tags or {}).get(audit.TAG_WAS_CHAMPION) != "true":
            raise RollbackRefused(
                f"{self.model_name} v{wanted} was never champion, so rollback refuses it; former champions: "
                f"{sorted(set(audit.champions(history)), key=int) or 'none'}; promote new versions through the "
                "training DAG's evaluation instead"
            )
        return wanted
