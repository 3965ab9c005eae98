"""KubernetesTrainModelOperator: the training job in a Kubernetes pod (cncf-kubernetes provider).

A `KubernetesPodOperator` whose container runs `airflow-mlops train-job --request <JSON>`: the same
`jobs.training.run_training_job` that `SklearnTrainModelOperator` runs in-process, with the same
request (Airflow identity included), so the MLflow run, its tags and the returned XCom
({run_id, model_uri, metrics, experiment_id}) are the same. The pod comes from the model spec's
`training.compute.kubernetes` (image, namespace, service account, cpu/memory, node selector, the
state volume claim mounted as MLOPS_HOME, startup timeout).

At execute time, on the worker, the request is built from the rendered training-set lineage (its
snapshot path made relative to MLOPS_HOME) and the MLflow connection is turned into pod env; a
tracking store a pod cannot reach (SQLite, a local path, localhost) fails the task before any pod
is created.

Importing the cncf provider costs ~5 s, so nothing here imports it at module level: the operator
class is created on first use (`kubernetes_train_operator()` or attribute access).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_mlops.exceptions import ComputeConfigError, SpecError

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk import Context

    from airflow_mlops.core.spec import KubernetesCompute, ModelSpec
    from airflow_mlops.hooks.mlflow import MLflowSettings

OPERATOR_NAME = "KubernetesTrainModelOperator"
POD_MLOPS_HOME = "/mlops"  # where the state volume claim is mounted inside the pod
SCRATCH_DIR = "/tmp"  # emptyDir: the root filesystem is read-only
XCOM_FILE = "/airflow/xcom/return.json"  # KubernetesPodOperator's xcom sidecar protocol
POD_UID = 50000  # the "astro" user of the Astro Runtime image (root Dockerfile)
STATE_VOLUME = "mlops-state"
SCRATCH_VOLUME = "scratch"
REQUEST_PLACEHOLDER = "<built at execute time from the training-set XCom>"
MIN_MEMORY_BYTES = 256 * 2**20  # Python + pandas + scikit-learn + MLflow need more than this to start
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")
LOCAL_SCHEMES = ("sqlite", "file", "")


def kubernetes_train_operator(
    *,
    task_id: str,
    spec: ModelSpec,
    training_set: Any,
    mlflow_conn_id: str = "mlflow_default",
    mlflow_secret: str | None = None,
    **kwargs: Any,
) -> KubernetesPodOperator:
    """The training task of `spec` as a KubernetesPodOperator (spec.training.compute.kubernetes).

    :param training_set: lineage of the training-set task: its XComArg, dict or JSON text. (templated)
    :param mlflow_conn_id: MLflow connection whose tracking/registry URIs become the pod's env.
    :param mlflow_secret: name of a Kubernetes Secret holding MLFLOW_TRACKING_URI (and
        MLFLOW_TRACKING_USERNAME/PASSWORD...): required when the store needs credentials, which are
        never written into the pod spec; the connection is then not read.
    :param kwargs: any KubernetesPodOperator argument; overrides the spec-derived one (`labels` are merged).
    """
    compute = spec.training.compute.kubernetes
    check_quantities(compute, spec.source_file or spec.name)
    arguments = pod_arguments(spec.name, compute)
    kwargs["labels"] = {**arguments["labels"], **kwargs.get("labels", {})}
    return operator_class()(
        task_id=task_id,
        training_set=training_set,
        job_request=job_request(spec),
        mlflow_conn_id=mlflow_conn_id,
        mlflow_secret=mlflow_secret,
        **{**arguments, **kwargs},
    )


def job_request(spec: ModelSpec) -> dict[str, Any]:
    """The static part of the training request (what SklearnTrainModelOperator gets from the factory)."""
    from airflow_mlops.core.spec import spec_sha256

    train, feats = spec.training, spec.features
    return {
        "model_name": spec.name,
        "estimator": train.estimator,
        "label": feats.label,
        "params": dict(train.params),
        "preprocessing": train.preprocessing.model_dump(),
        "split": train.split.model_dump(),
        "seed": train.seed,
        "timestamp_column": feats.entity_df.timestamp_column,
        "exclude_columns": spec.excluded_columns,  # entity keys and evaluation-only attributes
        "spec_sha256": spec_sha256(spec),
        "search": spec.search_config(),
        "task": spec.task,
        "primary_metric": spec.evaluation.primary_metric,
        "explanations": spec.explanations_config(),
    }


def check_quantities(compute: KubernetesCompute, source: str) -> None:
    """cpu and memory parse as Kubernetes quantities and are large enough to start the job."""
    from kubernetes.utils import parse_quantity

    field = "training.compute.kubernetes"
    cpu, memory = parse_quantity(compute.cpu), parse_quantity(compute.memory)
    problems = []
    if cpu < parse_quantity("1m"):
        problems.append(f"{source}: {field}.cpu: got {compute.cpu!r}; must be at least 1m (e.g. 500m or 2)")
    if memory < MIN_MEMORY_BYTES:
        problems.append(
            f"{source}: {field}.memory: got {compute.memory!r} ({int(memory)} bytes); must be at least 256Mi "
            "for Python, scikit-learn and MLflow (e.g. 2Gi; a bare number means bytes)"
        )
    if problems:
        raise SpecError(problems)


def pod_name(model: str) -> str:
    """DNS-1123 pod name prefix; the provider appends a random suffix."""
    return f"train-{model}".replace("_", "-")[:50].rstrip("-")


def pod_arguments(model: str, compute: KubernetesCompute) -> dict[str, Any]:
    """KubernetesPodOperator arguments for one model's training pod (request and MLflow env come at execute)."""
    from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value
    from kubernetes.client import models as k8s

    quantities = {"cpu": compute.cpu, "memory": compute.memory}
    return {
        "name": pod_name(model),
        "namespace": compute.namespace,
        "image": compute.image,
        "service_account_name": compute.service_account,
        "automount_service_account_token": False,  # the job never calls the Kubernetes API
        "node_selector": dict(compute.node_selector),
        # requests == limits: Guaranteed QoS, so a training pod is evicted last and never overcommits
        "container_resources": k8s.V1ResourceRequirements(requests=quantities, limits=dict(quantities)),
        "volumes": _volumes(compute.state_volume_claim),
        "volume_mounts": [
            k8s.V1VolumeMount(name=STATE_VOLUME, mount_path=POD_MLOPS_HOME, read_only=True),
            k8s.V1VolumeMount(name=SCRATCH_VOLUME, mount_path=SCRATCH_DIR),
        ],
        "env_vars": _static_env(),
        "cmds": ["airflow-mlops"],
        "arguments": ["train-job", "--request", REQUEST_PLACEHOLDER, "--xcom-file", XCOM_FILE],
        "labels": {
            "app.kubernetes.io/name": "airflow-mlops",
            "app.kubernetes.io/component": "training",
            "airflow-mlops/model": make_safe_label_value(model),
        },
        **_security_arguments(),
        "do_xcom_push": True,
        "multiple_outputs": True,  # like SklearnTrainModelOperator: task.output["run_id"] resolves
        "get_logs": True,
        "log_events_on_failure": True,
        "on_finish_action": "delete_pod",
        "startup_timeout_seconds": compute.startup_timeout_seconds,
    }


