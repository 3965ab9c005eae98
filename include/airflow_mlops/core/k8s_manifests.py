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
  Secret (key `admin-token`), never in the manifest;
- Feast (`Backends`): the registry the feature DAG writes (MLOPS_HOME/feast/registry.db) mounted
  read-only at the pods' MLOPS_HOME/feast, from the state PVC (its `feast/` folder) or a ConfigMap
  (key `registry.db`); the online store (MLOPS_FEAST_ONLINE_STORE, Redis) and the prediction log
  (MLOPS_PREDICTION_LOG_URL, PostgreSQL) as plain env without passwords (a URL with a password is
  refused: put it in a Secret and pass it in `env_secrets`, it then arrives by envFrom);
- a startup probe on /health gives the process time to import and start (liveness only after it).

`python -m airflow_mlops.core.k8s_manifests` prints the demo example kept in
docker/k8s/serving-deployment.yaml (a unit test checks they agree).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

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
MLOPS_HOME = f"{SCRATCH}/mlops"
FEAST_DIR = f"{MLOPS_HOME}/feast"  # config.Paths.feast_dir of the pods: FeastHook reads registry.db here
REGISTRY_FILE = "registry.db"
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
REGISTRY_VOLUME = "feast-registry"
STATE_FEAST_SUBPATH = "feast"  # the feature DAG writes MLOPS_HOME/feast/registry.db on the state PVC


@dataclass(frozen=True)
class Backends:
    """What the serving pods reach besides MLflow (spec serving.kubernetes; all optional).

    :param state_volume_claim: PVC holding MLOPS_HOME; its `feast/` folder (the Feast registry) is
        mounted read-only at the pods' MLOPS_HOME/feast.
    :param registry_configmap: instead of the PVC, a ConfigMap whose key `registry.db` is the registry.
    :param online_store: MLOPS_FEAST_ONLINE_STORE, e.g. redis://redis:6379/0 (no password in it).
    :param prediction_log_url: MLOPS_PREDICTION_LOG_URL, e.g. postgresql://mlops@pg:5432/mlops (no password).
    """

    state_volume_claim: str | None = None
    registry_configmap: str | None = None
    online_store: str | None = None
    prediction_log_url: str | None = None

    @classmethod
    def pop_from(cls, raw: dict[str, Any]) -> Backends:
        """Take this class's fields out of a serving.kubernetes mapping (the rest is KubernetesServing)."""
        return cls(**{f.name: raw.pop(f.name) or None for f in fields(cls) if f.name in raw})

    def check(self) -> None:
        """ValueError naming the field, the rule and the fix."""
        if self.state_volume_claim and self.registry_configmap:
            raise ValueError(f"serving.kubernetes: state_volume_claim ({self.state_volume_claim!r}) and "
                             f"registry_configmap ({self.registry_configmap!r}) both give the Feast registry; "
                             "keep one")
        if self.online_store and not (self.state_volume_claim or self.registry_configmap):
            raise ValueError("serving.kubernetes.online_store is set but the pods get no Feast registry to read "
                             "the feature definitions from: set state_volume_claim (the PVC holding MLOPS_HOME) or "
                             "registry_configmap")
        for name in ("state_volume_claim", "registry_configmap"):
            value = getattr(self, name)
            if value is not None and not _DNS_SUBDOMAIN.match(value):
                raise ValueError(f"serving.kubernetes.{name}: got {value!r}; a Kubernetes object name is lowercase "
                                 "letters, digits, '-' and '.', starting and ending alphanumeric (<= 253 chars)")
        for name, schemes in (("online_store", ("redis", "rediss")),
                              ("prediction_log_url", ("postgresql", "postgres"))):
            _check_url(f"serving.kubernetes.{name}", getattr(self, name), schemes)

    def env(self) -> dict[str, str]:
        return {**({"MLOPS_FEAST_ONLINE_STORE": self.online_store} if self.online_store else {}),
                **({"MLOPS_PREDICTION_LOG_URL": self.prediction_log_url} if self.prediction_log_url else {})}

    def volume(self) -> dict[str, Any] | None:
        """The registry volume (read-only), or None when the pods get no registry."""
        if self.state_volume_claim:
            return {"name": REGISTRY_VOLUME,
                    "persistentVolumeClaim": {"claimName": self.state_volume_claim, "readOnly": True}}
        if self.registry_configmap:
            return {"name": REGISTRY_VOLUME, "configMap": {
                "name": self.registry_configmap, "items": [{"key": REGISTRY_FILE, "path": REGISTRY_FILE}]}}
        return None

    def volume_mount(self) -> dict[str, Any]:
        mount = {"name": REGISTRY_VOLUME, "mountPath": FEAST_DIR, "readOnly": True}
        return {**mount, "subPath": STATE_FEAST_SUBPATH} if self.state_volume_claim else mount


EXAMPLE_BACKENDS = Backends(state_volume_claim="mlops-state",
                            online_store="redis://redis.mlops.svc.cluster.local:6379/0",
                            prediction_log_url="postgresql://mlops@postgres.mlops.svc.cluster.local:5432/mlops")


