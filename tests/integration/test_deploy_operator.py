"""DeployModelOperator end to end at the HTTP edge: a fake Kubernetes API server, and the serving app.

Kubernetes: no cluster. A small API server on 127.0.0.1 implements the endpoints the kubernetes
client calls (read/apply/patch a Deployment, its status, apply a Service, list pods), records every
request and plays a scripted rollout (complete, or stuck with ProgressDeadlineExceeded). The
operator reaches it through the cncf KubernetesHook and a kubeconfig file.

Local target: the real serving app (airflow_mlops.serving.app.create_app) under uvicorn on a free
port, over a real SQLite MLflow registry with real sklearn versions; the canary breach is a model
version whose pipeline raises on real traffic (5xx) but passes the app's warm-up.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI, HTTPException, Request, Response  # module level: FastAPI resolves annotations here

from airflow_mlops.core import k8s_manifests as km

pytestmark = pytest.mark.integration

MODEL = "ride_completion"
K8S_VERSIONS = ("1.31", "1.37")
MLFLOW_SERVER = "http://mlflow.mlops.svc.cluster.local:5000"
SERVING = {"image": "registry.example.com/airflow-mlops-serving:1.4.2", "namespace": "ml-serving", "replicas": 2,
           "rollout_timeout_seconds": 30}


# ============================================================================ fake Kubernetes API
@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any


@dataclass
class FakeKube:
    """Deployments/Services in memory; rollouts complete unless the template's version is in `stuck`."""

    stuck: set[str] = field(default_factory=set)
    deadline_after_polls: int | None = 2  # None: a stuck rollout never reports ProgressDeadlineExceeded
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    polls: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -------------------------------------------------------------- objects
    def apply(self, store: dict[str, dict[str, Any]], name: str, body: dict[str, Any]) -> dict[str, Any]:
        live = store.get(name)
        if live is None:
            live = {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": {
                "name": name, "namespace": body["metadata"]["namespace"], "uid": f"uid-{name}", "generation": 0,
                "resourceVersion": "1", "creationTimestamp": "2026-11-25T00:00:00Z", "annotations": {}}, "spec": {}}
            store[name] = live
        meta = live["metadata"]
        meta["labels"] = dict(body["metadata"].get("labels", {}))
        meta["annotations"] = {**{k: v for k, v in meta["annotations"].items() if k.startswith("deployment.")},
                               **body["metadata"].get("annotations", {})}
        if live["spec"] != body["spec"]:
            self.set_spec(live, copy.deepcopy(body["spec"]))
        return live

    def set_spec(self, live: dict[str, Any], spec: dict[str, Any]) -> None:
        template_changed = live["spec"].get("template") != spec.get("template")
        live["spec"] = spec
        meta = live["metadata"]
        meta["generation"] += 1
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        if live["kind"] == "Deployment" and template_changed:
            revision = int(meta["annotations"].get("deployment.kubernetes.io/revision", "0")) + 1
            meta["annotations"]["deployment.kubernetes.io/revision"] = str(revision)
            self.polls[meta["name"]] = 0

    def version(self, live: dict[str, Any]) -> str:
        return str(live["spec"]["template"]["metadata"]["labels"][km.LABEL_VERSION])

    def status(self, live: dict[str, Any]) -> dict[str, Any]:
        name, generation, replicas = live["metadata"]["name"], live["metadata"]["generation"], live["spec"]["replicas"]
        self.polls[name] = polls = self.polls.get(name, 0) + 1
        if polls == 1:  # the controller has not looked yet
            return {"observedGeneration": generation - 1, "replicas": replicas}
        if self.version(live) not in self.stuck:
            return {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": replicas, "availableReplicas": replicas}
        status: dict[str, Any] = {"observedGeneration": generation, "replicas": replicas + 1, "updatedReplicas": 1,
                                  "availableReplicas": replicas, "unavailableReplicas": 1}
        if self.deadline_after_polls is not None and polls > self.deadline_after_polls:
            status["conditions"] = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                     "message": f'ReplicaSet "{name}-x" has timed out progressing.'}]
        return status

    def pods(self) -> list[dict[str, Any]]:
        items = []
        for live in self.deployments.values():
            if self.version(live) in self.stuck:
                items.append({"metadata": {"name": f"{live['metadata']['name']}-x-1"}, "status": {
                    "containerStatuses": [{"name": "serving", "ready": False, "restartCount": 0, "image": "i",
                                           "imageID": "", "state": {"waiting": {
                                               "reason": "ImagePullBackOff",
                                               "message": "Back-off pulling image"}}}]}})
        return items

    # -------------------------------------------------------------- HTTP
    def handle(self, method: str, path: str, query: dict[str, list[str]], content_type: str,
               body: Any) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(Recorded(method, path, query, content_type, copy.deepcopy(body)))
            parts = path.strip("/").split("/")
            if path.startswith("/apis/apps/v1/namespaces/") and parts[5] == "deployments" and len(parts) >= 7:
                return self.deployment(method, parts[6], parts[7:] == ["status"], content_type, body)
            if path.startswith("/api/v1/namespaces/") and parts[4] == "services" and method == "PATCH":
                return 200, self.apply(self.services, parts[5], body)
            if path.startswith("/api/v1/namespaces/") and parts[4] == "pods" and method == "GET":
                return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": self.pods()}
        return 404, not_found(path)

    def deployment(self, method: str, name: str, status: bool, content_type: str,
                   body: Any) -> tuple[int, dict[str, Any]]:
        live = self.deployments.get(name)
        if method == "PATCH" and content_type == "application/apply-patch+yaml":
            live = self.apply(self.deployments, name, body)
        elif method == "PATCH" and content_type == "application/json-patch+json" and live is not None:
            for op in body:
                assert (op["op"], op["path"]) == ("replace", "/spec/template"), op
                self.set_spec(live, {**live["spec"], "template": copy.deepcopy(op["value"])})
        elif method != "GET" or live is None:
            return 404, not_found(name)
        return 200, {**live, "status": self.status(live)} if status else live


