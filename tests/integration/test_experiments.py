"""Online experiments end to end on the demo state: real SQLite MLflow registry, Feast online store, serving app.

The session's trained demo state (v1 champion) gets more versions registered from v1's artifact (cheap: no
training). The serving app runs in this process under uvicorn (real HTTP: the start task waits for it to
route the experiment) and logs predictions to the demo state's prediction log. The start task and the readout
task run through execute() with the context Airflow gives them; delayed labels are parquet files in
labels/<model>/ made from the logged predictions, with a known true effect.

- A/B, new version clearly better: the readout promotes (alias moved, audit entry with the reason, asset events).
- A/B, no difference, the deadline passed: the champion stays (audit entry, event, traffic back).
- Bandit: shares move toward the better arm after an update, and another worker (ModelManager) routes alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pandas as pd
import pytest

from support.demo_state import checkout_trained_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MODEL = "ride_completion"
REQUEST = {"trip_distance_km": 3.2, "surge_multiplier": 1.25, "pickup_hour": 8}
DRIVERS = list(range(1001, 1201))
ROUNDS = 3  # each driver asks three times: the same entity must get the same arm


class Events:
    """context["outlet_events"][outlet]: what the operators add through their AssetAlias outlets."""

    def __init__(self) -> None:
        self.added: list[tuple[str, dict[str, Any]]] = []

    def add(self, asset: Any, extra: dict[str, Any] | None = None) -> None:
        self.added.append((asset.name, dict(extra or {})))


@dataclass
class Outlets:
    by_outlet: dict[str, Events] = field(default_factory=dict)

    def __getitem__(self, outlet: Any) -> Events:
        return self.by_outlet.setdefault(outlet.name, Events())

    def added(self) -> list[tuple[str, dict[str, Any]]]:
        return [event for events in self.by_outlet.values() for event in events.added]


def context(run_id: str, task_id: str, dag_id: str) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, try_number=1, run_id=run_id)
    dag_run = SimpleNamespace(dag_id=dag_id, run_id=run_id, run_type="scheduled", triggering_user_name=None)
    return {"ti": ti, "dag_run": dag_run, "run_id": run_id, "outlet_events": Outlets(),
            "triggering_asset_events": {}}


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """The first value of `condition()` that is neither None nor False (polled with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.1)


