"""DeployModelOperator: put a registered model version in front of traffic (serving app or Kubernetes).

target "local" talks to a running serving app (airflow_mlops.serving) over its admin API:
- mode "full": POST /admin/deploy, wait until GET /ready reports the version, then a smoke prediction:
  `smoke_request` through POST /predict, else the version's MLflow input example through /v2 infer.
  The app loads and warms the version before swapping, so a version that cannot load is refused
  (HTTP 409, reason in the task error) while the old model keeps serving.
- mode "canary": deploy the version to `traffic` of the entity keys, snapshot the canary's metrics,
  and defer to CanaryTrigger for the window (worker slot freed). Healthy: deploy it 100 %.
  Breached (or no verdict): restore `champion` to the version that held it before this one (from
  the audit trail, under the registry lease, action "rollback"), deploy that version 100 % (the
  canary is dropped), tag the bad version `airflow_mlops.canary=failed` with the reason, record the
  rollback in XCom `champion_rollback`, and fail the task (CanaryFailed, no retry). A retried task
  that finds the tag repeats the restore only. A failed task sends no asset events, so
  ChampionRollbackEventOperator (a teardown after it) turns that XCom into the event for
  `mlops.model.<name>.champion` that batch inference and other champion-scheduled DAGs need.

target "kubernetes": render the Deployment + Service (core/k8s_manifests.py), apply them with
server-side apply through the cncf provider's KubernetesHook, wait for the rollout, and on a
rollout that does not complete patch the previous pod template back (RolloutFailed, no retry).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator

from airflow_mlops import exceptions as errors
from airflow_mlops.boundary import TaskBoundary
from airflow_mlops.core.lineage import TAG_PREFIX
from airflow_mlops.core.xcom import as_dict

# DeploymentFailed is what the serving client (hooks/serving.py) raises: that module re-exports this class.
from airflow_mlops.exceptions import CanaryFailed, DeploymentFailed, RolloutFailed

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.hooks.mlflow_registry import ModelRegistry
    from airflow_mlops.hooks.serving import ServingAdminClient
    from airflow_mlops.openlineage.datasets import Lineage

__all__ = ["CanaryFailed", "ChampionRollbackEventOperator", "DeployModelOperator", "DeploymentFailed",
           "RolloutFailed"]
TAG_CANARY = f"{TAG_PREFIX}canary"
TAG_CANARY_REASON = f"{TAG_PREFIX}canary_reason"
T = TypeVar("T")  # what a registry call returns
DEFER_GRACE = timedelta(minutes=10)  # the trigger ends itself at window end; this only catches a lost triggerer
TARGETS, MODES, ON_INCONCLUSIVE = ("local", "kubernetes"), ("full", "canary"), ("rollback", "promote")
ROLLBACK_XCOM = "champion_rollback"  # {model, version (restored), rolled_back_from, reason, audit_seq}


class DeployModelOperator(TaskBoundary, BaseOperator):
    """Deploy `version` of `model_name` to the serving app (local) or a Kubernetes Deployment.

    :param model_name: registered model name. (templated)
    :param version: the version to deploy; empty/None = the version alias `champion` points at. (templated)
    :param target: "local" (a running serving app at `url`) or "kubernetes".
    :param url: base URL of the serving app (spec serving.url); default: the host of `serving_conn_id`,
        else http://127.0.0.1:8000. (templated)
    :param mode: "full" or "canary" (local only). (templated)
    :param canary: spec promotion.canary as a dict (traffic, max_error_rate, max_p99_ms, window,
        min_requests); spec defaults when None. (templated)
    :param smoke_request: one /predict body sent after a full deploy (e.g. a demo entity); without it the
        rows of the version's MLflow input example go through /v2 infer. (templated)
    :param kubernetes: spec serving.kubernetes as a dict. (templated)
    :param admin_token: serving admin token; default: password of `serving_conn_id` (ServingHook), else
        env MLOPS_SERVING_ADMIN_TOKEN. Not templated (it would show in the rendered fields).
    :param mlflow_secret: Kubernetes Secret with MLFLOW_TRACKING_URI (+ credentials) for the pods;
        without it the MLflow connection's URI is used (it must be reachable from a pod).
    :param admin_secret: Secret whose key `admin-token` is the pods' admin token (default
        serving-<model>-admin). `env_secrets`: more Secrets for the pods' env (e.g. the Feast
        connection); `pod_env`: plain env for the pods.
    :param on_inconclusive: what a canary with fewer than min_requests at window end does:
        "rollback" (default: no evidence, no promotion) or "promote".
    :param deferrable: wait for the canary window in the triggerer (True) or in this worker slot.
    :param registered: the training DAG's register result; a repeat (nothing new registered) skips the
        deploy with register's reason. (templated)
    :return: {name, version, target, mode, url, status, smoke, canary} or, on Kubernetes,
        {name, version, target, namespace, deployment, rollout}.
    """

    template_fields: Sequence[str] = ("model_name", "version", "url", "mode", "canary", "smoke_request",
                                      "kubernetes", "registered")
    template_fields_renderers = {"canary": "json", "smoke_request": "json", "kubernetes": "json"}
    ui_color = "#e8dcf7"

    def __init__(self, *, model_name: str, version: Any = None, target: str = "local",
                 url: str | None = None, mode: str = "full", canary: Any = None,
                 smoke_request: Any = None, kubernetes: Any = None, admin_token: str | None = None,
                 serving_conn_id: str = "mlops_serving_default", mlflow_conn_id: str = "mlflow_default",
                 kubernetes_conn_id: str = "kubernetes_default", mlflow_secret: str | None = None,
                 admin_secret: str | None = None, pod_env: dict[str, str] | None = None,
                 env_secrets: Sequence[str] = (), ready_timeout: float = 180.0, poll_interval: float = 2.0,
                 canary_poll_interval: float = 15.0, on_inconclusive: str = "rollback", deferrable: bool = True,
                 registered: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, value, allowed in (("target", target, TARGETS), ("on_inconclusive", on_inconclusive,
                                                                   ON_INCONCLUSIVE)):
            if value not in allowed:
                raise ValueError(f"{self.task_id}: {name}: got {value!r}; allowed: {', '.join(allowed)}")
        if target == "kubernetes" and mode == "canary":
            raise ValueError(f"{self.task_id}: mode 'canary' needs target 'local' (the serving app routes canary "
                             "traffic); on Kubernetes use mode 'full' (a rolling update with readiness checks)")
        self.model_name = model_name
        self.version = version
        self.target = target
        self.url = url
        self.mode = mode
        self.canary = canary
        self.smoke_request = smoke_request
        self.kubernetes = kubernetes
        self.admin_token = admin_token
        self.serving_conn_id = serving_conn_id
        self.mlflow_conn_id = mlflow_conn_id
        self.kubernetes_conn_id = kubernetes_conn_id
        self.mlflow_secret = mlflow_secret
        self.admin_secret = admin_secret
        self.pod_env = pod_env
        self.env_secrets = tuple(env_secrets)
        self.ready_timeout = ready_timeout
        self.poll_interval = poll_interval
        self.canary_poll_interval = canary_poll_interval
        self.on_inconclusive = on_inconclusive
        self.deferrable = deferrable
        self.registered = registered

    # ------------------------------------------------------------------------------ execute
    def execute(self, context: Context) -> dict[str, Any]:
        return self._remembered(context, self._deploy(context))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """The trigger's verdict: healthy (or inconclusive + on_inconclusive=promote) goes 100 %, else roll back."""
        return self._remembered(context, self._after_canary(context, event))

    def _remembered(self, context: Context, result: dict[str, Any]) -> dict[str, Any]:
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.openlineage.record import remember

        registry_uri = MLflowHook(self.mlflow_conn_id).settings.registry_uri
        remember(self, context, {"result": result, "registry_uri": registry_uri})
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """The deployed model version (input) -> the serving app or Kubernetes Deployment (output)."""
        from airflow_mlops.openlineage.datasets import deployment_lineage
        from airflow_mlops.openlineage.record import recall

        recorded = recall(self, task_instance)
        return deployment_lineage(recorded["result"], recorded["registry_uri"]) if recorded else None

    def _deploy(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.operators.registry import skip_if_repeat

        skip_if_repeat(self.registered, "deploy")
        if self.mode not in MODES:
            raise DeploymentFailed(f"mode: got {self.mode!r}; allowed: {', '.join(MODES)}")
        version = self._resolve_version()
        if self.target == "kubernetes":
            from airflow_mlops.operators.deployment_k8s import deploy_to_kubernetes

            return deploy_to_kubernetes(self, version)
        with self._client() as client:
            if self.mode == "full":
                return self._full(client, version, previous=self._primary(client))
            tags = self._registry_call(lambda registry: registry.version(version).tags or {})
            earlier = tags.get(TAG_CANARY)  # a retry after a verdict finishes that verdict's job, no second canary
            if earlier in ("failed", "inconclusive"):
                self._fail(context, client, version, tags.get(TAG_CANARY_REASON) or f"canary {earlier}", earlier)
            if earlier in ("passed", "promoted_inconclusive"):
                return self._full(client, version, previous=self._primary(client))
            return self._start_canary(context, client, version)

    def _after_canary(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        version, status, message = str(event["version"]), str(event["status"]), str(event["message"])
        self.log.info("Canary verdict for %s v%s: %s (%s)", self.model_name, version, status, event.get("verdict"))
        with self._client() as client:
            if status == "healthy" or (status == "inconclusive" and self.on_inconclusive == "promote"):
                result = self._full(client, version, previous=self._primary(client), canary=event)
                outcome = "passed" if status == "healthy" else "promoted_inconclusive"
                self._registry_call(lambda registry: self._tag(registry, version, outcome, message))
                return result
            self._fail(context, client, version, message, "inconclusive" if status == "inconclusive" else "failed")
        raise AssertionError("unreachable: _fail raises")  # pragma: no cover

    # ------------------------------------------------------------------------------ local target
    def _full(self, client: ServingAdminClient, version: str, previous: str | None,
              canary: Mapping[str, Any] | None = None) -> dict[str, Any]:
        client.deploy(version, "full")
        status = client.wait_ready(version, "primary", self.ready_timeout, self.poll_interval)
        try:
            smoke = self._smoke(client, version)
        except DeploymentFailed as err:
            undone = self._undo(client, previous)
            raise errors.DeploymentFailed.smoke_failed(self.model_name, version, str(err), undone) from None
        self.log.info("%s v%s serves 100 %% of %s (was v%s)", self.model_name, version, client.url, previous)
        return {"name": self.model_name, "version": version, "target": "local", "mode": "full", "url": client.url,
                "previous": previous, "status": status, "smoke": smoke, "canary": dict(canary) if canary else None}

    def _smoke(self, client: ServingAdminClient, version: str) -> dict[str, Any]:
        """`smoke_request` through /predict (online features included); without one, the rows of the version's
        MLflow input example through the KServe V2 route; a version logged without an example is not smoke-tested."""
        if self.smoke_request:
            answer = client.predict(as_dict(self.smoke_request))
            predictions = answer.get("predictions") or []
            served = sorted({str(p.get("model_version")) for p in predictions})
            via = "smoke_request via /predict"
        else:
            rows = self._registry_call(lambda registry: registry.input_example(version))
            if not rows:
                self.log.warning("No smoke test of %s v%s: no smoke_request in the spec (serving.smoke_request) and "
                                 "no input example logged with the version", self.model_name, version)
                return {"skipped": "no serving.smoke_request and no input example logged with the version"}
            answer = client.infer_rows(self.model_name, rows)
            predictions = (answer.get("outputs") or [{}])[0].get("data") or []
            served = sorted({str(v) for v in (answer.get("parameters") or {}).get("model_versions") or []})
            via = "input example via /v2 infer"
        if not predictions or served != [version]:
            raise DeploymentFailed(f"the smoke request was answered by versions {served}, not v{version}: {answer}")
        return {"predictions": len(predictions), "model_version": version, "via": via}

    def _undo(self, client: ServingAdminClient, previous: str | None) -> str:
        if not previous:
            return "no earlier version was serving, so nothing was restored"
        try:
            client.deploy(previous, "full")
        except DeploymentFailed as err:
            return f"restoring v{previous} failed too: {err}"
        return f"v{previous} was deployed again and serves 100 %"

    def _start_canary(self, context: Context, client: ServingAdminClient, version: str) -> dict[str, Any]:
        import asyncio

        from airflow_mlops.core.canary import CanaryLimits, parse_route
        from airflow_mlops.triggers.canary import CanaryTrigger, first_event

        limits = CanaryLimits.from_config(as_dict(self.canary) if self.canary else None, "promotion.canary")
        primary = self._primary(client)
        if primary == version:
            primary = self._put_previous_back(client, version)
        try:
            client.deploy(version, "canary", limits.traffic)
            client.wait_ready(version, "secondary", self.ready_timeout, self.poll_interval)
            if self.smoke_request:
                client.predict(as_dict(self.smoke_request))
        except DeploymentFailed as err:
            if err.status == 409 or (err.status or 0) >= 500:  # the version itself is at fault: a failed canary
                self._fail(context, client, version, f"canary did not start: {err}", "failed")
            raise DeploymentFailed(f"canary of {self.model_name} v{version}: {err}; {self._undo(client, primary)}"
                                   ) from None
        baseline = parse_route(client.metrics(), model=self.model_name, version=version)
        end = datetime.now(UTC) + timedelta(seconds=limits.window_seconds)
        self.log.info("Canary %s v%s gets %.0f %% of traffic until %s (primary v%s); limits %s", self.model_name,
                      version, limits.traffic * 100, end.isoformat(timespec="seconds"), primary, limits)
        trigger = CanaryTrigger(url=client.url, model_name=self.model_name, version=version,
                                baseline=baseline.to_dict(), window_end=end.isoformat(), limits=limits.to_dict(),
                                poll_interval=self.canary_poll_interval)
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_complete",
                       timeout=timedelta(seconds=limits.window_seconds) + DEFER_GRACE)
        return self.execute_complete(context, asyncio.run(first_event(trigger)))

    def _put_previous_back(self, client: ServingAdminClient, version: str) -> str:
        """The app followed the champion alias to `version` before this task ran: serve the champion before it
        as primary again, so the canary is judged on its share of traffic only."""
        from airflow_mlops.core import audit

        previous = self._registry_call(lambda registry: audit.previous_champion(registry.history(), version))
        if previous is None:
            raise DeploymentFailed(
                f"{client.url} already serves v{version} as primary and the audit trail names no champion before "
                "it, so there is nothing to canary it against; deploy with mode 'full'")
        self.log.warning("%s already serves v%s (it followed the champion alias); v%s goes back to primary for the "
                         "canary window", client.url, version, previous)
        client.deploy(previous, "full")
        client.wait_ready(previous, "primary", self.ready_timeout, self.poll_interval)
        return previous

    def _fail(self, context: Context, client: ServingAdminClient, version: str, reason: str, outcome: str) -> None:
        """Restore the champion, drop the canary, tag the version, raise CanaryFailed."""
        restored, note = self._registry_call(lambda reg: self._restore_champion(reg, context, version, reason,
                                                                                outcome))
        try:
            serving = restored or self._primary(client)
        except DeploymentFailed as err:
            serving, dropped = None, f"unreachable ({err})"
        else:
            dropped = "no earlier version to serve instead: the canary stays loaded; deploy a good version by hand"
        if serving and serving != version:
            dropped = self._undo(client, serving).replace("deployed again", "deployed (canary dropped)")
        raise CanaryFailed.rolled_back(self.model_name, version, reason, note, client.url, dropped, TAG_CANARY, outcome,
                                       TAG_CANARY_REASON, restored)

    # ------------------------------------------------------------------------------ registry
    def _restore_champion(self, registry: ModelRegistry, context: Context, version: str, reason: str,
                          outcome: str) -> tuple[str | None, str]:
        """Under the lease: champion back to the version that held it before `version` (once per run)."""
        from airflow_mlops.core import audit
        from airflow_mlops.hooks.mlflow_registry import CHAMPION
        from airflow_mlops.operators.promotion import actor_of, trigger_of

        self._tag(registry, version, outcome, reason)  # first: a retry must never canary this version again
        ti, dag_run = context.get("ti"), context.get("dag_run")
        dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None)
        run_id = context.get("run_id") or getattr(dag_run, "run_id", None)
        mine = [e for e in registry.history() if e.action == "rollback" and e.previous == version
                and (e.dag_id, e.run_id) == (dag_id, run_id) and run_id]
        if mine:  # an earlier try restored it; it may have died before the version tags or the lease release
            registry.tag_move(mine[-1])
            registry.release_task_lease(f"{dag_id}/{run_id}/{getattr(ti, 'task_id', 'deploy')}")
            _record_rollback(context, self.model_name, mine[-1].version, version, mine[-1].reason or reason,
                             mine[-1].seq)
            return mine[-1].version, f"champion was already restored to v{mine[-1].version} (audit #{mine[-1].seq})"
        with registry.lease(f"{dag_id}/{run_id}/{getattr(ti, 'task_id', 'deploy')}"):
            current = registry.alias_version(CHAMPION)
            if current != version:
                return None, (f"champion alias left on v{current}: it moved away from v{version} during the canary "
                              "(another promotion or rollback)")
            previous = audit.previous_champion(registry.history(), version)
            if previous is None:
                return None, (f"champion alias left on v{version}: the audit trail has no earlier champion; run the "
                              f"{self.model_name}__rollback DAG with a version number")
            event = registry.move_champion(audit.AuditEvent(
                action="rollback", version=previous, previous=version, actor=actor_of(context),
                trigger=trigger_of(context), dag_id=dag_id, run_id=run_id, at=audit.now_iso(),
                reason=reason[:4000]))
        self.log.warning("%s: champion restored v%s -> v%s (audit #%s): %s", self.model_name, version, previous,
                         event.seq, reason)
        _record_rollback(context, self.model_name, previous, version, reason, event.seq)
        return previous, f"champion alias restored from v{version} to v{previous} (audit #{event.seq})"

    def _tag(self, registry: ModelRegistry, version: str, outcome: str, reason: str) -> None:
        registry.client.set_model_version_tag(self.model_name, version, TAG_CANARY, outcome)
        registry.client.set_model_version_tag(self.model_name, version, TAG_CANARY_REASON, reason[:4000])

    def _registry_call(self, call: Callable[[ModelRegistry], T]) -> T:
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.hooks.mlflow_registry import ModelRegistry

        with MLflowHook(self.mlflow_conn_id).activated() as client:
            return call(ModelRegistry(client, self.model_name))

    def _resolve_version(self) -> str:
        wanted = "" if self.version is None else str(self.version).strip().removeprefix("v")
        if wanted and wanted.lower() != "none":
            return wanted
        from airflow_mlops.hooks.mlflow_registry import CHAMPION

        champion = self._registry_call(lambda registry: registry.alias_version(CHAMPION))
        if champion is None:
            raise errors.DeploymentFailed.no_champion(self.model_name)
        return str(champion)

    # ------------------------------------------------------------------------------ serving app
    def _client(self) -> ServingAdminClient:
        from airflow_mlops.hooks.serving import ServingHook

        return ServingHook(self.serving_conn_id, url=self.url, admin_token=self.admin_token).get_conn()

    @staticmethod
    def _primary(client: ServingAdminClient) -> str | None:
        version = (client.status().get("primary") or {}).get("version")
        return None if version is None else str(version)


