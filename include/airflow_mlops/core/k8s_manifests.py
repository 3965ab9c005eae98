"""Kubernetes Deployment + Service of the online prediction server, as plain JSON-able dicts.

Rendered from the spec's `serving.kubernetes` block, the model name and the version to serve.
What the objects guarantee:

- the version is in the pod template (label, annotation, env), so a new version is a new template
  and Kubernetes rolls it out; the selector holds only stable labels (selectors are immutable);
- RollingUpdate with maxUnavailable 0: old pods keep serving until new ones are ready;
  `progressDeadlineSeconds` is the spec's rollout timeout, so Kubernetes marks a stuck rollout too;
- readiness on GET /ready (200 only once a model is loaded), liveness on GET /health;
- Pod Security Standard "restricted": non-root, no privilege escalation, all capabilities dropped,
  RuntimeDefault seccomp, read-only root filesystem (scratch and MLOPS_HOME on an emptyDir), no
  service-account token (the server never calls the Kubernetes API);
- requests = the spec's cpu/memory, limit = memory only (a CPU limit throttles and adds latency);
- the pods serve exactly this version (`airflow-mlops serve --model M` with MLOPS_SERVING_MODEL_VERSION:
  pinned, no alias following), so what runs is what the Deployment says;
- MLFLOW_TRACKING_URI in plain env (a server URI without credentials), the admin token from a
  Secret (key `admin-token`), never in the manifest.

`python -m airflow_mlops.core.k8s_manifests` prints the demo example kept in
docker/k8s/serving-deployment.yaml (a unit test checks they agree).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops.core.spec import KubernetesServing

PORT = 8000
SERVING_UID = 10001  # any non-root uid: the serving image needs no home directory (HOME is the emptyDir)
SCRATCH = "/tmp"
ADMIN_SECRET_KEY = "admin-token"
FIELD_MANAGER = "airflow-mlops"
LABEL_MODEL = "airflow-mlops/model"
LABEL_VERSION = "airflow-mlops/model-version"
EXAMPLE_TRACKING_URI = "http://mlflow.mlops.svc.cluster.local:5000"
EXAMPLE_VERSION = "1"


def object_name(model: str) -> str:
    """DNS-1123 name of the Deployment and Service of one model."""
    return f"serving-{model}".replace("_", "-")[:63].rstrip("-")


def admin_secret_name(model: str) -> str:
    return f"{object_name(model)}-admin"


def selector_labels(model: str) -> dict[str, str]:
    """Stable labels: the Deployment selector and the Service selector (no version: selectors are immutable)."""
    return {"app.kubernetes.io/name": "airflow-mlops", "app.kubernetes.io/component": "serving",
            "app.kubernetes.io/instance": object_name(model), LABEL_MODEL: label_value(model)}


def label_value(text: str) -> str:
    """A valid label value (<= 63 chars of [A-Za-z0-9-_.], alphanumeric at both ends)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text))[:63]
    return cleaned.strip("-_.") or "none"


def render(model: str, version: str, serving: KubernetesServing, *, tracking_uri: str | None = None,
           mlflow_secret: str | None = None, admin_secret: str | None = None,
           extra_env: Mapping[str, str] | None = None, env_secrets: Sequence[str] = ()) -> list[dict[str, Any]]:
    """[Deployment, Service] serving `version` of `model`.

    MLflow is reached through `tracking_uri` (plain env) or `mlflow_secret` (a Secret holding
    MLFLOW_TRACKING_URI and any credentials, mounted with envFrom): exactly one of them.
    `env_secrets` are more Secrets mounted with envFrom (e.g. AIRFLOW_CONN_FEAST_DEFAULT for the
    online store); `extra_env` are plain variables.
    """
    if (tracking_uri is None) == (mlflow_secret is None):
        raise ValueError("pass exactly one of tracking_uri (an MLflow server URI without credentials) or "
                         f"mlflow_secret (a Secret with MLFLOW_TRACKING_URI); got {tracking_uri!r}, {mlflow_secret!r}")
    return [deployment(model, version, serving, tracking_uri=tracking_uri, mlflow_secret=mlflow_secret,
                       admin_secret=admin_secret, extra_env=extra_env, env_secrets=env_secrets),
            service(model, serving)]


def deployment(model: str, version: str, serving: KubernetesServing, *, tracking_uri: str | None = None,
               mlflow_secret: str | None = None, admin_secret: str | None = None,
               extra_env: Mapping[str, str] | None = None, env_secrets: Sequence[str] = ()) -> dict[str, Any]:
    name, version = object_name(model), str(version)
    env = {**({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}), **(extra_env or {})}
    labels = {**selector_labels(model), "app.kubernetes.io/managed-by": FIELD_MANAGER,
              LABEL_VERSION: label_value(version)}
    annotations = {"airflow-mlops/model-name": model, "airflow-mlops/model-version": version}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": serving.namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": serving.replicas,
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": serving.rollout_timeout_seconds,
            "selector": {"matchLabels": selector_labels(model)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": _pod_spec(model, version, serving, env, admin_secret or admin_secret_name(model),
                                  [*([mlflow_secret] if mlflow_secret else []), *env_secrets]),
            },
        },
    }