def not_found(what: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound",
            "message": f"{what} not found", "code": 404}


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    fake = FakeKube()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            code, payload = fake.handle(self.command, url.path, parse_qs(url.query),
                                        self.headers.get("Content-Type", ""), json.loads(raw) if raw else None)
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_POST = _serve  # http.server's naming

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "fake", "user": {"token": "fake-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }))
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT",
                       json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(config)}}))
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": MLFLOW_SERVER}))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    yield fake
    server.shutdown()
    server.server_close()


def k8s_deploy(version: str, **kwargs: Any) -> dict[str, Any]:
    from airflow_mlops.operators.deployment import DeployModelOperator

    operator = DeployModelOperator(task_id="deploy", model_name=MODEL, version=version, target="kubernetes",
                                   kubernetes=SERVING, poll_interval=0.02, **kwargs)
    return operator.execute({})  # type: ignore[arg-type]


def validate(obj: dict[str, Any]) -> None:
    import kubernetes_validate

    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def sent(kube: FakeKube, method: str, fragment: str, content_type: str | None = None) -> list[Recorded]:
    return [r for r in kube.requests if r.method == method and fragment in r.path
            and (content_type is None or r.content_type == content_type)]


def test_first_kubernetes_deploy_applies_valid_objects_and_waits_for_the_rollout(kube: FakeKube) -> None:
    result = k8s_deploy("7")
    assert result["rollout"]["state"] == "complete" and result["rollout"]["previous_version"] is None
    assert (result["namespace"], result["deployment"], result["version"]) == ("ml-serving", "serving-ride-completion",
                                                                              "7")
    [applied] = sent(kube, "PATCH", "/deployments/serving-ride-completion", "application/apply-patch+yaml")
    [service] = sent(kube, "PATCH", "/services/serving-ride-completion", "application/apply-patch+yaml")
    for request in (applied, service):
        validate(request.body)
        # the client sends force=True; the API server parses booleans with Go's strconv.ParseBool
        assert request.query == {"fieldManager": ["airflow-mlops"], "force": ["True"], "fieldValidation": ["Strict"]}
    assert applied.path == "/apis/apps/v1/namespaces/ml-serving/deployments/serving-ride-completion"
    env = {e["name"]: e.get("value") for e in applied.body["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_URI"] == MLFLOW_SERVER and env["MLOPS_SERVING_MODEL_VERSION"] == "7"
    polls = sent(kube, "GET", "/deployments/serving-ride-completion/status")
    assert len(polls) == 2, "polled until observedGeneration caught up and every replica was available"
    assert not sent(kube, "PATCH", "/deployments/", "application/json-patch+json"), "no rollback"


def test_a_new_version_rolls_out_over_the_old_one(kube: FakeKube) -> None:
    k8s_deploy("7")
    result = k8s_deploy("8")
    assert result["rollout"]["state"] == "complete" and result["rollout"]["previous_version"] == "7"
    assert kube.version(kube.deployments["serving-ride-completion"]) == "8"


def test_a_stuck_rollout_is_rolled_back_to_the_previous_pod_template(kube: FakeKube) -> None:
    from airflow_mlops.operators.deployment import RolloutFailed

    k8s_deploy("7")
    good_template = copy.deepcopy(kube.deployments["serving-ride-completion"]["spec"]["template"])
    kube.stuck = {"8"}
    with pytest.raises(RolloutFailed) as caught:
        k8s_deploy("8")
    message = str(caught.value)
    assert "deployment ml-serving/serving-ride-completion did not roll out v8 within 30s" in message
    assert "progress deadline exceeded: ReplicaSet" in message
    assert "serving-ride-completion-x-1: serving ImagePullBackOff (Back-off pulling image)" in message
    assert "rolled back: pod template of v7 (revision 1) patched back" in message
    [undo] = sent(kube, "PATCH", "/deployments/serving-ride-completion", "application/json-patch+json")
    assert undo.body == [{"op": "replace", "path": "/spec/template", "value": good_template}]
    assert kube.version(kube.deployments["serving-ride-completion"]) == "7"
    assert kube.requests[-1] is undo, "the rollback is the last thing sent"


def test_a_stuck_first_rollout_has_nothing_to_roll_back_and_says_so(kube: FakeKube) -> None:
    from airflow_mlops.operators.deployment import RolloutFailed

    kube.stuck = {"7"}
    with pytest.raises(RolloutFailed, match=r"nothing to roll back to \(first deployment of serving-ride-completion\)"
                                            r".*kubectl -n ml-serving delete deployment serving-ride-completion"):
        k8s_deploy("7")
    assert not sent(kube, "PATCH", "/deployments/", "application/json-patch+json")


def test_a_rollout_that_never_reports_a_deadline_times_out_and_rolls_back(kube: FakeKube) -> None:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    from airflow_mlops.core.spec import KubernetesServing
    from airflow_mlops.operators.deployment import RolloutFailed
    from airflow_mlops.operators.deployment_k8s import apply_and_wait

    serving = KubernetesServing(**SERVING)
    hook = KubernetesHook()
    log = __import__("logging").getLogger("test")
    apply_and_wait(hook, km.render(MODEL, "7", serving, tracking_uri=MLFLOW_SERVER), timeout=5, poll=0.02, log=log)
    kube.stuck, kube.deadline_after_polls = {"8"}, None
    with pytest.raises(RolloutFailed, match=r"within 0s \(still progressing at the timeout: 1/2 updated, 2/2 "
                                            r"available, 3 total\).*rolled back: pod template of v7"):
        apply_and_wait(hook, km.render(MODEL, "8", serving, tracking_uri=MLFLOW_SERVER), timeout=0.3, poll=0.02,
                       log=log)
    assert kube.version(kube.deployments["serving-ride-completion"]) == "7"


def test_kubernetes_pods_never_get_a_tracking_store_they_cannot_reach(kube: FakeKube,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_mlops.exceptions import ComputeConfigError

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow",
                                                                  "host": "http://localhost:5000"}))
    with pytest.raises(ComputeConfigError, match="localhost inside a pod is the pod itself"):
        k8s_deploy("7")
    assert kube.requests == [], "nothing was sent"
    result = k8s_deploy("7", mlflow_secret="mlflow-credentials")
    [applied] = sent(kube, "PATCH", "/deployments/", "application/apply-patch+yaml")
    assert applied.body["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "mlflow-credentials"}}]
    assert result["rollout"]["state"] == "complete"


def test_canary_mode_is_refused_for_kubernetes_when_the_dag_is_built() -> None:
    from airflow_mlops.operators.deployment import DeployModelOperator

    with pytest.raises(ValueError, match="mode 'canary' needs target 'local'"):
        DeployModelOperator(task_id="deploy", model_name=MODEL, target="kubernetes", mode="canary")
    with pytest.raises(ValueError, match="target: got 'k8s'; allowed: local, kubernetes"):
        DeployModelOperator(task_id="deploy", model_name=MODEL, target="k8s")


# ============================================================================ local target: serving app
COLUMNS = ["trip_distance_km", "surge_multiplier", "conv_rate"]
TOKEN = "test-admin-token"
POLL = 0.3
SLOW_SECONDS = 0.3


def entity(driver_id: int) -> dict[str, Any]:
    return {"driver_id": driver_id, "trip_distance_km": 1.0 + driver_id % 7, "surge_multiplier": 1.2,
            "pickup_hour": driver_id % 24}


def _models() -> dict[str, Any]:
    """good: a plain classifier; boom: raises on any real row; slow: takes SLOW_SECONDS per real request.

    boom and slow pass the serving app's warm-up (one all-zero row), as a subtly broken model would.
    """
    import time

    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x = pd.DataFrame(np.random.default_rng(3).normal(size=(80, 3)), columns=COLUMNS)
    y = (x["trip_distance_km"] > 0).astype(int)
    armed = [False]

    def fails_on_real_rows(frame: Any) -> Any:  # locals: cloudpickle stores them by value
        if armed[0] and (np.asarray(frame, dtype="float64") != 0).any():
            raise RuntimeError("feature transform broke on live traffic")
        return frame

    def slow_on_real_rows(frame: Any) -> Any:
        if armed[0] and (np.asarray(frame, dtype="float64") != 0).any():
            time.sleep(SLOW_SECONDS)
        return frame

    boom = make_pipeline(FunctionTransformer(fails_on_real_rows), LogisticRegression()).fit(x, y)
    slow = make_pipeline(FunctionTransformer(slow_on_real_rows), LogisticRegression()).fit(x, y)
    armed[0] = True
    good = LogisticRegression().fit(x, y)
    # *_example: logged with an input example (the default smoke test's rows), as the training DAG logs models.
    return {"good": good, "boom": boom, "slow": slow,
            "good_example": (good, x.head(3)), "boom_example": (boom, x.head(3))}


@dataclass
class Store:
    connection: str  # AIRFLOW_CONN_MLFLOW_DEFAULT
    logged: dict[str, tuple[str, str, str]]  # key -> (model_uri, run_id, model_id)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One SQLite MLflow store for the module with the three models logged once (tests register them anew)."""
    import mlflow
    import mlflow.sklearn

    from airflow_mlops.hooks.mlflow import MLflowHook

    root = tmp_path_factory.mktemp("deploy_mlflow")
    uri, artifacts = f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts")
    hook = MLflowHook(tracking_uri=uri, artifact_root=artifacts)
    experiment = hook.experiment_id("deploy")
    logged = {}
    with hook.activated():
        for key, logged_model in _models().items():
            model, example = logged_model if isinstance(logged_model, tuple) else (logged_model, None)
            with mlflow.start_run(experiment_id=experiment) as run:
                info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                                pip_requirements=["scikit-learn"], input_example=example)
            logged[key] = (info.model_uri, run.info.run_id, info.model_id)
    connection = json.dumps({"conn_type": "mlflow", "host": uri, "extra": {"artifact_root": artifacts}})
    return Store(connection, logged)


