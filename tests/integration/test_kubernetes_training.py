"""Training in a pod, without a cluster: the same code, and the pod Airflow would send.

1. "Same code": the training pod's command line (`airflow-mlops train-job --request ...`, rendered
   by KubernetesTrainModelOperator) runs as a real subprocess of the installed console script, with
   the pod's env, its MLOPS_HOME "mount" elsewhere than the worker's, against a SQLite MLflow store.
   Its run must equal the in-process SklearnTrainModelOperator's: tags, params, metrics.
2. "What would be sent": dag.test() of a DAG with the operator, in a subprocess. The only stand-in
   is the Kubernetes API server: a local HTTP server that records the pod-creation request and
   answers 403 (so nothing runs). Everything before it is Airflow's: DAG parsing, the XCom of the
   upstream task, template rendering, the pod build and the kubernetes client's serialization.
   The recorded body is validated against the Kubernetes OpenAPI schema (strict).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from airflow_mlops.core import lineage
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.jobs.training import TrainingRequest
from support.airflow_db import migrated_airflow_home
from support.dag_runs import dag_file, program, run_script
from support.training_sets import demo_training_set

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MLFLOW_SERVER = "http://mlflow.mlops.svc.cluster.local:5000"
KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{{name: test, cluster: {{server: "{server}"}}}}]
users: [{{name: test, user: {{token: not-a-token}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test}}}}]
current-context: test
"""


def kubernetes_spec(models_dir: Path | None = None, **compute: Any) -> Any:
    """The demo spec with training on Kubernetes and a small, fast estimator config."""
    from airflow_mlops.core.spec import parse_spec

    data = yaml.safe_load((PROJECT / "include" / "models" / "ride_completion.yaml").read_text())
    data["training"]["params"] = {"max_iter": 15, "max_leaf_nodes": 8}
    data["training"]["compute"] = {"backend": "kubernetes", "kubernetes": {"namespace": "ml", **compute}}
    text = yaml.safe_dump(data)
    if models_dir is not None:
        models_dir.mkdir(parents=True, exist_ok=True)
        (models_dir / "ride_completion.yaml").write_text(text)
    return parse_spec(text, "ride_completion.yaml")