def _pod_spec(model: str, version: str, serving: KubernetesServing, env: Mapping[str, str], secret: str,
              env_secrets: Sequence[str]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "serving",
        "image": serving.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["airflow-mlops"],
        "args": ["serve", "--model", model, "--host", "0.0.0.0", "--port", str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": _env(model, version, env, secret),
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5,
                           "timeoutSeconds": 2, "failureThreshold": 3},
        # Loading a model can take a while: /health answers as soon as the process is up.
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "initialDelaySeconds": 10,
                          "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 6},
        "resources": {"requests": {"cpu": serving.cpu, "memory": serving.memory},
                      "limits": {"memory": serving.memory}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
    }
    if env_secrets:
        container["envFrom"] = [{"secretRef": {"name": name}} for name in dict.fromkeys(env_secrets)]
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "runAsUser": SERVING_UID, "runAsGroup": SERVING_UID,
                            "fsGroup": SERVING_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}}],
    }


def _env(model: str, version: str, extra_env: Mapping[str, str], secret: str) -> list[dict[str, Any]]:
    plain = {
        **{key: extra_env[key] for key in ("MLFLOW_TRACKING_URI",) if key in extra_env},
        "MLOPS_SERVING_MODEL": model,
        "MLOPS_SERVING_MODEL_VERSION": version,
        "MLOPS_HOME": f"{SCRATCH}/mlops",
        "HOME": SCRATCH,
        "TMPDIR": SCRATCH,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        **{key: str(value) for key, value in extra_env.items()},
    }
    env: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in plain.items()]
    env.append({"name": "MLOPS_SERVING_ADMIN_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": ADMIN_SECRET_KEY, "optional": True}}})
    return env


def service(model: str, serving: KubernetesServing) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": object_name(model), "namespace": serving.namespace,
                     "labels": {**selector_labels(model), "app.kubernetes.io/managed-by": FIELD_MANAGER}},
        "spec": {"type": "ClusterIP", "selector": selector_labels(model),
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }


def check_round_trip(manifest: Mapping[str, Any]) -> None:
    """Refuse a manifest the kubernetes client would silently change: an unknown or misspelt field is
    dropped on deserialization, so the object must survive a round trip unchanged (runtime check; the
    tests also validate against the OpenAPI schema in strict mode, and the API server is asked for
    fieldValidation=Strict)."""
    import json

    from kubernetes.client import ApiClient

    kinds = {"Deployment": "V1Deployment", "Service": "V1Service"}
    kind = str(manifest.get("kind"))
    if kind not in kinds:
        raise ValueError(f"kind: got {kind!r}; only {sorted(kinds)} are rendered here")
    client = ApiClient()
    response = type("Response", (), {"data": json.dumps(manifest)})()
    again = client.sanitize_for_serialization(client.deserialize(response, kinds[kind]))
    if again != json.loads(json.dumps(manifest)):
        lost = sorted(_diff(json.loads(json.dumps(manifest)), again))
        raise ValueError(f"{kind} {manifest['metadata']['name']}: fields the Kubernetes API does not know: {lost}")


def _diff(sent: Any, kept: Any, path: str = "") -> list[str]:
    if isinstance(sent, dict) and isinstance(kept, dict):
        return [p for key in sent for p in _diff(sent[key], kept.get(key), f"{path}.{key}" if path else key)]
    if isinstance(sent, list) and isinstance(kept, list) and len(sent) == len(kept):
        return [p for i, (a, b) in enumerate(zip(sent, kept, strict=True)) for p in _diff(a, b, f"{path}[{i}]")]
    return [] if sent == kept else [path]


def rollout_state(deployment: Mapping[str, Any]) -> tuple[str, str]:
    """('complete' | 'progressing' | 'failed', why) of a Deployment read from the API (camelCase dict).

    Complete like `kubectl rollout status`: the controller saw the newest spec (observedGeneration >=
    generation) and every replica is updated and available, with no old replica left.
    """
    meta, spec, status = deployment.get("metadata", {}), deployment.get("spec", {}), deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    generation, observed = int(meta.get("generation") or 0), int(status.get("observedGeneration") or 0)
    updated, available = int(status.get("updatedReplicas") or 0), int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "failed", f"progress deadline exceeded: {condition.get('message') or 'no message'}"
    counts = f"{updated}/{wanted} updated, {available}/{wanted} available, {total} total"
    if observed < generation:
        return "progressing", f"controller has not seen generation {generation} yet (observed {observed}); {counts}"
    if updated == wanted and available == wanted and total == wanted:
        return "complete", counts
    return "progressing", counts


def example() -> str:
    """The demo model's manifests as YAML (what docker/k8s/serving-deployment.yaml holds)."""
    import yaml

    from airflow_mlops.core.spec import KubernetesServing

    objects = render("ride_completion", EXAMPLE_VERSION, KubernetesServing(namespace="mlops"),
                     tracking_uri=EXAMPLE_TRACKING_URI)
    header = ("# Generated by `python -m airflow_mlops.core.k8s_manifests` from core/k8s_manifests.py for the demo\n"
              "# model (ride_completion v1, spec serving.kubernetes defaults, namespace mlops). Do not edit by hand:\n"
              "# DeployModelOperator(target='kubernetes') renders and applies the same objects for each new version.\n"
              f"# The admin token Secret: kubectl -n mlops create secret generic {admin_secret_name('ride_completion')}"
              f" --from-literal={ADMIN_SECRET_KEY}=<token>\n")
    return header + "---\n".join(yaml.safe_dump(obj, sort_keys=False) for obj in objects)


if __name__ == "__main__":
    print(example(), end="")