def _volumes(claim: str) -> list[Any]:
    from kubernetes.client import models as k8s

    return [
        k8s.V1Volume(
            name=STATE_VOLUME,
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=claim, read_only=True),
        ),
        k8s.V1Volume(name=SCRATCH_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource()),
    ]


def _security_arguments() -> dict[str, Any]:
    """Pod Security Standard "restricted": non-root, no privilege escalation, no capabilities,
    RuntimeDefault seccomp; plus a read-only root filesystem (scratch space is an emptyDir)."""
    from kubernetes.client import models as k8s

    def container() -> Any:
        return k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            run_as_non_root=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        )

    return {
        "security_context": k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=POD_UID,
            run_as_group=0,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        "container_security_context": container(),
        "xcom_sidecar_container_security_context": container(),
    }


def _static_env() -> dict[str, str]:
    return {
        "MLOPS_HOME": POD_MLOPS_HOME,
        "AIRFLOW_HOME": f"{SCRATCH_DIR}/airflow",  # `airflow-mlops` creates it; the state volume is read-only
        "HOME": SCRATCH_DIR,
        "TMPDIR": SCRATCH_DIR,
        "PYTHONUNBUFFERED": "1",  # log lines reach the task log as they happen
        "PYTHONDONTWRITEBYTECODE": "1",
    }