def context(run_id: str = "manual__1", task_id: str = "deploy") -> dict[str, Any]:
    from collections import defaultdict
    from types import SimpleNamespace

    dag_id = f"{MODEL}__train"
    xcoms: dict[str, Any] = {}

    def xcom_push(key: str, value: Any) -> None:  # RuntimeTaskInstance.xcom_push's keywords
        xcoms[key] = value

    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, try_number=1, run_id=run_id, xcoms=xcoms,
                         xcom_push=xcom_push)
    dag_run = SimpleNamespace(dag_id=dag_id, run_id=run_id, run_type="manual", triggering_user_name="alice")
    return {"ti": ti, "dag_run": dag_run, "run_id": run_id, "outlet_events": defaultdict(SimpleNamespace),
            "triggering_asset_events": {}}


@dataclass
class Registered:
    name: str
    versions: dict[str, str]  # v1 good (champion), v2 good, v3 boom, v4 slow, v5/v6 good/boom with an input example


@pytest.fixture
def registry(mlflow_store: Store, mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> Registered:
    """A fresh registered model (own name, own aliases and audit trail) whose champion v1 was promoted."""
    import uuid

    from airflow_mlops.hooks.mlflow import MLflowHook

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", mlflow_store.connection)
    monkeypatch.setenv("MLOPS_SERVING_ADMIN_TOKEN", TOKEN)
    reg = Registered(f"rides_{uuid.uuid4().hex[:8]}", {})
    with MLflowHook().activated() as client:
        client.create_registered_model(reg.name)
        for label, key in (("v1", "good"), ("v2", "good"), ("v3", "boom"), ("v4", "slow"), ("v5", "good_example"),
                           ("v6", "boom_example")):
            uri, run_id, model_id = mlflow_store.logged[key]
            reg.versions[label] = str(client.create_model_version(reg.name, uri, run_id=run_id,
                                                                  model_id=model_id).version)
    promote(reg, reg.versions["v1"], None, "manual__0")
    return reg


def promote(reg: Registered, version: str, champion: str | None, run_id: str) -> dict[str, Any]:
    """What the training DAG's promote task does right before deploy."""
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.operators.promotion import MLflowPromoteModelOperator

    MLflowHook().get_conn().set_registered_model_alias(reg.name, "challenger", version)
    evaluation = {"promote": True, "champion_version": champion, "summary": f"v{version} beats v{champion}"}
    op = MLflowPromoteModelOperator(task_id="promote", model_name=reg.name, version=version, evaluation=evaluation)
    return op.execute(context(run_id=run_id, task_id="promote"))  # type: ignore[arg-type]


class FakeFeast:
    """The FeatureStore calls the serving app makes (serving/features.py), over an in-memory online table:
    every driver_id > 0 has conv_rate 0.5, anything else is unknown."""

    def __init__(self) -> None:
        from types import SimpleNamespace as NS

        self.config = NS(online_store=NS(type="sqlite", path=":memory:"))
        self.service = NS(name="ride_completion_v1", feature_view_projections=[
            NS(name="driver_hourly_stats", features=[NS(name="conv_rate")])])
        self.view = NS(entity_columns=[NS(name="driver_id", dtype=NS(to_value_type=lambda: "ValueType.INT64"))])

    def get_feature_service(self, name: str) -> Any:
        assert name == self.service.name, name
        return self.service

    def list_feature_services(self) -> list[Any]:
        return [self.service]

    def get_feature_view(self, name: str) -> Any:
        return self.view

    def get_online_features(self, features: Any, entity_rows: list[dict[str, Any]],
                            full_feature_names: bool = False) -> Any:
        from types import SimpleNamespace

        rows = {"driver_id": [r["driver_id"] for r in entity_rows],
                "conv_rate": [0.5 if r["driver_id"] > 0 else None for r in entity_rows]}
        return SimpleNamespace(to_dict=lambda include_event_timestamps=False: rows)  # no event times: no age


@dataclass
class Serving:
    url: str
    real_app: bool
    name: str

    def get(self, path: str) -> Any:
        import httpx

        return httpx.get(f"{self.url}{path}", timeout=10)

    def predict(self, driver_id: int) -> Any:
        import httpx

        return httpx.post(f"{self.url}/predict", json=entity(driver_id), timeout=10)

    def status(self) -> dict[str, Any]:
        return dict(self.get("/ready").json())


def _real_app(spec: Any, manager: Any) -> Any:
    """The serving app, with the Feast stand-in as its online store."""
    from airflow_mlops.serving.app import create_app

    return create_app(spec, manager=manager, store=FakeFeast())


def _stand_in_app(name: str, manager: Any) -> Any:
    """The serving contract's endpoints used here, over the real ModelManager and ServingMetrics: the
    "stand-in" parametrization checks the deploy operator against the contract, not the app's internals.
    Request features + conv_rate 0.5; a prediction that raises is a 500
    counted under its version and route."""
    import os
    import time

    import pandas as pd

    from airflow_mlops.serving.metrics import ServingMetrics
    from airflow_mlops.serving.models import ModelLoadError, entity_key_text

    app, metrics = FastAPI(), ServingMetrics(name)
    manager.start()

    @app.get("/ready")
    def ready() -> Response:
        body = {"ready": manager.loaded, **manager.status()}
        return Response(json.dumps(body), status_code=200 if manager.loaded else 503, media_type="application/json")

    @app.get("/metrics")
    def scrape() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/admin/deploy")
    async def deploy(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {os.environ['MLOPS_SERVING_ADMIN_TOKEN']}":
            raise HTTPException(401, "missing or wrong admin token")
        body = await request.json()
        try:
            status = manager.deploy(body.get("version"), body.get("mode", "full"), body.get("fraction", 0.0))
        except ModelLoadError as err:
            raise HTTPException(409, str(err)) from None
        return Response(json.dumps(status), media_type="application/json")

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        started, row = time.perf_counter(), await request.json()
        model, _, route = manager.route(entity_key_text({"driver_id": row["driver_id"]}))
        try:
            value = float(model.predict_proba(pd.DataFrame([{**row, "conv_rate": 0.5}]))[0])
            status, payload = 200, {"predictions": [{"prediction": value, "model_version": model.version,
                                                     "route": route, "entity": row}], "model": name}
        except Exception as err:  # noqa: BLE001 - a broken model is a 5xx
            status, payload = 500, {"detail": f"v{model.version} failed: {err}"}
        metrics.observe(version=model.version, route=route, status=status, seconds=time.perf_counter() - started)
        return Response(json.dumps(payload), status_code=status, media_type="application/json")

    return app


@pytest.fixture
def serving(request: pytest.FixtureRequest, registry: Registered) -> Iterator[Serving]:
    """The app on a free 127.0.0.1 port, serving the champion and following its alias (as deployed).

    Parametrize indirectly with "stand-in" to run against the contract stand-in instead of the app."""
    import socket
    import time

    import uvicorn

    from airflow_mlops.core.spec import parse_spec
    from airflow_mlops.serving.models import ModelManager

    text = (Path(__file__).resolve().parents[2] / "include" / "models" / f"{MODEL}.yaml").read_text()
    spec = parse_spec(text, f"{MODEL}.yaml").model_copy(update={"name": registry.name})
    manager = ModelManager(registry.name, poll_seconds=POLL)
    app = _real_app(spec, manager) if getattr(request, "param", "app") == "app" else None
    real = app is not None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app if real else _stand_in_app(registry.name, manager), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the serving app did not start"
        time.sleep(0.02)
    yield Serving(f"http://127.0.0.1:{port}", real, registry.name)
    server.should_exit = True
    thread.join(30)
    manager.stop()


def wait_until(condition: Any, timeout: float = 10.0, message: Any = None) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met in time: {message() if message else ''}"
        time.sleep(0.05)


def local_deploy(serving: Serving, version: str | None, **kwargs: Any) -> Any:
    from airflow_mlops.operators.deployment import DeployModelOperator

    kwargs.setdefault("smoke_request", entity(1001))
    return DeployModelOperator(task_id="deploy", model_name=serving.name, version=version, url=serving.url,
                               poll_interval=0.05, ready_timeout=30, **kwargs)


def registry_state(name: str) -> tuple[str | None, list[Any], Any]:
    from airflow_mlops.core import audit
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.hooks.mlflow_registry import ModelRegistry

    client = MLflowHook().get_conn()
    registry = ModelRegistry(client, name)
    return registry.alias_version("champion"), audit.history(registry.tags()), client


def test_full_deploy_swaps_the_model_and_smoke_tests_it(serving: Serving, registry: Registered) -> None:
    v1, v2 = registry.versions["v1"], registry.versions["v2"]
    result = local_deploy(serving, v2).execute(context())
    assert (result["version"], result["previous"], result["mode"]) == (v2, v1, "full")
    assert result["smoke"] == {"predictions": 1, "model_version": v2, "via": "smoke_request via /predict"}
    assert serving.status()["primary"]["version"] == v2
    assert local_deploy(serving, None).execute(context())["version"] == v1, "no version: the champion's"


def test_without_a_smoke_request_the_input_example_smoke_tests_the_version(serving: Serving,
                                                                           registry: Registered) -> None:
    from airflow_mlops.operators.deployment import DeploymentFailed

    v1, good, boom = registry.versions["v1"], registry.versions["v5"], registry.versions["v6"]
    result = local_deploy(serving, good, smoke_request=None).execute(context())
    assert result["smoke"] == {"predictions": 3, "model_version": good, "via": "input example via /v2 infer"}
    # A version that loads and warms up but fails on real rows: the smoke test catches it and v5 serves again.
    with pytest.raises(DeploymentFailed) as err:
        local_deploy(serving, boom, smoke_request=None).execute(context())
    assert f"v{boom}" in str(err.value) and "input example" in str(err.value) and f"v{good} was deployed again" in str(
        err.value)
    assert serving.status()["primary"]["version"] == good
    # Logged without an example and no smoke_request: deployed, and the result says the smoke test was skipped.
    skipped = local_deploy(serving, v1, smoke_request=None).execute(context())["smoke"]
    assert skipped == {"skipped": "no serving.smoke_request and no input example logged with the version"}


def test_a_version_the_app_refuses_fails_with_its_reason_and_the_old_one_keeps_serving(
        serving: Serving, registry: Registered) -> None:
    from airflow_mlops.operators.deployment import DeploymentFailed

    with pytest.raises(DeploymentFailed, match=r"/admin/deploy refused v99 \(mode full\): HTTP 409: .*v99 cannot "
                                               r"serve: no such registered version.*the previous model keeps serving"):
        local_deploy(serving, "99").execute(context())
    assert serving.status()["primary"]["version"] == registry.versions["v1"]
    assert serving.predict(1001).status_code == 200
    with pytest.raises(DeploymentFailed, match=r"HTTP 401: .*the admin token is wrong: set MLOPS_SERVING_ADMIN_TOK"):
        local_deploy(serving, registry.versions["v2"], admin_token="not-it").execute(context())


class Traffic:
    """Requests from ever new entity keys in background threads (a share lands on the canary) until stopped."""

    def __init__(self, serving: Serving, workers: int = 4) -> None:
        self.serving, self.stop, self.codes = serving, threading.Event(), []
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(workers)]

    def _run(self, worker: int) -> None:
        import httpx

        driver = worker * 1_000_000
        with httpx.Client(timeout=10) as client:  # keep-alive, like a real caller
            while not self.stop.is_set():
                driver += 1
                self.codes.append(client.post(f"{self.serving.url}/predict", json=entity(driver)).status_code)

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)