@dataclass
class App:
    url: str
    server: Any  # serving.app.Server

    def predict(self, drivers: list[int]) -> list[dict[str, Any]]:
        body = {"entities": [{"driver_id": d, **REQUEST} for d in drivers]}
        response = httpx.post(f"{self.url}/predict", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return list(response.json()["predictions"])

    def ready(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/ready", timeout=10).json())


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The demo state (v1 champion) and the serving app on it, following the champion alias every 0.3 s."""
    import socket

    import uvicorn

    from airflow_mlops.serving.app import create_app, load_spec

    demo = checkout_trained_demo()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_FEAST_ONLINE_STORE",
                     "MLOPS_PREDICTION_LOG_URL", "AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW_CONN_FEAST_DEFAULT"):
            mp.delenv(name, raising=False)
        mp.setenv("MLOPS_HOME", str(demo.home))
        spec = load_spec(MODEL)
        spec = spec.model_copy(update={"serving": spec.serving.model_copy(update={"poll_seconds": 0.3})})
        served = create_app(spec)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(served, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until(lambda: server.started or not thread.is_alive(), "the serving app starts")
        assert thread.is_alive(), "the serving app did not start"
        yield App(f"http://127.0.0.1:{port}", served.state.server)
        server.should_exit = True
        thread.join(60)


def registry() -> Any:
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.hooks.mlflow_registry import ModelRegistry

    return ModelRegistry(MLflowHook().get_conn(), MODEL)


def new_challenger() -> tuple[str, str]:
    """(champion, a new version of the champion's artifact holding alias challenger): no training needed."""
    from airflow_mlops.hooks.mlflow import MLflowHook

    with MLflowHook().activated() as client:
        champion = client.get_model_version_by_alias(MODEL, "champion")
        version = str(client.create_model_version(MODEL, champion.source, run_id=champion.run_id).version)
        client.set_registered_model_alias(MODEL, "challenger", version)
    return str(champion.version), version


def start(app: App, champion: str, candidate: str, experiment: dict[str, Any], run_id: str) -> dict[str, Any]:
    from airflow_mlops.operators.experiments import StartExperimentOperator

    operator = StartExperimentOperator(
        task_id="start_experiment", model_name=MODEL, version=candidate, url=app.url, poll_interval=0.1,
        ready_timeout=60, experiment=experiment,
        evaluation={"promote": True, "champion_version": champion, "summary": f"v{candidate} passed"})
    return dict(operator.execute(context(run_id, "start_experiment", f"{MODEL}__train")))  # type: ignore[arg-type]


def readout(run_id: str, now: datetime | None = None) -> tuple[dict[str, Any], Outlets]:
    from airflow_mlops.core.spec import Labels
    from airflow_mlops.dags.assets import champion_experiment_alias, experiment_alias
    from airflow_mlops.operators.experiments import ExperimentReadoutOperator

    operator = ExperimentReadoutOperator(
        task_id="readout", model_name=MODEL, label="completed", entity_keys=["driver_id"],
        labels=Labels().model_dump(mode="json"), now=now.isoformat() if now else None,
        outlets=[experiment_alias(MODEL), champion_experiment_alias(MODEL)])
    ctx = context(run_id, "readout", f"{MODEL}__experiment")
    return dict(operator.execute(ctx)), ctx["outlet_events"]  # type: ignore[arg-type]


def serve_rounds(app: App) -> list[dict[str, Any]]:
    """ROUNDS requests of every demo driver; the same driver always lands on the same arm."""
    rows = [row for _ in range(ROUNDS) for row in app.predict(DRIVERS)]
    arms: dict[int, set[str]] = {}
    for row in rows:
        arms.setdefault(row["entity"]["driver_id"], set()).add(row["model_version"])
    assert all(len(versions) == 1 for versions in arms.values()), "sticky: one arm per entity"
    return rows


def logged(route: str, rows: int, since: datetime) -> pd.DataFrame:
    """The experiment's rows in the prediction log, once the background writer flushed them all."""
    from airflow_mlops.core.prediction_window import read_prediction_window

    def read() -> pd.DataFrame | None:
        frame = read_prediction_window(MODEL, since - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1))
        mine = frame.frame[frame.frame["route"] == route]
        return mine if len(mine) >= rows else None  # a DataFrame: neither None nor False once complete

    return wait_until(read, f"{rows} logged rows of {route}")


def write_labels(name: str, rows: pd.DataFrame, right: Callable[[pd.DataFrame], pd.Series]) -> None:
    """A label file: `completed` equals the prediction's call (>= 0.5) where `right`, its opposite elsewhere."""
    from airflow_mlops import config

    called = rows["prediction"] >= 0.5
    labels = pd.DataFrame({"request_id": rows["request_id"].astype(str),
                           "completed": (called == right(rows)).astype(int)})
    folder = config.paths().home / "labels" / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    labels.to_parquet(folder / f".{name}", index=False)
    (folder / f".{name}").rename(folder / name)  # complete files only: the readers skip dot files


def every_other(rows: pd.DataFrame) -> pd.Series:
    """Right on exactly half of each arm's rows: no difference between the arms."""
    return rows.groupby("model_version").cumcount() % 2 == 0


def test_an_ab_test_promotes_a_clearly_better_version(app: App) -> None:
    champion, candidate = new_challenger()
    started = start(app, champion, candidate, {"type": "ab", "traffic": 0.5, "metric": "accuracy",
                                               "min_labels": 100}, "manual__ab_better")
    record = started["experiment"]
    assert started["serving"]["experiment"]["id"] == record["id"], "the deploy step waits until the app routes it"
    assert record["arms"] == {champion: 0.5, candidate: 0.5} and record["status"] == "running"
    served = serve_rounds(app)
    assert {row["route"] for row in served} == {f"experiment:{record['id']}"}
    share = sum(row["model_version"] == candidate for row in served) / len(served)
    assert abs(share - 0.5) < 0.15, share  # 200 entities: binomial spread around the traffic split
    rows = logged(f"experiment:{record['id']}", len(served), datetime.fromisoformat(record["started_at"]))
    write_labels("ab_better.parquet", rows, lambda r: (r["model_version"] == candidate) | every_other(r))

    out, outlets = readout("scheduled__ab_better")

    assert (out["decision"], out["winner"], out["status"]) == ("promote", candidate, "promoted"), out["reason"]
    assert out["labels"] == out["served"] == {v: int((rows["model_version"] == v).sum()) for v in (champion, candidate)}
    assert out["values"][candidate] == 1.0 and out["values"][champion] == pytest.approx(0.5, abs=0.01)
    assert registry().alias_version("champion") == candidate
    event = registry().history()[-1]
    assert (event.action, event.version, event.previous, event.dag_id) == (
        "promote", candidate, champion, f"{MODEL}__experiment")
    assert event.reason.startswith(f"experiment {record['id']}: accuracy v{candidate} - v{champion}: difference +")
    assert "the new version is better" in event.reason
    names = dict(outlets.added())
    assert names[f"mlops.experiment.{MODEL}"]["decision"] == "promote"
    assert names[f"mlops.model.{MODEL}.champion"] == {"version": candidate, "previous": champion, "action": "promote",
                                                     "reason": event.reason, "audit_seq": event.seq}
    ready = wait_until(lambda: (r := app.ready())["experiment"] is None and r, "the app drops the experiment")
    assert ready["primary"]["version"] == candidate


def test_no_difference_at_the_deadline_keeps_the_champion(app: App) -> None:
    champion, candidate = new_challenger()
    record = start(app, champion, candidate, {"type": "ab", "traffic": 0.5, "metric": "accuracy",
                                              "min_labels": 100, "max_duration": "1d"},
                   "manual__ab_same")["experiment"]
    served = serve_rounds(app)
    rows = logged(f"experiment:{record['id']}", len(served), datetime.fromisoformat(record["started_at"]))
    write_labels("ab_same.parquet", rows, every_other)

    out, outlets = readout("scheduled__ab_same", now=datetime.now(UTC) + timedelta(days=1, minutes=5))

    assert (out["decision"], out["status"], out["winner"]) == ("rollback", "rolled_back", None), out["reason"]
    assert "inconclusive, the champion stays" in out["reason"] and out["final"] is True
    assert registry().alias_version("champion") == champion
    event = registry().history()[-1]
    assert (event.action, event.version, event.previous) == ("experiment_stop", candidate, champion)
    assert event.reason == f"experiment {record['id']}: {out['reason']}"
    assert [name for name, _ in outlets.added()] == [f"mlops.experiment.{MODEL}"]  # no champion event
    wait_until(lambda: app.ready()["experiment"] is None, "all traffic back on the champion")
    assert {row["model_version"] for row in app.predict(DRIVERS[:20])} == {champion}


def test_bandit_shares_follow_the_better_arm_in_every_worker(app: App) -> None:
    from airflow_mlops.core import experiment_history
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.serving.models import ModelManager
    from airflow_mlops.serving.routing import entity_key_text

    champion, candidate = new_challenger()
    record = start(app, champion, candidate, {"type": "bandit", "metric": "accuracy", "min_share": 0.1},
                   "manual__bandit")["experiment"]
    assert record["arms"] == {champion: 0.5, candidate: 0.5}
    served = serve_rounds(app)
    rows = logged(f"experiment:{record['id']}", len(served), datetime.fromisoformat(record["started_at"]))
    write_labels("bandit.parquet", rows, lambda r: (r["model_version"] == candidate) | every_other(r))

    out, outlets = readout("scheduled__bandit_1")

    assert out["decision"] == "update" and out["status"] == "running" and not outlets.added()
    assert out["shares"][candidate] > 0.85 and out["shares"][champion] >= 0.1 - 1e-9
    shares = wait_until(lambda: ((app.ready()["experiment"] or {}).get("arms") or [{}])[-1].get("share", 0) > 0.85
                        and app.ready()["experiment"]["arms"], "the app routes by the new shares")
    assert {arm["version"]: arm["share"] for arm in shares} == out["shares"]
    worker = ModelManager(MODEL, poll_seconds=60)  # another worker (or replica) of the same app
    worker.start()
    try:
        assert worker.status()["experiment"]["arms"] == shares
        keys = [entity_key_text({"driver_id": d}) for d in DRIVERS]
        assert [worker.route(k)[0].version for k in keys] == [app.server.manager.route(k)[0].version for k in keys]
    finally:
        worker.stop()
    looks = experiment_history.read_history(MLflowHook().get_conn(), record["run_id"])
    assert [look["arms"][candidate]["share"] for look in looks] == [0.5, pytest.approx(out["shares"][candidate])]
    assert looks[-1]["arms"][candidate]["labels"] == out["labels"][candidate]
    assert looks[-1]["arms"][candidate]["predictions"] == out["served"][candidate]  # the arm's pulls
