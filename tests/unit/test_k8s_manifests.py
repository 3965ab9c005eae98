"""The serving Deployment + Service (core.k8s_manifests), validated against Kubernetes' OpenAPI schema.

`kubernetes_validate` in strict mode: an unknown or misspelt field fails, as the API server does with
fieldValidation=Strict (which DeployModelOperator asks for). No cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_mlops.core import k8s_manifests as km
from airflow_mlops.core.spec import KubernetesServing

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[2]
K8S_VERSIONS = ("1.31", "1.37")  # as tests/adapter/test_kubernetes_pod.py: oldest targeted, newest the validator ships
SERVING = KubernetesServing(image="registry.example.com/airflow-mlops-serving:1.4.2", namespace="ml-serving",
                            replicas=3, cpu="750m", memory="2Gi", rollout_timeout_seconds=300)
URI = "http://mlflow.mlops.svc.cluster.local:5000"


def render(version: str = "7", **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if "mlflow_secret" not in kwargs:
        kwargs.setdefault("tracking_uri", URI)
    deployment, service = km.render("ride_completion", version, SERVING, **kwargs)
    return deployment, service


def validate(*objects: dict[str, Any]) -> None:
    import kubernetes_validate

    for obj in objects:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


def test_rendered_objects_are_valid_kubernetes_and_survive_the_client_round_trip() -> None:
    deployment, service = render()
    validate(deployment, service)
    km.check_round_trip(deployment)
    km.check_round_trip(service)
    assert (deployment["metadata"]["name"], deployment["metadata"]["namespace"]) == (
        "serving-ride-completion", "ml-serving")
    assert deployment["spec"]["replicas"] == 3 and deployment["spec"]["progressDeadlineSeconds"] == 300
    assert container(deployment)["image"] == "registry.example.com/airflow-mlops-serving:1.4.2"
    for meta in (deployment["metadata"], deployment["spec"]["template"]["metadata"]):
        assert meta["annotations"]["airflow-mlops/model-uri"] == "models:/ride_completion/7"


def test_probes_resources_and_restricted_security() -> None:
    deployment, _ = render()
    pod, main = deployment["spec"]["template"]["spec"], container(deployment)
    assert main["command"] == ["airflow-mlops"] and main["args"][:3] == ["serve", "--model", "ride_completion"]
    assert env_of(deployment)["MLOPS_SERVING_MODEL_VERSION"] == "7", "pods serve exactly this version"
    assert main["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert main["resources"] == {"requests": {"cpu": "750m", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
    assert main["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                       "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "scratch", "mountPath": "/tmp"} in main["volumeMounts"], "writable scratch on a read-only root"
    assert env_of(deployment)["TMPDIR"] == "/tmp" and env_of(deployment)["MLOPS_HOME"].startswith("/tmp/")
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0, "old pods keep serving until new ones are ready"


def test_env_has_the_tracking_server_and_the_admin_token_only_by_secret_reference() -> None:
    deployment, _ = render()
    env = env_of(deployment)
    assert env["MLFLOW_TRACKING_URI"] == URI and env["MLOPS_SERVING_MODEL_VERSION"] == "7"
    assert env["MLOPS_SERVING_ADMIN_TOKEN"] == {"secretKeyRef": {"name": "serving-ride-completion-admin",
                                                                 "key": "admin-token", "optional": True}}
    custom, _ = render(admin_secret="serving-tokens")
    assert env_of(custom)["MLOPS_SERVING_ADMIN_TOKEN"]["secretKeyRef"]["name"] == "serving-tokens"


def test_mlflow_credentials_come_from_a_secret() -> None:
    deployment, _ = render(mlflow_secret="mlflow-credentials", extra_env={"MLFLOW_REGISTRY_URI": "http://reg:5000"},
                           env_secrets=["feast-connection", "mlflow-credentials"])
    validate(deployment)
    assert container(deployment)["envFrom"] == [{"secretRef": {"name": "mlflow-credentials"}},
                                                {"secretRef": {"name": "feast-connection"}}]
    assert "MLFLOW_TRACKING_URI" not in env_of(deployment)
    assert env_of(deployment)["MLFLOW_REGISTRY_URI"] == "http://reg:5000"
    with pytest.raises(ValueError, match="exactly one of tracking_uri .* or mlflow_secret"):
        km.render("ride_completion", "7", SERVING, tracking_uri=URI, mlflow_secret="both")
    with pytest.raises(ValueError, match="exactly one of"):
        km.render("ride_completion", "7", SERVING)


def test_a_new_version_changes_the_pod_template_but_never_the_selector() -> None:
    old, service = render("7")
    new, _ = render("8")
    assert old["spec"]["template"] != new["spec"]["template"], "a new version must trigger a rollout"
    assert old["spec"]["selector"] == new["spec"]["selector"], "selectors are immutable"
    selector = old["spec"]["selector"]["matchLabels"]
    template_labels = new["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items() and service["spec"]["selector"] == selector
    assert template_labels[km.LABEL_VERSION] == "8" and km.LABEL_VERSION not in selector
    assert old["metadata"]["labels"] is not old["spec"]["template"]["metadata"]["labels"], "no shared objects"


def test_names_and_labels_stay_valid_for_long_or_odd_values() -> None:
    long_name = "m" + "x" * 62
    deployment, service = km.render(long_name, "12+local/build", SERVING, tracking_uri=URI)
    validate(deployment, service)
    assert len(deployment["metadata"]["name"]) <= 63 and not deployment["metadata"]["name"].endswith("-")
    assert deployment["spec"]["template"]["metadata"]["labels"][km.LABEL_VERSION] == "12-local-build"
    assert env_of(deployment)["MLOPS_SERVING_MODEL_VERSION"] == "12+local/build", "the env keeps the exact version"


def test_a_misspelt_field_is_caught_by_the_client_round_trip_and_the_schema() -> None:
    import kubernetes_validate

    deployment, _ = render()
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(ValueError, match=r"fields the Kubernetes API does not know: \['spec\.template\.spec"
                                         r"\.containers\[0\]\.readinessProbes'\]"):
        km.check_round_trip(deployment)
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessProbes"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    with pytest.raises(ValueError, match="kind: got 'Pod'"):
        km.check_round_trip({"kind": "Pod", "metadata": {"name": "x"}})


@pytest.mark.parametrize(("status", "generation", "state", "fragment"), [
    ({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}, 2, "complete",
     "3/3 updated, 3/3 available"),
    ({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}, 2, "progressing",
     "controller has not seen generation 2 yet"),
    ({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}, 2, "progressing",
     "4 total"),
    ({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3,
      "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                      "message": 'ReplicaSet "x" has timed out progressing.'}]}, 2, "failed",
     "progress deadline exceeded: ReplicaSet"),
    ({}, 1, "progressing", "0/3 updated"),
])
def test_rollout_state_reads_the_deployment_status_like_kubectl(status: dict[str, Any], generation: int,
                                                                 state: str, fragment: str) -> None:
    live = {"metadata": {"generation": generation}, "spec": {"replicas": 3}, "status": status}
    got, why = km.rollout_state(live)
    assert got == state and fragment in why


def test_the_shipped_example_is_what_the_renderer_makes() -> None:
    path = PROJECT / "docker" / "k8s" / "serving-deployment.yaml"
    assert path.read_text() == km.example(), (
        "docker/k8s/serving-deployment.yaml is stale; regenerate it with "
        "`.venv/bin/python -m airflow_mlops.core.k8s_manifests > docker/k8s/serving-deployment.yaml`")
    objects = list(yaml.safe_load_all(path.read_text()))
    assert [o["kind"] for o in objects] == ["Deployment", "Service"]
    validate(*objects)


BACKENDS = km.Backends(state_volume_claim="mlops-state", online_store="redis://redis.ml-serving:6379/0",
                       prediction_log_url="postgresql+psycopg://mlops@postgres.ml-serving:5432/mlops")


def test_pods_get_the_feast_registry_read_only_and_the_stores_by_env() -> None:
    deployment, service = render(backends=BACKENDS)
    validate(deployment, service)
    km.check_round_trip(deployment)
    pod, main = deployment["spec"]["template"]["spec"], container(deployment)
    assert {"name": "feast-registry", "persistentVolumeClaim": {"claimName": "mlops-state", "readOnly": True}} in (
        pod["volumes"])
    assert main["volumeMounts"] == [
        {"name": "scratch", "mountPath": "/tmp"},
        {"name": "feast-registry", "mountPath": "/tmp/mlops/feast", "readOnly": True, "subPath": "feast"}]
    env = env_of(deployment)
    assert env["MLOPS_HOME"] + "/feast" == km.FEAST_DIR, "FeastHook reads MLOPS_HOME/feast/registry.db"
    assert env["MLOPS_FEAST_ONLINE_STORE"] == "redis://redis.ml-serving:6379/0"
    assert env["MLOPS_PREDICTION_LOG_URL"] == "postgresql+psycopg://mlops@postgres.ml-serving:5432/mlops"
    assert env["MLFLOW_TRACKING_URI"] == URI


def test_the_registry_can_come_from_a_configmap_instead() -> None:
    deployment, _ = render(backends=km.Backends(registry_configmap="feast-registry-v3",
                                                online_store="rediss://redis.example:6380/1"))
    validate(deployment)
    pod, main = deployment["spec"]["template"]["spec"], container(deployment)
    assert pod["volumes"][-1] == {"name": "feast-registry", "configMap": {
        "name": "feast-registry-v3", "items": [{"key": "registry.db", "path": "registry.db"}]}}
    assert main["volumeMounts"][-1] == {"name": "feast-registry", "mountPath": "/tmp/mlops/feast", "readOnly": True}
    assert "MLOPS_PREDICTION_LOG_URL" not in env_of(deployment)


def test_without_backends_nothing_feast_is_rendered() -> None:
    deployment, _ = render()
    assert [v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]] == ["scratch"]
    assert not {"MLOPS_FEAST_ONLINE_STORE", "MLOPS_PREDICTION_LOG_URL"} & set(env_of(deployment))


@pytest.mark.parametrize(("backends", "message"), [
    (km.Backends(state_volume_claim="mlops-state", registry_configmap="reg"),
     r"state_volume_claim \('mlops-state'\) and registry_configmap \('reg'\) both give the Feast registry"),
    (km.Backends(online_store="redis://redis:6379/0"),
     r"online_store is set but the pods get no Feast registry.*set state_volume_claim"),
    (km.Backends(state_volume_claim="mlops-state", online_store="redis://:s3cret@redis:6379/0"),
     r"serving\.kubernetes\.online_store: the URL holds a password.*Secret passed in env_secrets"),
    (km.Backends(prediction_log_url="postgresql://mlops:pw@pg:5432/mlops"),
     r"prediction_log_url: the URL holds a password"),
    (km.Backends(state_volume_claim="mlops-state", online_store="sqlite:///tmp/online.db"),
     r"online_store: got 'sqlite:///tmp/online.db'; expected redis://host:port/"),
    (km.Backends(prediction_log_url="mysql://db/x"), r"prediction_log_url: got 'mysql://db/x'; expected postgresql"),
    (km.Backends(state_volume_claim="MLOps_State"),
     r"state_volume_claim: got 'MLOps_State'; a Kubernetes object name is lowercase"),
])
def test_backends_that_cannot_work_or_would_leak_a_password_are_refused(backends: km.Backends,
                                                                         message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(backends=backends)


def test_backends_are_taken_out_of_the_serving_kubernetes_mapping() -> None:
    raw = {"namespace": "ml-serving", "state_volume_claim": "mlops-state", "online_store": "",
           "prediction_log_url": "postgresql://pg/mlops"}
    backends = km.Backends.pop_from(raw)
    assert backends == km.Backends(state_volume_claim="mlops-state", prediction_log_url="postgresql://pg/mlops")
    assert raw == {"namespace": "ml-serving"}, "the rest validates as KubernetesServing (extra=forbid)"
    KubernetesServing.model_validate(raw)


def test_a_slow_start_is_covered_by_the_startup_probe_not_killed_by_liveness() -> None:
    main = container(render()[0])
    startup = main["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert "initialDelaySeconds" not in main["livenessProbe"], "liveness starts only after the startup probe passed"