CANARY = {"traffic": 0.5, "max_error_rate": 0.05, "max_p99_ms": 2000, "window": "3s", "min_requests": 20}


def test_a_healthy_canary_goes_to_100_percent(serving: Serving, registry: Registered) -> None:
    v1, v2 = registry.versions["v1"], registry.versions["v2"]
    promote(registry, v2, v1, "manual__1")
    op = local_deploy(serving, v2, mode="canary", canary=CANARY, deferrable=False, canary_poll_interval=0.2,
                      smoke_request=routed(CANARY["traffic"], canary=True))  # the canary answers the smoke test
    with Traffic(serving) as traffic:
        result = op.execute(context())
    assert result["canary"]["status"] == "healthy" and result["canary"]["verdict"]["requests"] >= 20
    assert (result["version"], result["previous"]) == (v2, v1)
    status = serving.status()
    assert status["primary"]["version"] == v2 and status["secondary"] is None
    assert set(traffic.codes) == {200}
    champion, history, client = registry_state(registry.name)
    assert champion == v2 and [e.action for e in history] == ["promote", "promote"]
    assert client.get_model_version(registry.name, v2).tags["airflow_mlops.canary"] == "passed"
    again = local_deploy(serving, v2, mode="canary", canary=CANARY).execute(context())  # a cleared task
    assert again["canary"] is None and again["version"] == v2, "a passed canary is not run twice"


