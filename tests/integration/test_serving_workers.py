"""`airflow-mlops serve --workers 2`: one server of two worker processes (issue 20 item 3).

The session's trained demo state (v1 champion) plus v2 (v1's artifact registered again), served by the real
CLI with two uvicorn workers and PROMETHEUS_MULTIPROC_DIR set to a directory of the test (so each worker's
metric files can be read on their own). One server for the module:

- load from 8 threads with a connection each: every request answered 200, both workers answered some,
  /metrics (whichever worker answers it) counts exactly the requests sent, and the one prediction log holds
  one row per request, none lost, none twice;
- the champion alias moves to v2: every worker (each pid, asked itself) serves v2, and /metrics says so;
- /admin/deploy, which reaches one worker: what would split the workers is refused, a deploy of the alias'
  version is answered once every worker serves it;
- a worker SIGKILLed: uvicorn's supervisor starts another, the dead one's live gauges leave /metrics, its
  counts stay.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pyarrow.parquet as pq
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from support.airflow_client import wait_for
from support.dag_runs import program
from support.demo_state import TrainedDemo, checkout_trained_demo
from support.serving_process import ServingProcess, serving_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MODEL = "ride_completion"
TOKEN = "s3cret-admin-token"
REQUEST = {"trip_distance_km": 3.2, "surge_multiplier": 1.25, "pickup_hour": 8}
THREADS, PER_THREAD, CONNECTION_REQUESTS = 8, 250, 50
CONVERGE_S = 120  # poll_seconds (5) + a model load on a loaded 2-core machine, with a wide margin

REGISTER_V2 = program("register_champion_again")
MOVE_ALIAS = program("serving_workers_move_alias")


class Server:
    def __init__(self, served: ServingProcess, demo: TrainedDemo, metrics_dir: Path) -> None:
        self.served, self.demo, self.metrics_dir = served, demo, metrics_dir

    @property
    def url(self) -> str:
        return self.served.url

    def worker_pids(self) -> set[int]:
        """The supervisor's worker processes (uvicorn spawns them; multiprocessing's resource tracker is not one)."""
        pids = set()
        for child in psutil.Process(self.served.proc.pid).children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE and any("spawn_main" in arg for arg in child.cmdline()):
                    pids.add(child.pid)
            except psutil.Error:  # exited (or became a zombie) while being looked at: not a live worker
                continue
        return pids

    def ready(self) -> dict[str, Any]:
        """/ready on a new connection (the kernel picks the worker that accepts it)."""
        response = httpx.get(f"{self.url}/ready", timeout=10, headers={"Connection": "close"})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def predictions_200(self) -> float:
        return sum(v for (name, labels), v in self.metrics().items()
                   if name == "mlops_serving_requests_total" and dict(labels)["status"] == "200")

    def written(self) -> float:
        return self.metrics()[("mlops_serving_prediction_log_written_total", (("model", MODEL),))]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    demo = checkout_trained_demo()
    assert demo.run(REGISTER_V2, timeout=300)[0] == {"versions": ["1", "2"]}
    metrics_dir = tmp_path_factory.mktemp("prometheus")
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # an earlier run's file: the server must wipe it
    env = {**demo.env, "MLOPS_SERVING_ADMIN_TOKEN": TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with serving_process(MODEL, env, demo.root / "serving-workers.log", workers=2) as served:
        server = Server(served, demo, metrics_dir)
        wait_for(lambda: len(server.ready()["worker_versions"]) == 2 and len(server.worker_pids()) == 2, CONVERGE_S,
                 "both workers to load the champion", interval=0.3, on_poll=served.ready)
        yield server


def _send(url: str, ids: list[str], answers: dict[str, int]) -> None:
    """Post /predict for each id, on a keep-alive connection renewed every CONNECTION_REQUESTS requests: each new
    connection goes to whichever worker accepts it."""
    for start in range(0, len(ids), CONNECTION_REQUESTS):
        with httpx.Client(base_url=url, timeout=30) as client:
            for i, rid in enumerate(ids[start:start + CONNECTION_REQUESTS], start):
                response = client.post("/predict", json={"driver_id": 1001 + i % 200, **REQUEST},
                                       headers={"X-Request-ID": rid})
                answers[rid] = response.status_code


def _log_rows(home: Path, prefix: str) -> list[str]:
    """request_id of every row of the prediction log (all workers' parquet parts) that this test sent."""
    parts = sorted((home / "predictions" / MODEL).glob("date=*/*.parquet"))
    ids = [rid for part in parts for rid in pq.read_table(part, columns=["request_id"]).column(0).to_pylist()]
    return [rid for rid in ids if rid and rid.startswith(prefix)]


def _requests_per_worker(metrics_dir: Path) -> dict[int, float]:
    """200-answered requests counted in each worker's own counter file."""
    per_pid = {}
    for path in metrics_dir.glob("counter_*.db"):
        merged = MultiProcessCollector.merge([str(path)], accumulate=False)
        per_pid[int(path.stem.split("_")[1])] = sum(
            s.value for family in merged if family.name == "mlops_serving_requests" for s in family.samples
            if s.name == "mlops_serving_requests_total" and s.labels["status"] == "200")
    return per_pid


def test_load_on_two_workers_is_counted_and_logged_once(server: Server) -> None:
    assert not (server.metrics_dir / "counter_1.db").exists(), "the stale metric file was wiped at start"
    before_200, before_written = server.predictions_200(), server.written()
    prefix = f"load-{uuid.uuid4().hex[:8]}-"
    ids = [f"{prefix}{n}" for n in range(THREADS * PER_THREAD)]
    answers: dict[str, int] = {}
    threads = [threading.Thread(target=_send, args=(server.url, ids[t::THREADS], answers)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    ok = sorted(rid for rid, status in answers.items() if status == 200)
    assert len(answers) == len(ids) and len(ok) == len(ids), {s: list(answers.values()).count(s)
                                                              for s in set(answers.values())}
    per_worker = _requests_per_worker(server.metrics_dir)
    assert set(per_worker) == server.worker_pids() and all(count > 0 for count in per_worker.values()), per_worker
    # /metrics, answered by one worker, is the sum of both
    assert server.predictions_200() - before_200 == len(ok) == sum(per_worker.values()) - before_200
    wait_for(lambda: server.written() - before_written >= len(ok), 60, "every record written", interval=0.3)
    assert server.written() - before_written == len(ok)
    logged = _log_rows(server.demo.home, prefix)
    assert len(logged) == len(set(logged)) == len(ok), "one row per answered request: none lost, none twice"
    assert sorted(logged) == ok


@pytest.fixture(scope="module")
def champion_v2(server: Server) -> str:
    """The champion alias moved to v2 (the workers follow it on their own; the tests watch them do it)."""
    assert server.demo.run(MOVE_ALIAS, "2", timeout=300)[0] == {"champion": "2"}
    return "2"


def test_every_worker_follows_the_champion_alias(server: Server, champion_v2: str) -> None:
    workers = server.worker_pids()
    answered_v2: set[int] = set()

    def each_worker_says_v2() -> bool:  # asked on new connections until every worker pid answered itself
        body = server.ready()
        if body["primary"]["version"] == champion_v2:
            answered_v2.add(body["pid"])
        return answered_v2 >= workers

    wait_for(each_worker_says_v2, CONVERGE_S, f"workers {workers} to serve v2", interval=0.1)
    assert answered_v2 == workers
    shared = {int(pid): slots for pid, slots in server.ready()["worker_versions"].items()}
    assert shared == {pid: {"primary": "2"} for pid in workers}
    metrics = server.metrics()
    info = {(dict(labels)["version"]): v for (name, labels), v in metrics.items()
            if name == "mlops_serving_model_info" and dict(labels)["slot"] == "primary"}
    assert info == {"1": 0.0, "2": 1.0}, "v1 no longer served by any live worker"
    per_worker = {(dict(labels)["pid"], dict(labels)["version"]): v for (name, labels), v in metrics.items()
                  if name == "mlops_serving_worker_model_info" and dict(labels)["slot"] == "primary"}
    assert {key for key, value in per_worker.items() if value == 1} == {(str(pid), "2") for pid in workers}
    answer = httpx.post(f"{server.url}/predict", json={"driver_id": 1001, **REQUEST}, timeout=30).json()
    assert answer["predictions"][0]["model_version"] == "2"


def test_deploys_that_would_split_the_workers_are_refused(server: Server, champion_v2: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for body, says in (({"version": "1", "mode": "canary", "fraction": 0.5}, "--workers 1"),
                       ({"version": "1", "mode": "shadow"}, "--workers 1"),
                       ({"version": "1", "mode": "full"}, "is not the version alias 'champion' points at (v2)")):
        refused = httpx.post(f"{server.url}/admin/deploy", json=body, headers=auth, timeout=60)
        assert refused.status_code == 409 and says in refused.json()["detail"], (body, refused.text)
    deployed = httpx.post(f"{server.url}/admin/deploy", json={"mode": "full"}, headers=auth, timeout=120)
    assert deployed.status_code == 200, deployed.text
    assert {int(pid): slots["primary"] for pid, slots in deployed.json()["workers"].items()} == dict.fromkeys(
        server.worker_pids(), "2")


def test_a_killed_worker_is_replaced_and_leaves_the_live_metrics(server: Server) -> None:
    before = server.worker_pids()
    served_before = server.predictions_200()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> set[int] | None:
        pids = server.worker_pids()
        return pids if len(pids) == 2 and victim not in pids else None

    after = wait_for(replaced, CONVERGE_S, "the supervisor to replace the killed worker", interval=0.3)
    wait_for(lambda: set(map(int, server.ready()["worker_versions"])) == after, CONVERGE_S,
             "the new worker to serve and the dead one to leave the shared metrics", interval=0.3)
    pids_in_metrics = {dict(labels)["pid"] for (name, labels), v in server.metrics().items()
                       if name == "mlops_serving_worker_model_info"}
    assert str(victim) not in pids_in_metrics
    assert server.predictions_200() == served_before, "the dead worker's counts stay in the totals"
