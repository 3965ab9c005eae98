"""ModelManager against a real SQLite MLflow registry with real (tiny) sklearn models.

One module-scoped store holds the logged models; each test registers them under a fresh model name,
so aliases never leak between tests. The manager gets its client through an explicit MLflowHook
(no process-global MLflow URIs), as the serving app does.
"""

from __future__ import annotations

import shutil
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.serving import models as serving_models
from airflow_mlops.serving.models import ModelLoadError, ModelManager

pytestmark = pytest.mark.integration

COLUMNS = ["trip_distance_km", "driver_rating", "hour"]
POLL = 0.3


@dataclass
class Store:
    hook: MLflowHook
    logged: dict[str, tuple[str, str, str]]  # key -> (model_uri, run_id, model_id)
    rows: pd.DataFrame
    expected: dict[str, np.ndarray]  # key -> positive-class probabilities on `rows`


def _models() -> dict[str, Any]:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(5)
    x = pd.DataFrame(rng.normal(size=(200, 3)), columns=COLUMNS)
    y = (x["trip_distance_km"] + 0.3 * x["driver_rating"] > 0).astype(int)
    armed = [False]

    def breaks_after_fit(frame: Any) -> Any:  # pickled by value (a local): raises once logged
        if armed[0]:
            raise RuntimeError("feature pipeline expects a column that no longer exists")
        return frame

    boom = make_pipeline(FunctionTransformer(breaks_after_fit), LogisticRegression()).fit(x, y)
    armed[0] = True
    return {"up": LogisticRegression().fit(x, y), "down": LogisticRegression().fit(x, 1 - y),
            "gone": LogisticRegression().fit(x, y), "no_proba": LinearRegression().fit(x, y), "boom": boom}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    import mlflow
    import mlflow.sklearn

    root = tmp_path_factory.mktemp("serving_registry")
    hook = MLflowHook(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "artifacts"))
    experiment = hook.experiment_id("serving")
    fitted = _models()
    logged = {}
    with hook.activated():
        for key, model in fitted.items():
            with mlflow.start_run(experiment_id=experiment) as run:
                info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                                pip_requirements=["scikit-learn"])
            logged[key] = (info.model_uri, run.info.run_id, info.model_id)
    gone = hook.get_conn().get_logged_model(logged["gone"][2]).artifact_location
    shutil.rmtree(unquote(urlsplit(gone).path))  # registered below, but its files are lost
    rows = pd.DataFrame(np.random.default_rng(9).normal(size=(64, 3)), columns=COLUMNS)
    expected = {key: fitted[key].predict_proba(rows)[:, 1] for key in ("up", "down")}
    return Store(hook, logged, rows, expected)


@dataclass
class Registered:
    name: str
    store: Store
    versions: dict[str, str]  # key -> version

    def client(self) -> Any:
        return self.store.hook.get_conn()

    def register(self, key: str) -> str:
        uri, run_id, model_id = self.store.logged[key]
        with self.store.hook.activated() as client:  # MLflow resolves models:/m-... sources via global URIs
            version = str(client.create_model_version(self.name, uri, run_id=run_id, model_id=model_id).version)
            # as the training job tags a binary model's version: the task is stated, not guessed from the estimator
            client.set_model_version_tag(self.name, version, "airflow_mlops.task", "binary")
        self.versions[key] = version
        return version

    def champion(self, version: str) -> None:
        self.client().set_registered_model_alias(self.name, "champion", version)

    def manager(self, **kwargs: Any) -> ModelManager:
        kwargs.setdefault("poll_seconds", POLL)
        return ModelManager(self.name, client_factory=self.store.hook.get_conn, **kwargs)

    def key_of(self, version: str) -> str:
        return {v: k for k, v in self.versions.items()}[version]


@pytest.fixture
def registered(store: Store) -> Registered:
    """A fresh registered model: v1 = "up", v2 = "down" (opposite answers), champion -> v1."""
    reg = Registered(f"rides_{uuid.uuid4().hex[:8]}", store, {})
    reg.client().create_registered_model(reg.name)
    reg.register("up")
    reg.register("down")
    reg.champion("1")
    return reg


@pytest.fixture
def manager(registered: Registered) -> Iterator[ModelManager]:
    mgr = registered.manager()
    mgr.start()
    yield mgr
    mgr.stop()


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)
    return time.perf_counter() - started


def test_start_loads_and_warms_the_champion(registered: Registered, manager: ModelManager) -> None:
    primary = manager.primary
    assert (primary.name, primary.version, primary.feature_columns) == (registered.name, "1", tuple(COLUMNS))
    assert primary.run_id == registered.store.logged["up"][1]
    shuffled = registered.store.rows[COLUMNS[::-1]].astype("float32")  # order and dtype do not matter
    np.testing.assert_allclose(primary.predict_proba(shuffled), registered.store.expected["up"], rtol=1e-6)
    status = manager.status()
    assert status["mode"] == "single" and status["secondary"] is None and status["last_error"] is None
    assert status["primary"]["version"] == "1" and status["alias_version"] == "1" and status["following"]