def routed(fraction: float, *, canary: bool) -> dict[str, Any]:
    """An entity that the app's sticky routing sends to the canary (or to the primary) at `fraction`."""
    from airflow_mlops.serving.models import canary_bucket, entity_key_text

    driver = next(d for d in range(1000, 2000)
                  if (canary_bucket(entity_key_text({"driver_id": d})) < fraction) == canary)
    return entity(driver)


def _breach(serving: Serving, registry: Registered, bad: str, canary: dict[str, Any],
            check: Any = None) -> tuple[dict[str, Any], Any]:
    """Promote `bad` over v1, deploy it as a deferred canary, drive traffic through the trigger: (event, op)."""
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred

    from airflow_mlops.triggers.canary import CanaryTrigger, first_event

    good = registry.versions["v1"]
    promote(registry, bad, good, "manual__1")
    wait_until(lambda: (serving.status().get("primary") or {}).get("version") == bad, message=serving.status)
    op = local_deploy(serving, bad, mode="canary", canary=canary, canary_poll_interval=0.2,
                      smoke_request=routed(canary["traffic"], canary=False))
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, CanaryTrigger) and deferred.value.method_name == "execute_complete"
    status = serving.status()
    assert (status["mode"], status["primary"]["version"], status["secondary"]["version"]) == ("canary", good, bad), \
        "the previous champion is primary again for the window; the new one is the canary"
    if check is not None:
        check(canary)
    with Traffic(serving):
        event = asyncio.run(asyncio.wait_for(first_event(trigger), 60))
    return event, op


