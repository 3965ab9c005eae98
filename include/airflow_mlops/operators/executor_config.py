"""Per-task `executor_config` of the training task for Airflow's KubernetesExecutor.

Under the KubernetesExecutor every task runs in its own pod, made from the `pod_template_file`
(docker/k8s/pod-template.yaml) and merged with the task's `executor_config["pod_override"]`. With
`training.compute.backend: local` the model is fitted inside that pod, so the `train` task gets the
spec's `training.compute.kubernetes` resources there: cpu and memory (requests = limits, Guaranteed
QoS, as for the training pod of backend kubernetes), node selector and service account, plus labels
naming the model. The light tasks keep the template's small pod.

With `backend: kubernetes` the fit runs in a pod of its own (KubernetesPodOperator): the executor's
pod only waits for it, so it gets no override.

Only built when the configured executor list names the KubernetesExecutor: the kubernetes client
import costs DAG-parse time, and no other executor reads `executor_config`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops.core.spec import KubernetesCompute, ModelSpec

BASE_CONTAINER = "base"  # the KubernetesExecutor runs the task in the container of this name


def kubernetes_executor_configured() -> bool:
    """True when Airflow's `[core] executor` list names the KubernetesExecutor (alone or among others)."""
    from airflow.sdk.configuration import conf

    executors = str(conf.get("core", "executor", fallback="") or "")
    return any(name.strip().rsplit(".", 1)[-1].split(":")[-1] == "KubernetesExecutor"
               for name in executors.split(","))


def train_executor_config(spec: ModelSpec) -> dict[str, Any] | None:
    """{"pod_override": V1Pod} for the `train` task of `spec`; None when the fit does not run in that pod."""
    if spec.training.compute.backend != "local":
        return None
    compute = spec.training.compute.kubernetes
    return {"pod_override": train_pod_override(spec.name, compute, spec.source_file or spec.name)}


def train_pod_override(model: str, compute: KubernetesCompute, source: str = "") -> Any:
    """The pod override: resources of the `base` container, node selector, service account, labels.

    Quantities too small to start the job fail here, naming `source` (the spec file), as for backend kubernetes.
    """
    from kubernetes.client import models as k8s

    from airflow_mlops.operators.kubernetes import check_quantities

    check_quantities(compute, source)
    quantities = {"cpu": compute.cpu, "memory": compute.memory}
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(labels={
            "app.kubernetes.io/component": "training",
            # a spec name ([a-z][a-z0-9_]{1,62}) is a valid label value once no "_" ends it
            "airflow-mlops/model": model.rstrip("_"),
        }),
        spec=k8s.V1PodSpec(
            containers=[k8s.V1Container(
                name=BASE_CONTAINER,
                resources=k8s.V1ResourceRequirements(requests=quantities, limits=dict(quantities)),
            )],
            node_selector=dict(compute.node_selector) or None,
            service_account_name=compute.service_account,
        ),
    )
