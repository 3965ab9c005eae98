"""The training pod, rendered by the real KubernetesPodOperator and validated against Kubernetes' schema.

No cluster exists here, so nothing is sent: the operator renders its template fields and builds the
pod request exactly as `execute()` would, the kubernetes client serializes it as it would for the
API server, and `kubernetes_validate` checks it against the Kubernetes OpenAPI schema (strict: an
unknown field fails). The kubeconfig points at a closed local port; building the client never
connects. tests/integration/test_kubernetes_training.py sends the same pod through dag.test().
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from airflow_mlops.core.spec import ModelSpec, parse_spec
from airflow_mlops.exceptions import MLOpsError, SpecError, TrainingSetError
from airflow_mlops.jobs.training import TrainingRequest, relative_snapshot

pytestmark = pytest.mark.adapter

PROJECT = Path(__file__).resolve().parents[2]
K8S_VERSIONS = ("1.31", "1.37")  # oldest supported upstream minor we target, newest the validator ships
MLFLOW_SERVER = "http://mlflow.mlops.svc.cluster.local:5000"
COMPUTE = {
    "backend": "kubernetes",
    "kubernetes": {
        "image": "registry.example.com/airflow-mlops:1.4.2",
        "namespace": "ml-training",
        "service_account": "trainer",
        "cpu": "1500m",
        "memory": "3Gi",
        "state_volume_claim": "mlops-state-rwx",
        "node_selector": {"pool": "training"},
        "startup_timeout_seconds": 300,
    },
}
KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: none, user: {token: not-a-token}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def make_spec(**compute: Any) -> ModelSpec:
    """The shipped demo spec with its training moved to Kubernetes (parsed like a user's file)."""
    data = yaml.safe_load((PROJECT / "include" / "models" / "ride_completion.yaml").read_text())
    data["training"]["compute"] = {**COMPUTE, "kubernetes": {**COMPUTE["kubernetes"], **compute}}
    return parse_spec(yaml.safe_dump(data), "ride_completion.yaml")


@pytest.fixture
def cluster_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "kubeconfig"
    config.write_text(KUBECONFIG)
    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(config)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": MLFLOW_SERVER}))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    return config


@pytest.fixture
def lineage_record(mlops_home: Path) -> dict[str, Any]:
    """What the training-set task returns: an absolute snapshot path under the worker's MLOPS_HOME."""
    path = mlops_home / "training_sets" / "ride_completion" / "20261004.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 not read by the worker")
    return {"path": str(path), "sha256": "ab" * 32, "rows": 1200, "feature_service": "ride_completion_v1"}


def task_context(operator: Any, try_number: int = 1) -> dict[str, Any]:
    dag = SimpleNamespace(dag_id="ride_completion__train")
    run_id = "scheduled__2026-10-04T00:00:00+00:00"
    ti = SimpleNamespace(task_id="train", try_number=try_number, dag_id=dag.dag_id, run_id=run_id, map_index=-1)
    return {"dag": dag, "ti": ti, "task": operator, "run_id": run_id, "logical_date": None}