def _assert_rolled_back(serving: Serving, registry: Registered, bad: str, op: Any, event: dict[str, Any],
                        reason: str) -> None:
    from airflow_mlops.operators.deployment import CanaryFailed

    good = registry.versions["v1"]
    ctx = context()
    with pytest.raises(CanaryFailed) as failed:
        op.execute_complete(ctx, event)
    assert failed.value.restored == good
    assert ctx["ti"].xcoms["champion_rollback"]["version"] == good
    message = str(failed.value)
    assert f"v{bad}: {reason}" in message
    assert f"champion alias restored from v{bad} to v{good} (audit #3)" in message
    champion, history, client = registry_state(registry.name)
    assert champion == good
    rollback = history[-1]
    assert (rollback.action, rollback.version, rollback.previous, rollback.actor) == ("rollback", good, bad, "alice")
    assert rollback.reason.startswith(reason) and rollback.run_id == "manual__1"
    tags = client.get_model_version(registry.name, bad).tags
    assert tags["airflow_mlops.canary"] == "failed" and tags["airflow_mlops.canary_reason"].startswith(reason)
    status = serving.status()
    assert status["primary"]["version"] == good and status["secondary"] is None and status["mode"] == "single"
    assert all(serving.predict(d).status_code == 200 for d in range(1, 30)), "the canary is gone"
    # A retry of the task repeats nothing but the failure: no second canary, no second rollback; it completes
    # the version tags an earlier try may have died before writing.
    from airflow_mlops.core.audit import champion_history_tag

    history_tag = champion_history_tag(rollback.seq)
    assert history_tag in client.get_model_version(registry.name, good).tags
    client.delete_model_version_tag(registry.name, good, history_tag)
    retry = context()
    with pytest.raises(CanaryFailed, match=rf"v{bad}: {reason}.*champion was already restored to v{good} "
                                           rf"\(audit #3\)"):
        local_deploy(serving, bad, mode="canary", canary=CANARY).execute(retry)
    assert len(registry_state(registry.name)[1]) == 3 and serving.status()["secondary"] is None
    assert history_tag in client.get_model_version(registry.name, good).tags, "the retry finished the move's tags"
    # the retry records the rollback again: its try's XCom feeds the event task of that run
    assert retry["ti"].xcoms["champion_rollback"] == {**ctx["ti"].xcoms["champion_rollback"],
                                                      "reason": rollback.reason}