@pytest.fixture
def training_set(mlops_home: Path, small_demo: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    return demo_training_set(small_demo, mlops_home / "training_sets" / "ride_completion")


def context(operator: Any) -> dict[str, Any]:
    dag = SimpleNamespace(dag_id="ride_completion__train")
    run_id = "manual__2026-10-04T00:00:00+00:00"
    ti = SimpleNamespace(task_id="train", try_number=1, dag_id=dag.dag_id, run_id=run_id, map_index=-1)
    return {"dag": dag, "ti": ti, "task": operator, "run_id": run_id, "logical_date": None}


def rendered_pod(spec: Any, training_set: Any, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The pod KubernetesTrainModelOperator builds for this task instance (MLflow server connection)."""
    from kubernetes.client import ApiClient

    from airflow_mlops.operators.kubernetes import kubernetes_train_operator

    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
    with monkeypatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
        patch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": MLFLOW_SERVER}))
        operator = kubernetes_train_operator(task_id="train", spec=spec, training_set=training_set)
        ctx = context(operator)
        operator.render_template_fields(ctx)
        return ApiClient().sanitize_for_serialization(operator.build_pod_request_obj(ctx))


def test_pod_command_runs_the_same_job_as_the_in_process_operator(
    training_set: dict[str, Any], mlops_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_mlops.operators.kubernetes import job_request
    from airflow_mlops.operators.training import SklearnTrainModelOperator

    spec = kubernetes_spec()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(server="http://127.0.0.1:9"))
    pod = rendered_pod(spec, training_set, kubeconfig, monkeypatch)
    base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")

    # What the DAG factory builds for compute.backend: local, from the same spec.
    in_process = SklearnTrainModelOperator(task_id="train", training_set=training_set, **job_request(spec))
    local = in_process.execute(context(in_process))

    # The pod's state volume: the same files, mounted at another path than the worker's MLOPS_HOME.
    mount = tmp_path / "pod_mount"
    shutil.copytree(mlops_home / "training_sets", mount / "training_sets")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    xcom_file = tmp_path / "airflow" / "xcom" / "return.json"
    env = {e["name"]: e["value"] for e in base["env"]}
    assert env["MLOPS_HOME"] == "/mlops" and env["MLFLOW_TRACKING_URI"] == MLFLOW_SERVER
    env.update(
        PATH=f"{VENV_BIN}:/usr/bin:/bin",
        MLOPS_HOME=str(mount),
        HOME=str(scratch),
        TMPDIR=str(scratch),
        AIRFLOW_HOME=str(scratch / "airflow"),
        # A SQLite store stands in for the MLflow server the pod would reach (same store as in-process).
        MLFLOW_TRACKING_URI=MLflowHook().tracking_uri,
    )
    args = [a if a != "/airflow/xcom/return.json" else str(xcom_file) for a in base["args"]]
    command = [str(VENV_BIN / base["command"][0]), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=scratch, check=False)
    assert done.returncode == 0, done.stderr[-4000:]

    result = json.loads(done.stdout)
    assert json.loads(xcom_file.read_text()) == result
    assert set(result) == {"run_id", "model_uri", "metrics", "experiment_id"}
    assert result["model_uri"].startswith("models:/m-") and result["experiment_id"] == local["experiment_id"]
    assert result["metrics"] == local["metrics"]  # same data, same seed, same code
    client = MLflowHook().get_conn()
    pod_run, local_run = client.get_run(result["run_id"]), client.get_run(local["run_id"])
    assert pod_run.info.status == "FINISHED" and pod_run.info.run_name == local_run.info.run_name

    def ours(tags: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in tags.items() if k.startswith(lineage.TAG_PREFIX)}

    assert ours(pod_run.data.tags) == ours(local_run.data.tags)
    # same spec hash and training fingerprint wherever it trained: a pod retrain of a local version is a repeat
    assert len(pod_run.data.tags[lineage.TAG_FINGERPRINT]) == len(pod_run.data.tags[lineage.TAG_SPEC_SHA256]) == 64
    assert pod_run.data.tags[lineage.TAG_TRAINING_SET_PATH] == training_set["path"]  # as recorded on the worker
    assert pod_run.data.tags[lineage.TAG_DAG_ID] == "ride_completion__train"
    assert pod_run.data.params == local_run.data.params
    assert {a.path for a in client.list_artifacts(result["run_id"], "training_set")} == {"training_set/lineage.json"}
    assert not (mount / "mlflow").exists(), "the pod wrote nothing to its (read-only) state volume"


def test_train_job_errors_name_the_problem(training_set: dict[str, Any], tmp_path: Path) -> None:
    request = TrainingRequest(
        model_name="ride_completion",
        training_set=training_set,
        estimator="sklearn.linear_model.LogisticRegression",
        label="completed",
        snapshot="training_sets/ride_completion/ride_completion.parquet",
    )
    empty_mount = tmp_path / "empty_mount"
    empty_mount.mkdir()
    env = {"PATH": os.environ["PATH"], "MLOPS_HOME": str(empty_mount), "HOME": str(tmp_path)}
    command = [str(VENV_BIN / "airflow-mlops"), "train-job", "--request", request.to_json()]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert "training set snapshot training_sets/ride_completion/ride_completion.parquet not found under" in done.stderr
    assert "state_volume_claim" in done.stderr
    bad = subprocess.run(
        [str(VENV_BIN / "airflow-mlops"), "train-job", "--request", '{"model_name": "m"}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert bad.returncode == 2 and "missing keys ['estimator', 'label', 'training_set']" in bad.stderr


# ------------------------------------------------------------------------ dag.test, no cluster
class FakeApiServer(ThreadingHTTPServer):
    """Records what a Kubernetes API server would receive; refuses to create pods (no cluster here)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ApiHandler)
        self.requests: list[tuple[str, str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


REFUSAL = "no Kubernetes cluster in this test: the pod request was recorded, not run"


class _ApiHandler(BaseHTTPRequestHandler):
    server: FakeApiServer

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # http.server's naming
        self.server.requests.append(("GET", self.path, None))
        if self.path.split("?")[0].endswith("/pods"):  # the operator looks for a pod of an earlier try
            self._reply(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
        else:
            self._reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(("POST", self.path, body))
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden"}
        self._reply(403, {**status, "message": REFUSAL})

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


DAG_FILE = dag_file("k8s_train")

RUNNER = program("kubernetes_training_runner")


def test_dag_test_sends_a_valid_pod_to_the_api_server(
    training_set: dict[str, Any], tmp_path: Path, mlops_home: Path, api_server: FakeApiServer
) -> None:
    import kubernetes_validate

    kubernetes_spec(tmp_path / "models", cpu="750m", memory="1536Mi", service_account="trainer")
    dags = tmp_path / "dags"
    dags.mkdir()
    lineage_file = tmp_path / "lineage.json"
    lineage_file.write_text(json.dumps(training_set))
    (dags / "k8s_train.py").write_text(DAG_FILE)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(server=api_server.url))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "MLFLOW_", "KUBE"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_KUBERNETES_DEFAULT=json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
        ),
        AIRFLOW_CONN_MLFLOW_DEFAULT=json.dumps({"conn_type": "mlflow", "host": MLFLOW_SERVER}),
        MLOPS_HOME=str(mlops_home),
        NO_PROXY="127.0.0.1,localhost",
        TEST_DAG_PARAMS=json.dumps({"models_dir": str(tmp_path / "models"), "lineage_file": str(lineage_file)}),
    )
    migrated_airflow_home(Path(env["AIRFLOW_HOME"]))  # one migrate per session, copied
    done = run_script(RUNNER, str(dags), env=env, cwd=tmp_path, timeout=300)
    output = done.stdout + done.stderr
    assert "STATE failed" in output and REFUSAL in output, output[-4000:]

    posts = [(path, body) for method, path, body in api_server.requests if method == "POST"]
    assert [path for path, _ in posts] == ["/api/v1/namespaces/ml/pods"], api_server.requests
    pod = posts[0][1]
    kubernetes_validate.validate(pod, "1.31", strict=True)
    base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    assert base["resources"]["requests"] == {"cpu": "750m", "memory": "1536Mi"}
    assert pod["spec"]["serviceAccountName"] == "trainer"
    assert any(c["name"] == "airflow-xcom-sidecar" for c in pod["spec"]["containers"])
    request = TrainingRequest.from_json(base["args"][base["args"].index("--request") + 1])
    assert request.training_set["sha256"] == training_set["sha256"]  # pulled from the upstream task's XCom
    assert request.snapshot == "training_sets/ride_completion/ride_completion.parquet"
    assert request.airflow["dag_id"] == "k8s_train" and request.airflow["task_id"] == "train"
    assert request.airflow["run_id"].startswith("manual__") and request.airflow["try_number"] == "1"
    labels = pod["metadata"]["labels"]
    assert labels["dag_id"] == "k8s_train" and labels["airflow_kpo_in_cluster"] == "False"