# --------------------------------------------------------------------------------- execute time
def mlflow_env(mlflow_conn_id: str) -> dict[str, str]:
    """MLFLOW_* env for the pod from the connection; ComputeConfigError when a pod cannot use it."""
    from airflow_mlops.hooks.mlflow import DB_SCHEMES, MLflowHook, scheme_of

    settings = MLflowHook(mlflow_conn_id).settings
    for uri in dict.fromkeys((settings.tracking_uri, settings.registry_uri)):
        _check_reachable_from_pod(uri, settings, mlflow_conn_id)
    env = {"MLFLOW_TRACKING_URI": settings.tracking_uri}
    if settings.registry_uri != settings.tracking_uri:
        env["MLFLOW_REGISTRY_URI"] = settings.registry_uri
    if scheme_of(settings.tracking_uri) in DB_SCHEMES and settings.artifact_root:
        if scheme_of(settings.artifact_root) in LOCAL_SCHEMES:
            raise _unreachable(
                settings.tracking_uri,
                settings,
                mlflow_conn_id,
                f"a database store writes artifacts from the client, and artifact_root {settings.artifact_root} "
                "is a path on this worker",
                "set the connection extra artifact_root to an object store (s3://..., gs://...) or use an "
                "MLflow server (http://...)",
            )
        env["MLOPS_MLFLOW_ARTIFACT_ROOT"] = settings.artifact_root
    return env


def _check_reachable_from_pod(uri: str, settings: MLflowSettings, conn_id: str) -> None:
    from airflow_mlops.hooks.mlflow import scheme_of

    parts = urlsplit(uri)
    if scheme_of(uri) in LOCAL_SCHEMES:
        reason = "it is a file on this worker, which a pod cannot open"
    elif (parts.hostname or "") in LOCAL_HOSTS:
        reason = f"{parts.hostname} inside a pod is the pod itself"
    elif parts.password or settings.password:
        raise _unreachable(
            uri,
            settings,
            conn_id,
            "it needs credentials, which are never written into a pod spec (it is logged and readable)",
            "store MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_USERNAME/PASSWORD) in a Kubernetes Secret and "
            "pass mlflow_secret=<its name>",
        )
    else:
        return
    raise _unreachable(
        uri,
        settings,
        conn_id,
        reason,
        f"point connection {conn_id!r} at an MLflow server (http://mlflow.<namespace>.svc:5000) or a database "
        "the pod can reach, or set training.compute.backend: local",
    )


def _unreachable(uri: str, settings: MLflowSettings, conn_id: str, reason: str, fix: str) -> ComputeConfigError:
    from airflow_mlops.profile import mask_url

    return ComputeConfigError(
        f"MLflow store {mask_url(uri)} (from {settings.source}) cannot be used by a training pod: {reason}; {fix}"
    )


def prepare_pod(operator: Any, context: Context) -> None:
    """Fill in the request and the MLflow env from the rendered fields and the task instance."""
    from airflow.providers.cncf.kubernetes.backcompat.backwards_compat_converters import convert_env_vars
    from kubernetes.client import models as k8s

    from airflow_mlops import config
    from airflow_mlops.core import lineage
    from airflow_mlops.jobs.training import TrainingRequest, airflow_identity, relative_snapshot

    record = lineage.normalize_lineage(operator.training_set)
    request = TrainingRequest(
        **operator.job_request,
        training_set=record,
        airflow=airflow_identity(context),
        git_commit=lineage.git_commit(config.project_dir()),
        snapshot=relative_snapshot(record["path"], config.mlops_home()),
    )
    env = {} if operator.mlflow_secret else mlflow_env(operator.mlflow_conn_id)
    kept = [var for var in convert_env_vars(operator.env_vars) if var.name not in env]
    operator.env_vars = [*kept, *(k8s.V1EnvVar(name=key, value=value) for key, value in env.items())]
    if operator.mlflow_secret and not any(
        getattr(source.secret_ref, "name", None) == operator.mlflow_secret for source in operator.env_from
    ):
        secret = k8s.V1SecretEnvSource(name=operator.mlflow_secret)
        operator.env_from = [*operator.env_from, k8s.V1EnvFromSource(secret_ref=secret)]
    operator.arguments = ["train-job", "--request", request.to_json(), "--xcom-file", XCOM_FILE]
    operator.log.info("Training request for the pod: %s", request.to_json())