def test_a_canary_whose_smoke_request_fails_is_rolled_back_at_once(serving: Serving, registry: Registered) -> None:
    from airflow_mlops.operators.deployment import CanaryFailed

    good, bad = registry.versions["v1"], registry.versions["v3"]
    promote(registry, bad, good, "manual__1")
    op = local_deploy(serving, bad, mode="canary", canary=CANARY, smoke_request=routed(0.5, canary=True))
    ctx = context()
    with pytest.raises(CanaryFailed, match=rf"v{bad}: canary did not start: smoke request POST .*/predict answered "
                                           rf"HTTP 500: .*champion alias restored from v{bad} to v{good} \(audit #3\)"):
        op.execute(ctx)
    rollback = ctx["ti"].xcoms["champion_rollback"]  # for ChampionRollbackEventOperator: the task failed
    assert (rollback["version"], rollback["rolled_back_from"], rollback["audit_seq"]) == (good, bad, 3)
    assert rollback["model"] == registry.name and "smoke request" in rollback["reason"]
    champion, history, client = registry_state(registry.name)
    assert champion == good and history[-1].action == "rollback"
    assert client.get_model_version(registry.name, bad).tags["airflow_mlops.canary"] == "failed"
    assert serving.status()["secondary"] is None and serving.status()["primary"]["version"] == good


