"""KubernetesExecutor readiness without a cluster: the pod template and the `train` task's pod override.

Both are checked the way the executor uses them: the cncf-kubernetes provider loads
docker/k8s/pod-template.yaml (`PodGenerator.deserialize_model_file`) and builds the task pod from it
and the task's `executor_config["pod_override"]` (`PodGenerator.construct_pod`); the kubernetes
client serializes the pod as for the API server, and `kubernetes_validate` checks it against the
Kubernetes 1.31 and 1.37 OpenAPI schemas in strict mode (an unknown field fails). The template file
itself is validated the same way. Not checked (no cluster): admission, scheduling, image pull, the
PVC, the api-server URL and Secret names, and that a task pod actually runs a task.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_mlops.core.spec import ModelSpec, parse_spec

pytestmark = pytest.mark.adapter

PROJECT = Path(__file__).resolve().parents[2]
TEMPLATE = PROJECT / "docker" / "k8s" / "pod-template.yaml"
K8S_VERSIONS = ("1.31", "1.37")  # as test_kubernetes_pod.py and test_k8s_manifests.py
KUBERNETES_EXECUTOR = "airflow.providers.cncf.kubernetes.executors.kubernetes_executor.KubernetesExecutor"


def make_spec(backend: str = "local", **compute: Any) -> ModelSpec:
    data = yaml.safe_load((PROJECT / "include" / "models" / "ride_completion.yaml").read_text())
    kubernetes = {"cpu": "1500m", "memory": "3Gi", "node_selector": {"pool": "training"},
                  "service_account": "trainer", **compute}
    data["training"]["compute"] = {"backend": backend, "kubernetes": kubernetes}
    return parse_spec(yaml.safe_dump(data), "ride_completion.yaml")


def validate(obj: dict[str, Any]) -> None:
    import kubernetes_validate

    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def serialized(pod: Any) -> dict[str, Any]:
    from kubernetes.client import ApiClient

    return dict(ApiClient().sanitize_for_serialization(pod))


def task_pod(pod_override: Any) -> dict[str, Any]:
    """The pod the KubernetesExecutor would create for the `train` task, serialized as for a POST."""
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    base = PodGenerator.deserialize_model_file(str(TEMPLATE))
    pod = PodGenerator.construct_pod(
        dag_id="ride_completion__train", task_id="train", pod_id="ride-completion-train-abc123", try_number=1,
        kube_image="registry.example.com/airflow-mlops:1.0.0", date=datetime(2026, 10, 1, tzinfo=UTC),
        args=["python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string", "{}"],
        pod_override_object=pod_override, base_worker_pod=base, namespace="airflow",
        scheduler_job_id="1", run_id="manual__2026-10-01T00:00:00+00:00",
    )
    return serialized(pod)


def base_container(pod: dict[str, Any]) -> dict[str, Any]:
    [base] = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    return dict(base)


def test_the_pod_template_is_valid_kubernetes_and_restricted() -> None:
    template = yaml.safe_load(TEMPLATE.read_text())
    validate(template)
    spec, base = template["spec"], base_container(template)
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 50000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert base["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    env = {e["name"]: e["value"] for e in base["env"]}
    assert env["MLOPS_HOME"] == "/usr/local/airflow/.local" and env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    assert {"name": "mlops-state", "mountPath": env["MLOPS_HOME"]} in base["volumeMounts"]
    assert not any("password" in str(e).lower() for e in base["env"]), "secrets come by envFrom only"


def test_a_light_task_gets_the_template_pod_unchanged() -> None:
    pod = task_pod(None)
    validate(pod)
    base = base_container(pod)
    assert base["resources"] == {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    assert base["args"][:3] == ["python", "-m", "airflow.sdk.execution_time.execute_workload"]
    labels = pod["metadata"]["labels"]
    assert labels["dag_id"] == "ride_completion__train" and labels["task_id"] == "train"
    assert labels["app.kubernetes.io/component"] == "worker"


def test_the_train_override_carries_the_spec_compute_into_the_task_pod() -> None:
    from airflow_mlops.operators.executor_config import train_executor_config

    config = train_executor_config(make_spec())
    assert config is not None
    validate({"apiVersion": "v1", "kind": "Pod", **serialized(config["pod_override"])})
    pod = task_pod(config["pod_override"])
    validate(pod)
    base = base_container(pod)
    assert base["resources"] == {"requests": {"cpu": "1500m", "memory": "3Gi"},
                                 "limits": {"cpu": "1500m", "memory": "3Gi"}}, "Guaranteed QoS, as the KPO pod"
    assert pod["spec"]["nodeSelector"] == {"pool": "training"}
    assert pod["spec"]["serviceAccountName"] == "trainer"
    assert pod["metadata"]["labels"]["airflow-mlops/model"] == "ride_completion"
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "training"
    # what the template gives stays: image, env, state volume, security
    assert base["image"] == "registry.example.com/airflow-mlops:1.0.0"
    assert {"name": "mlops-state", "mountPath": "/usr/local/airflow/.local"} in base["volumeMounts"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_no_override_when_the_fit_runs_in_a_pod_of_its_own() -> None:
    from airflow_mlops.operators.executor_config import train_executor_config

    assert train_executor_config(make_spec(backend="kubernetes")) is None


def test_too_small_quantities_name_the_spec_field() -> None:
    from airflow_mlops.exceptions import SpecError
    from airflow_mlops.operators.executor_config import train_executor_config

    with pytest.raises(SpecError, match=r"ride_completion\.yaml: training\.compute\.kubernetes\.memory: got '2'"):
        train_executor_config(make_spec(memory="2"))


@pytest.mark.parametrize(("executor", "expected"), [
    ("LocalExecutor", False), ("CeleryExecutor", False), ("KubernetesExecutor", True),
    ("CeleryExecutor,KubernetesExecutor", True), (KUBERNETES_EXECUTOR, True),
    ("my_k8s:" + KUBERNETES_EXECUTOR, True),
])
def test_the_factory_attaches_the_override_only_under_the_kubernetes_executor(
        executor: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_mlops.dags.factory import training_dag

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    train = training_dag(make_spec()).get_task("train")
    assert ("pod_override" in (train.executor_config or {})) is expected, train.executor_config