@functools.cache
def operator_class() -> type[KubernetesPodOperator]:
    """The KubernetesPodOperator subclass, created on first use (the provider import is slow)."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from airflow_mlops.boundary import TaskBoundary

    class KubernetesTrainModelOperator(TaskBoundary, KubernetesPodOperator):
        __doc__ = _CLASS_DOC
        template_fields = (*KubernetesPodOperator.template_fields, "training_set")
        template_fields_renderers = {**KubernetesPodOperator.template_fields_renderers, "training_set": "json"}
        ui_color = "#d7ecff"

        def __init__(
            self,
            *,
            training_set: Any,
            job_request: dict[str, Any],
            mlflow_conn_id: str = "mlflow_default",
            mlflow_secret: str | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self.training_set = training_set
            self.job_request = dict(job_request)
            self.mlflow_conn_id = mlflow_conn_id
            self.mlflow_secret = mlflow_secret

        def execute(self, context: Context) -> Any:
            return _remembered(self, context, super().execute(context))

        def trigger_reentry(self, context: Context, event: dict[str, Any]) -> Any:
            return _remembered(self, context, super().trigger_reentry(context, event))

        def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
            """As SklearnTrainModelOperator: the snapshot (input) -> the model the pod's run logged (output)."""
            from airflow_mlops.openlineage.datasets import training_lineage
            from airflow_mlops.openlineage.record import recall

            recorded = recall(self, task_instance)
            return training_lineage(recorded) if recorded else None

        def build_pod_request_obj(self, context: Context | None = None, *, dry_run: bool = False) -> Any:
            if context is not None:  # a dry run without a task instance keeps the request placeholder
                prepare_pod(self, context)
            return super().build_pod_request_obj(context, dry_run=dry_run)

    KubernetesTrainModelOperator.__module__ = __name__
    KubernetesTrainModelOperator.__qualname__ = OPERATOR_NAME
    return KubernetesTrainModelOperator


def _remembered(operator: Any, context: Context, result: Any) -> Any:
    """Keep the pod's result (deferred or not) and the lineage it trained on, for OpenLineage."""
    from airflow_mlops.core.lineage import normalize_lineage
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.openlineage.record import remember

    if isinstance(result, dict) and result.get("model_uri"):
        # the register task names the model through this connection too, so both sides say the same namespace
        remember(operator, context, {"result": result, "training_set": normalize_lineage(operator.training_set),
                                     "registry_uri": MLflowHook(operator.mlflow_conn_id).settings.registry_uri})
    return result


_CLASS_DOC = """Train a model in a Kubernetes pod running `airflow-mlops train-job` (see the module docstring).

    Build it with `kubernetes_train_operator(task_id=..., spec=..., training_set=...)`.

    :param training_set: lineage dict of the training-set task, or its XComArg / JSON text. (templated)
    :param job_request: the static training request (model, estimator, params, label, ...).
    :param mlflow_conn_id: MLflow connection turned into MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI env.
    :param mlflow_secret: Kubernetes Secret with the MLFLOW_* env instead (stores that need credentials).
    :return: {"run_id", "model_uri", "metrics", "experiment_id"} (the xcom sidecar's return.json)
    """


def __getattr__(name: str) -> Any:
    """`from airflow_mlops.operators.kubernetes import KubernetesTrainModelOperator` imports the provider then."""
    if name == OPERATOR_NAME:
        return operator_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