@pytest.mark.parametrize("serving", ["app", "stand-in"], indirect=True)
def test_a_canary_answering_5xx_is_rolled_back_with_an_audit_entry_and_a_tag(serving: Serving,
                                                                              registry: Registered) -> None:
    bad = registry.versions["v3"]

    def counted_on_the_canary_route(canary: dict[str, Any]) -> None:
        from airflow_mlops.core.canary import parse_route

        codes = [serving.predict(routed(canary["traffic"], canary=True)["driver_id"]).status_code for _ in range(3)]
        counted = parse_route(serving.get("/metrics").text, model=registry.name, version=bad)
        assert codes == [500, 500, 500], f"the canary's entity must reach the failing canary: {codes}"
        assert counted.errors >= 3, f"canary 5xx answers {codes} not counted under version {bad}: {counted}"

    event, op = _breach(serving, registry, bad, {**CANARY, "window": "10m"}, check=counted_on_the_canary_route)
    assert event["status"] == "breached", (
        f"{event}: the canary's 5xx answers were not counted under route=\"canary\"; the serving app must observe a "
        "failed prediction under the version and route that failed (mlops_serving_requests_total)")
    assert event["verdict"]["errors"] >= 1 and "answered 5xx" in event["message"]
    _assert_rolled_back(serving, registry, bad, op, event, "canary breached: error rate")


def test_a_slow_canary_is_rolled_back_on_p99(serving: Serving, registry: Registered) -> None:
    bad = registry.versions["v4"]
    event, op = _breach(serving, registry, bad, {**CANARY, "window": "10m", "max_p99_ms": 100, "min_requests": 5})
    assert event["status"] == "breached" and "p99 latency" in event["message"]
    _assert_rolled_back(serving, registry, bad, op, event, "canary breached: p99 latency")


def test_serving_hook_reads_url_and_token_from_its_connection_then_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_mlops.hooks.serving import ServingHook

    monkeypatch.setenv("MLOPS_SERVING_ADMIN_TOKEN", "from-env")
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_SERVING_DEFAULT", raising=False)
    plain = ServingHook().get_conn()
    assert (plain.url, plain.token) == ("http://127.0.0.1:8000", "from-env")
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_SERVING_DEFAULT", json.dumps(
        {"conn_type": "mlops_serving", "host": "serving.mlops.svc", "port": 8000, "password": "from-conn"}))
    conn = ServingHook().get_conn()
    assert (conn.url, conn.token) == ("http://serving.mlops.svc:8000", "from-conn")
    given = ServingHook(url="http://10.0.0.5:9000/", admin_token="given").get_conn()
    assert (given.url, given.token) == ("http://10.0.0.5:9000", "given")


def test_kubernetes_pods_get_feast_and_the_prediction_log_from_serving_kubernetes(kube: FakeKube) -> None:
    from airflow_mlops.exceptions import ComputeConfigError
    from airflow_mlops.operators.deployment import DeployModelOperator

    backends = {"state_volume_claim": "mlops-state", "online_store": "redis://redis.ml-serving:6379/0",
                "prediction_log_url": "postgresql://mlops@postgres.ml-serving:5432/mlops"}
    operator = DeployModelOperator(task_id="deploy", model_name=MODEL, version="7", target="kubernetes",
                                   kubernetes={**SERVING, **backends}, poll_interval=0.02)
    assert operator.execute({})["rollout"]["state"] == "complete"  # type: ignore[arg-type]
    [applied] = sent(kube, "PATCH", "/deployments/", "application/apply-patch+yaml")
    validate(applied.body)
    pod = applied.body["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MLOPS_FEAST_ONLINE_STORE"] == backends["online_store"]
    assert env["MLOPS_PREDICTION_LOG_URL"] == backends["prediction_log_url"]
    assert {"name": "feast-registry", "mountPath": "/tmp/mlops/feast", "readOnly": True, "subPath": "feast"} in (
        pod["containers"][0]["volumeMounts"])
    kube.requests.clear()
    leaky = DeployModelOperator(task_id="deploy", model_name=MODEL, version="8", target="kubernetes",
                                kubernetes={**SERVING, **backends, "online_store": "redis://:pw@redis:6379/0"})
    with pytest.raises(ComputeConfigError, match=r"deploy: serving\.kubernetes\.online_store: the URL holds a "
                                                 r"password"):
        leaky.execute({})  # type: ignore[arg-type]
    assert kube.requests == [], "nothing was sent"