def _record_rollback(context: Context, model: str, restored: str, rolled_back_from: str, reason: str,
                     audit_seq: int | None) -> None:
    """XCom `champion_rollback` for ChampionRollbackEventOperator: this task fails next, and Airflow keeps a
    failed try's XComs but sends no outlet events for it (task_runner: only SucceedTask carries them)."""
    push = getattr(context.get("ti"), "xcom_push", None)
    if push is not None:
        push(key=ROLLBACK_XCOM, value={"model": model, "version": str(restored), "rolled_back_from": str(
            rolled_back_from), "reason": reason[:4000], "audit_seq": audit_seq})


class ChampionRollbackEventOperator(TaskBoundary, BaseOperator):
    """After a deploy task rolled the champion back: an asset event for `mlops.model.<name>.champion`.

    A canary that is rolled back fails its deploy task (CanaryFailed), and Airflow 3.3 sends outlet events
    only with a successful task, so the deploy task cannot tell batch inference (scheduled on the
    champion asset) that the champion changed back. This task can: it reads the rollback the deploy task
    recorded (XCom `champion_rollback`) and, only if there is one, adds an event for
    `champion_asset(model_name)` through its AssetAlias outlet, extra {version (restored), reason,
    rolled_back_from, audit_seq, action: "rollback"}. No rollback: no event (a static Asset outlet
    would emit one on every run).

    Use it as a teardown after the deploy task (`.as_teardown()`, no setups): it runs whatever the deploy
    task's state, and a teardown does not decide the DAG run's state, so the run still fails with the deploy.

    :param model_name: registered model name. (templated)
    :param deploy_task_id: the DeployModelOperator task whose rollback is reported.
    :return: the event's extra, or None when nothing was rolled back.
    """

    template_fields: Sequence[str] = ("model_name",)
    ui_color = "#f7dcdc"

    def __init__(self, *, model_name: str, deploy_task_id: str = "deploy", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from airflow.sdk import AssetAlias

        if not any(isinstance(outlet, AssetAlias) for outlet in self.outlets):
            raise ValueError(f"{self.task_id}: outlets must include an AssetAlias (e.g. AssetAlias("
                             f"'mlops.model.<name>.champion.restored')): the event for the champion asset is added "
                             f"through it, and only in a run that rolled back; got {self.outlets!r}")
        self.model_name = model_name
        self.deploy_task_id = deploy_task_id

    def execute(self, context: Context) -> dict[str, Any] | None:
        from airflow.sdk import AssetAlias

        from airflow_mlops.dags.assets import champion_asset

        rollback = context["ti"].xcom_pull(task_ids=self.deploy_task_id, key=ROLLBACK_XCOM)
        if not rollback:
            self.log.info("%s did not roll the champion of %s back: no event", self.deploy_task_id, self.model_name)
            return None
        extra = {"action": "rollback", **{key: rollback.get(key) for key in (
            "version", "rolled_back_from", "reason", "audit_seq")}}
        for outlet in self.outlets:
            if isinstance(outlet, AssetAlias):
                context["outlet_events"][outlet].add(champion_asset(self.model_name), extra=extra)
        self.log.warning("%s: champion back on v%s (from v%s): asset event %s", self.model_name, extra["version"],
                         extra["rolled_back_from"], champion_asset(self.model_name).name)
        return extra