def test_start_without_champion_names_the_existing_versions(registered: Registered) -> None:
    registered.client().delete_registered_model_alias(registered.name, "champion")
    mgr = registered.manager()
    with pytest.raises(ModelLoadError, match=r"alias 'champion' is not set \(existing versions: \[1, 2\]\)"):
        mgr.start()
    assert not mgr.loaded and "champion" in (mgr.status()["last_error"] or "")
    with pytest.raises(ModelLoadError, match="no model loaded yet"):
        mgr.route("k")


def test_alias_move_is_followed_by_the_next_poll_tick(registered: Registered, manager: ModelManager,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ticks: list[list[Any]] = []  # [start, swapped] of every poll tick, appended when it starts
    real_poll = manager.poll_once

    def counted() -> bool:
        tick: list[Any] = [time.perf_counter(), None]
        ticks.append(tick)
        tick[1] = real_poll()
        return bool(tick[1])

    monkeypatch.setattr(manager, "poll_once", counted)
    moved = time.perf_counter()
    registered.champion("2")
    took = wait_for(lambda: any(swapped for _, swapped in ticks), timeout=60)
    # Counted in ticks, not seconds (a loaded machine stretches seconds): a tick that began before the
    # move may still read the old alias, but the first tick that begins after it must swap.
    swap_start = next(start for start, swapped in ticks if swapped)
    missed = [start for start, swapped in ticks if moved <= start < swap_start]
    print(f"\nalias move -> swapped primary in {took:.3f} s (poll {POLL} s)")
    assert missed == [], f"{len(missed)} poll tick(s) after the alias move did not follow it"
    assert manager.primary.version == "2"
    np.testing.assert_allclose(manager.primary.predict_proba(registered.store.rows),
                               registered.store.expected["down"], rtol=1e-6)
    assert manager.status()["alias_version"] == "2", "status shows the alias of the primary it shows"


def test_hot_swap_under_concurrent_traffic_never_fails_or_mixes(registered: Registered,
                                                                manager: ModelManager) -> None:
    rows, expected = registered.store.rows, registered.store.expected
    stop, errors, answers = threading.Event(), [], Counter()
    live: Counter[str] = Counter()  # answers so far, read while the traffic runs

    def traffic(worker: int) -> None:
        seen: Counter[str] = Counter()
        n = 0
        while not stop.is_set():
            n += 1
            try:
                model, shadow, route = manager.route(f"driver-{worker}-{n}")
                got = model.predict_proba(rows)
                key = registered.key_of(model.version)
                if shadow is not None or route != "primary" or not np.allclose(got, expected[key], rtol=1e-6):
                    errors.append(f"v{model.version} answered {got[:3]} via {route}/{shadow}")
                seen[model.version] += 1
                live[model.version] += 1
            except Exception as exc:  # noqa: BLE001 - the test counts them
                errors.append(repr(exc))
        answers.update(seen)

    threads = [threading.Thread(target=traffic, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    swap_times = []
    current = "1"
    for version in ["2", "1", "2", "1", "2"]:
        # traffic reaches the current version before each swap (a condition, not a fixed pause)
        already = live[current]
        wait_for(lambda v=current, n=already: live[v] > n, timeout=60)
        started = time.perf_counter()
        manager.deploy(version)
        swap_times.append(time.perf_counter() - started)
        current = version
    already = live[current]
    wait_for(lambda: live[current] > already, timeout=60)
    stop.set()
    for thread in threads:
        thread.join()
    print(f"\nanswers per version {dict(answers)}; deploy (load+warm+swap) "
          f"median {statistics.median(swap_times) * 1000:.0f} ms, max {max(swap_times) * 1000:.0f} ms")
    assert errors == []
    assert answers["1"] > 0 and answers["2"] > 0 and set(answers) == {"1", "2"}
    assert manager.primary.version == "2"


@pytest.mark.parametrize(
    ("key", "reason"),
    [("gone", "artifact .* cannot be loaded"), ("no_proba", "a LinearRegression has no predict_proba"),
     ("boom", "warm-up predict_proba on a zero row failed .*no longer exists"), (None, "no such registered version")],
)
def test_a_broken_version_is_refused_and_the_old_model_keeps_serving(
    registered: Registered, manager: ModelManager, key: str | None, reason: str
) -> None:
    version = registered.register(key) if key else "99"
    with pytest.raises(ModelLoadError, match=f"{registered.name} v{version} cannot serve: {reason}") as info:
        manager.deploy(version)
    assert info.value.version == version
    if key is None:
        assert "existing versions: [1, 2])" in str(info.value)
    assert manager.primary.version == "1" and manager.mode == "single"
    np.testing.assert_allclose(manager.primary.predict_proba(registered.store.rows), registered.store.expected["up"])
    assert manager.status()["last_error"] == str(info.value)


def test_the_poller_survives_a_broken_champion_and_retries_per_tick(
    registered: Registered, manager: ModelManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[float] = []
    ticks: list[float] = []
    real_load, real_poll = serving_models.load_sklearn, manager.poll_once

    def counting(*args: Any) -> Any:
        attempts.append(time.perf_counter())
        return real_load(*args)

    def counted_poll() -> bool:
        ticks.append(time.perf_counter())
        return real_poll()

    monkeypatch.setattr(serving_models, "load_sklearn", counting)
    monkeypatch.setattr(manager, "poll_once", counted_poll)
    broken = registered.register("no_proba")
    registered.champion(broken)
    wait_for(lambda: len(attempts) >= 3, timeout=60)  # a failed load is not 'seen': later ticks retry it
    status = manager.status()
    assert "has no predict_proba" in status["last_error"] and status["primary"]["version"] == "1"
    assert status["alias_version"] == "1", "a failed load is not 'seen': it is retried"
    # one load per tick, never a tight loop: each attempt lies in its own tick
    for earlier, later in zip(attempts, attempts[1:], strict=False):
        assert any(earlier < tick <= later for tick in ticks), f"two load attempts in one tick: {attempts}, {ticks}"
    registered.champion("2")  # the fix: promote a good version
    wait_for(lambda: manager.primary.version == "2", timeout=60)
    assert manager.status()["last_error"] is None


def test_canary_routes_a_sticky_share_and_pauses_alias_following(registered: Registered,
                                                                 manager: ModelManager) -> None:
    status = manager.deploy("2", mode="canary", fraction=0.2)
    assert status["mode"] == "canary" and status["secondary"]["version"] == "2" and not status["following"]
    keys = [f'{{"driver_id":{i}}}' for i in range(5000)]
    first = [manager.route(key) for key in keys]
    share = sum(route == "canary" for _, _, route in first) / len(keys)
    assert abs(share - 0.2) < 0.02
    assert all((model.version == "2") == (route == "canary") and shadow is None for model, shadow, route in first)
    assert [manager.route(key)[2] for key in keys] == [route for _, _, route in first], "sticky per key"
    registered.champion("2")
    assert manager.poll_once() is False and manager.primary.version == "1", "no alias following during a canary"
    manager.deploy("2")  # canary passed: promote to full (reuses the loaded canary model)
    assert (manager.mode, manager.primary.version, manager.secondary) == ("single", "2", None)
    assert manager.primary is first[[r for _, _, r in first].index("canary")][0]


def test_canary_rollback_returns_to_the_alias_version(registered: Registered, manager: ModelManager) -> None:
    manager.deploy("2", mode="canary", fraction=0.5)
    before = manager.primary
    manager.deploy(mode="full")  # rollback: back to the champion, nothing reloaded
    assert manager.mode == "single" and manager.primary is before and manager.secondary is None


def test_shadow_scores_the_secondary_off_the_answer_path(registered: Registered, manager: ModelManager) -> None:
    manager.deploy("2", mode="shadow")
    model, shadow, route = manager.route("anything")
    assert (model.version, shadow.version if shadow else None, route) == ("1", "2", "primary")
    assert manager.fraction == 0.0 and manager.status()["following"]
    registered.champion("2")  # shadow does not pause following: the alias move deploys v2 in full
    wait_for(lambda: manager.mode == "single" and manager.primary.version == "2", timeout=2 * POLL + 5)


def test_bad_deploy_arguments_name_the_rule(manager: ModelManager) -> None:
    with pytest.raises(ValueError, match="'blue' is not one of full, canary, shadow"):
        manager.deploy("2", mode="blue")
    with pytest.raises(ValueError, match=r"fraction 1.5 must be within \[0, 1\]"):
        manager.deploy("2", mode="canary", fraction=1.5)


def test_route_and_predict_latency_per_row(registered: Registered, manager: ModelManager) -> None:
    one = registered.store.rows.iloc[[0]]
    for _ in range(50):
        manager.route("k")[0].predict_proba(one)
    timings = []
    for i in range(500):
        started = time.perf_counter()
        model, _, _ = manager.route(f"driver-{i}")
        model.predict_proba(one)
        timings.append(time.perf_counter() - started)
    p50, p99 = np.percentile(timings, [50, 99]) * 1000
    raw = []
    for _ in range(500):  # the same call straight to sklearn: the floor our wrapper adds to
        started = time.perf_counter()
        manager.primary.model.predict_proba(one)
        raw.append(time.perf_counter() - started)
    batch = pd.concat([registered.store.rows] * 16, ignore_index=True)  # 1024 rows
    started = time.perf_counter()
    manager.route("k")[0].predict_proba(batch)
    per_row = (time.perf_counter() - started) / len(batch) * 1e6
    print(f"\nroute+predict_proba, 1 row: p50 {p50:.3f} ms, p99 {p99:.3f} ms (sklearn alone p50 "
          f"{np.median(raw) * 1000:.3f} ms); 1024-row batch: {per_row:.2f} us/row")
    assert p50 < 20


def test_dst_path_downloads_do_not_touch_global_mlflow_uris(registered: Registered, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    before = mlflow.get_tracking_uri()
    mgr = registered.manager(follow_alias=None)
    mgr.start(version="2")
    assert mgr.primary.version == "2" and mgr.status()["following"] is False
    assert mlflow.get_tracking_uri() == before and not (tmp_path / "elsewhere.db").exists()