def render(spec: ModelSpec, training_set: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Template rendering and pod building as KubernetesPodOperator.execute() does them."""
    from kubernetes.client import ApiClient

    from airflow_mlops.operators.kubernetes import kubernetes_train_operator

    operator = kubernetes_train_operator(task_id="train", spec=spec, training_set=training_set, **kwargs)
    context = task_context(operator)
    operator.render_template_fields(context)
    pod = operator.build_pod_request_obj(context)
    return operator, ApiClient().sanitize_for_serialization(pod)


def validate(pod: dict[str, Any]) -> None:
    import kubernetes_validate

    for version in K8S_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


def container(pod: dict[str, Any], name: str = "base") -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


def test_rendered_pod_is_valid_and_carries_the_spec(cluster_config: Path, lineage_record: dict[str, Any]) -> None:
    _, pod = render(make_spec(), lineage_record)
    validate(pod)
    spec, base = pod["spec"], container(pod)
    assert pod["metadata"]["namespace"] == "ml-training"
    assert pod["metadata"]["name"].startswith("train-ride-completion-")
    assert base["image"] == "registry.example.com/airflow-mlops:1.4.2"
    quantities = {"cpu": "1500m", "memory": "3Gi"}
    assert base["resources"] == {"requests": quantities, "limits": quantities}
    assert spec["serviceAccountName"] == "trainer" and spec["automountServiceAccountToken"] is False
    assert spec["nodeSelector"] == {"pool": "training"}
    assert spec["restartPolicy"] == "Never"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["mlops-state"]["persistentVolumeClaim"] == {"claimName": "mlops-state-rwx", "readOnly": True}
    mounts = {m["name"]: m for m in base["volumeMounts"]}
    assert mounts["mlops-state"] == {"name": "mlops-state", "mountPath": "/mlops", "readOnly": True}
    assert mounts["scratch"]["mountPath"] == "/tmp" and "emptyDir" in volumes["scratch"]
    env = {e["name"]: e["value"] for e in base["env"]}
    assert env["MLOPS_HOME"] == "/mlops" and env["MLFLOW_TRACKING_URI"] == MLFLOW_SERVER
    assert env["AIRFLOW_HOME"].startswith("/tmp/") and env["HOME"] == "/tmp"
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "airflow-mlops" and labels["airflow-mlops/model"] == "ride_completion"
    assert labels["dag_id"] == "ride_completion__train" and labels["run_id"] and labels["try_number"] == "1"


def test_command_runs_train_job_with_the_request(cluster_config: Path, lineage_record: dict[str, Any]) -> None:
    _, pod = render(make_spec(), lineage_record)
    base = container(pod)
    assert base["command"] == ["airflow-mlops"]
    assert base["args"][:2] == ["train-job", "--request"]
    assert base["args"][3:] == ["--xcom-file", "/airflow/xcom/return.json"]
    request = TrainingRequest.from_json(base["args"][2])
    assert request.training_set == lineage_record  # logged as recorded on the worker
    assert request.snapshot == "training_sets/ride_completion/20261004.parquet"  # resolved under /mlops
    assert request.airflow == {
        "dag_id": "ride_completion__train",
        "run_id": "scheduled__2026-10-04T00:00:00+00:00",
        "task_id": "train",
        "try_number": "1",
    }
    assert request.model_name == "ride_completion" and request.label == "completed"
    assert request.estimator == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert request.params == {"max_iter": 150, "learning_rate": 0.1, "max_leaf_nodes": 31}
    assert request.exclude_columns == ["driver_id"] and request.split == {"method": "time", "test_size": 0.2}


def test_security_context_and_xcom_sidecar(cluster_config: Path, lineage_record: dict[str, Any]) -> None:
    operator, pod = render(make_spec(), lineage_record)
    pod_context = pod["spec"]["securityContext"]
    assert pod_context["runAsNonRoot"] is True and pod_context["runAsUser"] == 50000
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    sidecar = container(pod, "airflow-xcom-sidecar")
    for each in (container(pod), sidecar):
        assert each["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
    assert {"name": "xcom", "mountPath": "/airflow/xcom"} in container(pod)["volumeMounts"]
    assert {"name": "xcom", "mountPath": "/airflow/xcom"} in sidecar["volumeMounts"]
    assert operator.do_xcom_push is True and operator.get_logs is True and operator.multiple_outputs is True
    assert operator.on_finish_action.value == "delete_pod"
    assert operator.startup_timeout_seconds == 300


def test_the_validator_is_strict(cluster_config: Path, lineage_record: dict[str, Any]) -> None:
    import kubernetes_validate

    _, pod = render(make_spec(), lineage_record)
    container(pod)["resourceLimits"] = {"cpu": "1"}  # a typo'd field the API server would drop or refuse
    with pytest.raises(kubernetes_validate.ValidationError, match="resourceLimits"):
        kubernetes_validate.validate(pod, K8S_VERSIONS[0], strict=True)


def test_operator_class_is_a_kubernetes_pod_operator(cluster_config: Path) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from airflow_mlops.operators import kubernetes

    cls = kubernetes.KubernetesTrainModelOperator
    assert issubclass(cls, KubernetesPodOperator) and cls is kubernetes.operator_class()
    assert (cls.__module__, cls.__qualname__) == ("airflow_mlops.operators.kubernetes", "KubernetesTrainModelOperator")
    assert set(KubernetesPodOperator.template_fields) | {"training_set"} == set(cls.template_fields)
    assert "(templated)" in (cls.__doc__ or "")


def test_training_set_may_be_json_text(cluster_config: Path, lineage_record: dict[str, Any]) -> None:
    _, pod = render(make_spec(), json.dumps(lineage_record))
    assert TrainingRequest.from_json(container(pod)["args"][2]).training_set == lineage_record


def test_kwargs_override_spec_arguments(cluster_config: Path, lineage_record: dict[str, Any]) -> None:
    _, pod = render(make_spec(), lineage_record, image_pull_policy="Always", labels={"team": "ml"})
    validate(pod)
    labels = pod["metadata"]["labels"]
    assert container(pod)["imagePullPolicy"] == "Always" and labels["team"] == "ml"
    assert labels["app.kubernetes.io/name"] == "airflow-mlops", "spec labels are kept"


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("change", "field"),
    [({"cpu": "two"}, "training.compute.kubernetes.cpu"), ({"memory": "2GB"}, "training.compute.kubernetes.memory")],
)
def test_malformed_quantity_is_a_spec_error(change: dict[str, str], field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        make_spec(**change)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [({"cpu": "0"}, r"\.cpu: got '0'; must be at least 1m"), ({"memory": "2"}, r"\.memory: got '2' \(2 bytes\)")],
)
def test_too_small_quantity_fails_when_the_dag_is_built(change: dict[str, str], fragment: str) -> None:
    from airflow_mlops.operators.kubernetes import kubernetes_train_operator

    with pytest.raises(SpecError, match=r"ride_completion\.yaml: training\.compute\.kubernetes" + fragment):
        kubernetes_train_operator(task_id="train", spec=make_spec(**change), training_set={})


@pytest.mark.parametrize(
    ("mlflow_conn", "fragment"),
    [
        (None, r"^MLflow store sqlite:///.* \(from defaults\) .*: it is a file on this worker, which a pod cannot"),
        (
            {"host": "sqlite:////data/mlflow.db"},
            r"^MLflow store sqlite:////data/mlflow\.db \(from connection mlflow_def",
        ),
        ({"host": "http://localhost:5000"}, r"pod: localhost inside a pod is the pod itself; point connection"),
        (
            {"host": "https://mlflow.example.com", "login": "bot", "password": "s3cret"},
            r"needs credentials.*mlflow_sec",
        ),
        ({"host": "postgresql://mlflow@db.mlops.svc/mlflow"}, r"artifact_root /.* is a path on this worker; set the"),
    ],
)
def test_tracking_store_a_pod_cannot_use_fails_before_any_pod(
    cluster_config: Path,
    lineage_record: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    mlflow_conn: dict[str, str] | None,
    fragment: str,
) -> None:
    from airflow_mlops.exceptions import ComputeConfigError

    if mlflow_conn is None:
        monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT")  # embedded default: SQLite in MLOPS_HOME
    else:
        monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", **mlflow_conn}))
    with pytest.raises(ComputeConfigError, match=fragment) as caught:
        render(make_spec(), lineage_record)
    assert "cannot be used by a training pod" in str(caught.value) and "s3cret" not in str(caught.value)


def test_database_store_with_object_store_artifacts_is_passed_on(
    cluster_config: Path, lineage_record: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "mlflow", "host": "postgresql://db.mlops.svc/mlflow", "extra": {"artifact_root": "s3://ml/a"}}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))
    _, pod = render(make_spec(), lineage_record)
    env = {e["name"]: e["value"] for e in container(pod)["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "postgresql://db.mlops.svc/mlflow"
    assert env["MLOPS_MLFLOW_ARTIFACT_ROOT"] == "s3://ml/a"


def test_credentials_come_from_a_secret_never_the_pod_spec(
    cluster_config: Path, lineage_record: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "mlflow", "host": "https://mlflow.example.com", "login": "bot", "password": "s3cret"}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))
    _, pod = render(make_spec(), lineage_record, mlflow_secret="mlflow-credentials")
    validate(pod)
    assert container(pod)["envFrom"] == [{"secretRef": {"name": "mlflow-credentials"}}]
    assert not any(e["name"].startswith("MLFLOW_") for e in container(pod)["env"])
    assert "s3cret" not in json.dumps(pod)


def test_snapshot_outside_mlops_home_is_refused(cluster_config: Path, lineage_record: dict[str, Any]) -> None:
    outside = {**lineage_record, "path": "/srv/elsewhere/training.parquet"}
    with pytest.raises(TrainingSetError, match=r"/srv/elsewhere/training\.parquet is outside MLOPS_HOME"):
        render(make_spec(), outside)


def test_relative_snapshot(tmp_path: Path) -> None:
    assert relative_snapshot(tmp_path / "training_sets" / "a.parquet", tmp_path) == "training_sets/a.parquet"
    assert relative_snapshot("training_sets/a.parquet", tmp_path) == "training_sets/a.parquet"
    with pytest.raises(TrainingSetError, match="outside MLOPS_HOME"):
        relative_snapshot("../a.parquet", tmp_path)


def test_request_round_trip_and_errors() -> None:
    request = TrainingRequest(
        model_name="m", training_set={"path": "/x.parquet", "sha256": "ab"}, estimator="a.B", label="y", seed=3
    )
    assert TrainingRequest.from_json(request.to_json()) == request
    assert request.run_name == "m-adhoc"
    data = json.loads(request.to_json())
    typo = {**{k: v for k, v in data.items() if k != "label"}, "labels": "y"}
    with pytest.raises(MLOpsError, match=r"unknown keys \['labels'\], missing keys \['label'\]"):
        TrainingRequest.from_dict(typo)
    with pytest.raises(MLOpsError, match="not valid JSON"):
        TrainingRequest.from_json("{oops")
    with pytest.raises(MLOpsError, match=r"params must be an object"):
        TrainingRequest.from_dict({**data, "params": [1]})


def test_importing_the_module_does_not_import_the_provider() -> None:
    code = (
        "import sys, airflow_mlops.operators.kubernetes\n"
        "slow = ('kubernetes', 'airflow.providers.cncf.kubernetes.operators')\n"
        "heavy = [m for m in sys.modules if m.startswith(slow)]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_pods_result_is_reported_to_openlineage(cluster_config: Path, lineage_record: dict[str, Any]) -> None:
    """The pod's run, as the xcom sidecar returns it, becomes snapshot -> logged model (as in-process training)."""
    from airflow_mlops.core.lineage_names import mlflow_namespace
    from airflow_mlops.operators.kubernetes import _remembered

    operator, _ = render(make_spec(), lineage_record)
    context = task_context(operator)
    assert operator.get_openlineage_facets_on_complete(context["ti"]) is None  # before the pod returned
    result = {"run_id": "r1", "model_uri": "models:/m-abc", "metrics": {}, "experiment_id": "1"}
    assert _remembered(operator, context, result) is result
    found = operator.get_openlineage_facets_on_complete(context["ti"])
    assert [(d.namespace, d.name) for d in found.inputs] == [("file", lineage_record["path"])]
    assert [(d.namespace, d.name) for d in found.outputs] == [(mlflow_namespace(MLFLOW_SERVER), "logged_models/m-abc")]
