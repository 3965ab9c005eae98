"""DeployModelOperator's Kubernetes target: apply, wait for the rollout, roll back a stuck one.

Through the cncf provider's KubernetesHook (its connection: kubeconfig path/content, in-cluster or
context). Objects are applied with server-side apply (field manager "airflow-mlops", force: we own
these objects) and fieldValidation=Strict, so the API server refuses a field it does not know
instead of dropping it. Before applying, the live Deployment is read: when the rollout does not
complete within the spec's timeout (or Kubernetes reports ProgressDeadlineExceeded), its pod
template is patched back (JSON patch "replace /spec/template"), which is what `kubectl rollout
undo` does, and RolloutFailed names the stuck pods' reasons.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_mlops.core import k8s_manifests
from airflow_mlops.exceptions import ComputeConfigError, RolloutFailed

if TYPE_CHECKING:
    from airflow_mlops.operators.deployment import DeployModelOperator

APPLY = {"field_manager": k8s_manifests.FIELD_MANAGER, "force": True, "field_validation": "Strict",
         "_content_type": "application/apply-patch+yaml"}


def deploy_to_kubernetes(operator: DeployModelOperator, version: str) -> dict[str, Any]:
    """Render, check, apply and wait; {name, version, target, namespace, deployment, rollout}."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    from airflow_mlops.core.spec import KubernetesServing
    from airflow_mlops.core.xcom import as_dict

    raw = as_dict(operator.kubernetes or {})
    # Feast registry/online store and prediction log: read from the same serving.kubernetes mapping, so the
    # spec fields flow through the factory's `serving.kubernetes.model_dump()` unchanged.
    backends = k8s_manifests.Backends.pop_from(raw)
    serving = KubernetesServing.model_validate(raw)
    env: dict[str, str] = {}
    if not operator.mlflow_secret:
        from airflow_mlops.operators.kubernetes import mlflow_env

        env = mlflow_env(operator.mlflow_conn_id)
    try:
        manifests = k8s_manifests.render(
            operator.model_name, version, serving, tracking_uri=env.pop("MLFLOW_TRACKING_URI", None),
            mlflow_secret=operator.mlflow_secret, admin_secret=operator.admin_secret,
            extra_env={**env, **(operator.pod_env or {})}, env_secrets=tuple(operator.env_secrets), backends=backends)
    except ValueError as err:  # configuration: a retry renders the same thing
        raise ComputeConfigError(f"{operator.task_id}: {err}") from None
    for manifest in manifests:
        k8s_manifests.check_round_trip(manifest)
    hook = KubernetesHook(conn_id=operator.kubernetes_conn_id)
    rollout = apply_and_wait(hook, manifests, timeout=serving.rollout_timeout_seconds,
                             poll=operator.poll_interval, log=operator.log)
    return {"name": operator.model_name, "version": version, "target": "kubernetes", "namespace": serving.namespace,
            "deployment": manifests[0]["metadata"]["name"], "rollout": rollout}


def apply_and_wait(hook: Any, manifests: list[dict[str, Any]], *, timeout: float, poll: float,
                   log: Any) -> dict[str, Any]:
    """Apply [Deployment, Service]; wait for the rollout; roll the template back and raise if it sticks."""
    deployment, service = manifests
    name, namespace = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
    apps, core = hook.apps_v1_client, hook.core_v1_client
    before = _read(apps, name, namespace)
    core.patch_namespaced_service(name=service["metadata"]["name"], namespace=namespace, body=service, **APPLY)
    applied = apps.patch_namespaced_deployment(name=name, namespace=namespace, body=deployment, **APPLY)
    log.info("Applied deployment %s/%s generation %s (was %s)", namespace, name, applied.metadata.generation,
             _version_of(before))
    state, why = wait_rollout(apps, name, namespace, timeout=timeout, poll=poll, log=log)
    if state == "complete":
        return {"state": state, "detail": why, "previous_version": _version_of(before)}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = {**deployment["spec"]["selector"]["matchLabels"],
                k8s_manifests.LABEL_VERSION: labels[k8s_manifests.LABEL_VERSION]}
    pods = pod_problems(core, namespace, selector)
    undone = rollback(apps, name, namespace, before)
    raise RolloutFailed.stuck(namespace, name, _version_of(deployment), timeout, why, pods, undone)


def _read(apps: Any, name: str, namespace: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        live = apps.read_namespaced_deployment(name=name, namespace=namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return dict(apps.api_client.sanitize_for_serialization(live))


def wait_rollout(apps: Any, name: str, namespace: str, *, timeout: float, poll: float, log: Any) -> tuple[str, str]:
    """('complete' | 'failed' | 'timeout', why), polling the Deployment's status like `kubectl rollout status`."""
    deadline = time.monotonic() + timeout
    while True:
        live = apps.api_client.sanitize_for_serialization(
            apps.read_namespaced_deployment_status(name=name, namespace=namespace))
        state, why = k8s_manifests.rollout_state(live)
        if state != "progressing":
            return state, why
        if time.monotonic() >= deadline:
            return "timeout", f"still progressing at the timeout: {why}"
        log.info("Rollout of %s/%s: %s", namespace, name, why)
        time.sleep(poll)


def rollback(apps: Any, name: str, namespace: str, before: Mapping[str, Any] | None) -> str:
    """Put the pod template read before the apply back; what happened, as text for the error."""
    if before is None:
        return (f"nothing to roll back to (first deployment of {name}); it was left for inspection: delete it with "
                f"`kubectl -n {namespace} delete deployment {name}`")
    template = before["spec"]["template"]
    apps.patch_namespaced_deployment(name=name, namespace=namespace,
                                     body=[{"op": "replace", "path": "/spec/template", "value": template}])
    revision = (before.get("metadata", {}).get("annotations") or {}).get("deployment.kubernetes.io/revision", "?")
    return f"rolled back: pod template of v{_version_of(before)} (revision {revision}) patched back"


def pod_problems(core: Any, namespace: str, labels: Mapping[str, str]) -> list[str]:
    """'pod: container reason (message)' for each waiting or crashed container of the new pods."""
    selector = ",".join(f"{key}={value}" for key, value in labels.items())
    try:
        pods = core.list_namespaced_pod(namespace=namespace, label_selector=selector).items or []
    except Exception as err:  # noqa: BLE001 - diagnostics only; the rollout failure is what we report
        return [f"(pods could not be listed: {err})"]
    problems = []
    for pod in pods:
        statuses = (pod.status.container_statuses if pod.status else None) or []
        for status in statuses:
            waiting = status.state.waiting if status.state else None
            if waiting is not None:
                problems.append(f"{pod.metadata.name}: {status.name} {waiting.reason} ({waiting.message or ''})")
            elif status.restart_count:
                problems.append(f"{pod.metadata.name}: {status.name} restarted {status.restart_count}x")
    return problems


def _version_of(deployment: Mapping[str, Any] | None) -> str | None:
    if not deployment:
        return None
    labels = deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
    return labels.get(k8s_manifests.LABEL_VERSION)