def _check_url(field: str, url: str | None, schemes: Sequence[str]) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] not in schemes or not parts.hostname:  # postgresql+psycopg: a driver suffix
        raise ValueError(f"{field}: got {url!r}; expected {schemes[0]}://host:port/... (schemes: {', '.join(schemes)})")
    if parts.password is not None:
        raise ValueError(f"{field}: the URL holds a password, which anyone who can read the Deployment would see; "
                         f"leave {field} empty and put the variable with the full URL in a Secret passed in "
                         "env_secrets (the pods get it by envFrom)")


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
           extra_env: Mapping[str, str] | None = None, env_secrets: Sequence[str] = (),
           backends: Backends | None = None) -> list[dict[str, Any]]:
    """[Deployment, Service] serving `version` of `model`.

    MLflow is reached through `tracking_uri` (plain env) or `mlflow_secret` (a Secret holding
    MLFLOW_TRACKING_URI and any credentials, mounted with envFrom): exactly one of them. Feast and
    the prediction log through `backends` (registry volume + env, see `Backends`). `env_secrets`
    are more Secrets mounted with envFrom (e.g. one holding a Redis URL with its password);
    `extra_env` are plain variables.
    """
    if (tracking_uri is None) == (mlflow_secret is None):
        raise ValueError("pass exactly one of tracking_uri (an MLflow server URI without credentials) or "
                         f"mlflow_secret (a Secret with MLFLOW_TRACKING_URI); got {tracking_uri!r}, {mlflow_secret!r}")
    (backends or Backends()).check()
    return [deployment(model, version, serving, tracking_uri=tracking_uri, mlflow_secret=mlflow_secret,
                       admin_secret=admin_secret, extra_env=extra_env, env_secrets=env_secrets, backends=backends),
            service(model, serving)]


def deployment(model: str, version: str, serving: KubernetesServing, *, tracking_uri: str | None = None,
               mlflow_secret: str | None = None, admin_secret: str | None = None,
               extra_env: Mapping[str, str] | None = None, env_secrets: Sequence[str] = (),
               backends: Backends | None = None) -> dict[str, Any]:
    name, version, backends = object_name(model), str(version), backends or Backends()
    env = {**({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}), **backends.env(), **(extra_env or {})}
    labels = {**selector_labels(model), "app.kubernetes.io/managed-by": FIELD_MANAGER,
              LABEL_VERSION: label_value(version)}
    annotations = {"airflow-mlops/model-name": model, "airflow-mlops/model-version": version,
                   "airflow-mlops/model-uri": f"models:/{model}/{version}"}
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
                                  [*([mlflow_secret] if mlflow_secret else []), *env_secrets], backends),
            },
        },
    }


def _pod_spec(model: str, version: str, serving: KubernetesServing, env: Mapping[str, str], secret: str,
              env_secrets: Sequence[str], backends: Backends) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "serving",
        "image": serving.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["airflow-mlops"],
        "args": ["serve", "--model", model, "--host", "0.0.0.0", "--port", str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": _env(model, version, env, secret),
        # Importing mlflow/feast/sklearn takes 10-60 s on a small CPU request: the startup probe allows
        # 3 min before liveness starts counting, so a slow start is not a restart loop.
        "startupProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5,
                         "timeoutSeconds": 2, "failureThreshold": 36},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5,
                           "timeoutSeconds": 2, "failureThreshold": 3},
        # Loading a model can take a while: /health answers as soon as the process is up.
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10,
                          "timeoutSeconds": 2, "failureThreshold": 6},
        "resources": {"requests": {"cpu": serving.cpu, "memory": serving.memory},
                      "limits": {"memory": serving.memory}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
    }
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}}]
    registry = backends.volume()
    if registry is not None:  # mounted inside the scratch emptyDir: MLOPS_HOME stays writable, feast/ is not
        volumes.append(registry)
        container["volumeMounts"].append(backends.volume_mount())
    if env_secrets:
        container["envFrom"] = [{"secretRef": {"name": name}} for name in dict.fromkeys(env_secrets)]
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "runAsUser": SERVING_UID, "runAsGroup": SERVING_UID,
                            "fsGroup": SERVING_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }


def _env(model: str, version: str, extra_env: Mapping[str, str], secret: str) -> list[dict[str, Any]]:
    plain = {
        **{key: extra_env[key] for key in ("MLFLOW_TRACKING_URI",) if key in extra_env},
        "MLOPS_SERVING_MODEL": model,
        "MLOPS_SERVING_MODEL_VERSION": version,
        "MLOPS_HOME": MLOPS_HOME,
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
                     tracking_uri=EXAMPLE_TRACKING_URI, backends=EXAMPLE_BACKENDS)
    header = ("# Generated by `python -m airflow_mlops.core.k8s_manifests` from core/k8s_manifests.py for the demo\n"
              "# model (ride_completion v1, spec serving.kubernetes defaults, namespace mlops; Feast registry from\n"
              "# the state PVC mlops-state, Redis online store, PostgreSQL prediction log). Do not edit by hand:\n"
              "# DeployModelOperator(target='kubernetes') renders and applies the same objects for each new version.\n"
              f"# The admin token Secret: kubectl -n mlops create secret generic {admin_secret_name('ride_completion')}"
              f" --from-literal={ADMIN_SECRET_KEY}=<token>\n")
    return header + "---\n".join(yaml.safe_dump(obj, sort_keys=False) for obj in objects)


if __name__ == "__main__":
    print(example(), end="")
