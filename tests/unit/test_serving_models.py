"""ModelManager routing/deploy logic with real sklearn models, canary hashing, and ServingMetrics.

The registry is stubbed at its edge (an MlflowClient look-alike; `load_sklearn` returns fitted
models); tests/integration/test_serving_models_registry.py runs the same manager against a real registry.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

import airflow_mlops.serving as serving
from airflow_mlops.serving import models as serving_models
from airflow_mlops.serving.metrics import ServingMetrics
from airflow_mlops.serving.models import (
    LoadedModel,
    MissingFeatures,
    ModelLoadError,
    ModelManager,
    canary_bucket,
    entity_key_text,
    warm_up,
)

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

pytestmark = pytest.mark.unit

COLUMNS = ["trip_distance_km", "hour"]


def _logistic() -> LogisticRegression:
    from sklearn.linear_model import LogisticRegression  # here, not at the top: collection stays fast

    return LogisticRegression()


def fitted(flip: bool = False) -> LogisticRegression:
    x = pd.DataFrame(np.random.default_rng(3).normal(size=(80, 2)), columns=COLUMNS)
    y = (x["trip_distance_km"] > 0).astype(int)
    return _logistic().fit(x, 1 - y if flip else y)


class FakeRegistry:
    """The four MlflowClient calls ModelManager makes, over an in-memory registry."""

    def __init__(self, versions: dict[str, Any], champion: str | None) -> None:
        self.versions = versions
        self.aliases = {"champion": champion} if champion else {}
        self.tags: dict[str, str] = {}  # registered-model tags (the experiment record)

    def get_model_version(self, name: str, version: str) -> Any:
        if version not in self.versions:
            from mlflow.exceptions import MlflowException  # here, not at the top: collection stays fast
            from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

            raise MlflowException("not found", error_code=RESOURCE_DOES_NOT_EXIST)
        return SimpleNamespace(version=version, run_id=f"run{version}")

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        if alias not in self.aliases:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException("no alias", error_code=INVALID_PARAMETER_VALUE)
        return SimpleNamespace(version=self.aliases[alias])

    def search_model_versions(self, query: str) -> list[Any]:
        return [SimpleNamespace(version=v) for v in self.versions]

    def get_registered_model(self, name: str) -> Any:
        return SimpleNamespace(tags=dict(self.tags))


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    reg = FakeRegistry({"1": fitted(), "2": fitted(flip=True)}, champion="1")
    monkeypatch.setattr(serving_models, "load_sklearn", lambda client, name, version: reg.versions[version])
    return reg


@pytest.fixture
def manager(registry: FakeRegistry) -> Iterator[ModelManager]:
    mgr = ModelManager("rides", client_factory=lambda: registry, poll_seconds=60)  # polls by hand
    mgr.start()
    yield mgr
    mgr.stop()


# ---------------------------------------------------------------------- canary hashing
def test_canary_bucket_is_a_fixed_function_of_the_key_not_pythons_salted_hash() -> None:
    expected = int.from_bytes(hashlib.blake2b(b'{"driver_id":1001}', digest_size=8).digest(), "big") / 2**64
    assert canary_bucket('{"driver_id":1001}') == expected
    code = "from airflow_mlops.serving.models import canary_bucket as b; print(repr(b('{\"driver_id\":1001}')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})  # another process, another hash seed
    assert float(out.stdout.strip().splitlines()[-1]) == expected


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.5, 0.9])
def test_canary_share_matches_the_fraction_on_10k_keys(fraction: float) -> None:
    keys = [entity_key_text({"driver_id": 1000 + i}) for i in range(10_000)]
    share = sum(canary_bucket(key) < fraction for key in keys) / len(keys)
    assert abs(share - fraction) < 0.02


def test_entity_key_text_is_canonical() -> None:
    assert entity_key_text({"b": 2, "a": 1}) == entity_key_text({"a": 1, "b": 2}) == '{"a":1,"b":2}'


# ---------------------------------------------------------------------- LoadedModel
def test_predict_proba_selects_and_orders_the_feature_columns() -> None:
    model = fitted()
    loaded = LoadedModel("rides", "1", None, model, tuple(COLUMNS), "now")
    frame = pd.DataFrame({"extra": ["x", "y"], "hour": [1, 2], "trip_distance_km": [3, -3]})  # ints, reordered
    np.testing.assert_allclose(loaded.predict_proba(frame), model.predict_proba(frame[COLUMNS].astype(float))[:, 1])
    with pytest.raises(MissingFeatures, match=r"rides v1 needs feature columns \['hour'\]") as info:
        loaded.predict_proba(frame.drop(columns="hour"))
    assert info.value.columns == ["hour"]


def test_frame_builds_the_fast_path_input_from_dict_rows() -> None:
    model = fitted()
    loaded = LoadedModel("rides", "1", None, model, tuple(COLUMNS), "now")
    frame = loaded.frame([{"hour": 3, "trip_distance_km": 1.5, "driver_id": 7}, {"hour": None, "trip_distance_km": 2}])
    assert list(frame.columns) == COLUMNS and list(frame.dtypes) == [np.float64, np.float64]
    assert np.isnan(frame["hour"].iloc[1]) and frame["trip_distance_km"].tolist() == [1.5, 2.0]
    full = frame.fillna(0.0)
    np.testing.assert_allclose(loaded.predict_proba(full), model.predict_proba(full)[:, 1])
    with pytest.raises(MissingFeatures, match=r"needs feature columns \['hour'\]"):
        loaded.frame([{"trip_distance_km": 1.0}])
    with pytest.raises(ValueError, match=r"feature columns \['hour'\] must be numbers"):
        loaded.frame([{"hour": "noon", "trip_distance_km": 1.0}])


def test_warm_up_refuses_models_that_cannot_answer() -> None:
    class NaNModel:
        def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
            return np.full((len(frame), 2), np.nan)

    with pytest.raises(ModelLoadError, match=r"rides v7 cannot serve: warm-up .* not one finite probability"):
        warm_up(LoadedModel("rides", "7", None, NaNModel(), ("a",), "now"))
    warm_up(LoadedModel("rides", "1", None, fitted(), tuple(COLUMNS), "now"))


def test_models_without_column_names_are_refused(registry: FakeRegistry) -> None:
    registry.versions["3"] = _logistic().fit(np.eye(2), [0, 1])  # fitted on numpy: no names
    mgr = ModelManager("rides", client_factory=lambda: registry, follow_alias=None)
    with pytest.raises(ModelLoadError, match="rides v3 cannot serve: the model has no feature_names_in_"):
        mgr.start("3")


# ---------------------------------------------------------------------- ModelManager logic
def test_single_mode_routes_everything_to_the_primary(manager: ModelManager) -> None:
    assert manager.route("k") == (manager.primary, None, "primary")
    assert (manager.mode, manager.fraction, manager.secondary) == ("single", 0.0, None)
    assert manager.status() | {"primary": None} == {
        "model": "rides", "mode": "single", "fraction": 0.0, "follow_alias": "champion", "shadow_alias": None,
        "primary": None, "secondary": None, "last_error": None, "alias_version": "1", "following": True,
        "experiment": None}
    assert manager.status()["primary"] == {"version": "1", "run_id": "run1", "loaded_at": manager.primary.loaded_at,
                                           "compiled": True, "feature_ranges": False, "task": "binary",
                                           "classes": [0, 1]}


def test_canary_is_sticky_and_follows_the_fraction(manager: ModelManager) -> None:
    manager.deploy("2", mode="canary", fraction=0.1)
    keys = [entity_key_text({"driver_id": i}) for i in range(10_000)]
    routes = [manager.route(key)[2] for key in keys]
    assert abs(routes.count("canary") / len(keys) - 0.1) < 0.02
    assert routes == [manager.route(key)[2] for key in keys]
    pairs = zip(keys[:500], routes[:500], strict=True)
    assert all(manager.route(key)[0].version == ("2" if route == "canary" else "1") for key, route in pairs)


def test_poller_follows_the_alias_but_not_during_a_canary(registry: FakeRegistry, manager: ModelManager) -> None:
    assert manager.poll_once() is False
    registry.aliases["champion"] = "2"
    manager.deploy("2", mode="canary", fraction=0.5)
    assert manager.poll_once() is False and manager.primary.version == "1"
    manager.deploy(mode="full")  # the canary passed and the alias moved: full deploy of the alias version
    assert (manager.mode, manager.primary.version) == ("single", "2")
    registry.aliases["champion"] = "1"
    assert manager.poll_once() is True and manager.primary.version == "1"


def test_a_canary_of_the_version_the_poller_just_followed_is_judged_against_the_one_it_replaced(
        registry: FakeRegistry, manager: ModelManager) -> None:
    # promote moves the alias first; the poller may swap to it before the deploy task asks for the canary
    registry.aliases["champion"] = "2"
    assert manager.poll_once() is True and manager.primary.version == "2"
    manager.deploy("2", mode="canary", fraction=0.1)
    status = manager.status()
    assert (manager.mode, manager.primary.version) == ("canary", "1")
    assert status["secondary"]["version"] == "2"
    manager.deploy("2", mode="canary", fraction=0.1)  # an admin decision: no poller memory left
    assert manager.primary.version == "1" and manager.status()["secondary"]["version"] == "2"


def test_poll_errors_are_kept_not_raised(registry: FakeRegistry, manager: ModelManager) -> None:
    def outage(*args: Any) -> Any:
        raise ConnectionError("registry down")

    registry.get_model_version_by_alias = outage  # type: ignore[method-assign]
    assert manager.poll_once() is False
    assert "cannot read alias 'champion' (ConnectionError: registry down)" in manager.status()["last_error"]
    manager.deploy("2")  # an explicit version needs no alias: it still deploys
    with pytest.raises(ModelLoadError, match="the current models keep serving"):
        manager.deploy()
    assert manager.primary.version == "2"


def test_explicit_full_deploy_sticks_until_the_alias_moves(registry: FakeRegistry, manager: ModelManager) -> None:
    manager.deploy("2")
    assert manager.poll_once() is False and manager.primary.version == "2"
    registry.versions["3"] = fitted()
    registry.aliases["champion"] = "3"
    assert manager.poll_once() is True and manager.primary.version == "3"


def test_canary_needs_a_primary_and_a_version(registry: FakeRegistry) -> None:
    registry.aliases.clear()
    mgr = ModelManager("rides", client_factory=lambda: registry)
    with pytest.raises(ModelLoadError, match=r"alias 'champion' is not set \(existing versions: \[1, 2\]\)"):
        mgr.start()
    with pytest.raises(ModelLoadError, match="without a primary model"):
        mgr.deploy("2", mode="canary", fraction=0.1)
    with pytest.raises(ValueError, match="poll_seconds=0 must be > 0"):
        ModelManager("rides", poll_seconds=0)


# ---------------------------------------------------------------------- package surface
def test_shadow_alias_scores_the_challenger_and_clears_once_promoted(registry: FakeRegistry) -> None:
    registry.aliases["challenger"] = "2"
    mgr = ModelManager("rides", client_factory=lambda: registry, poll_seconds=60, shadow_alias="challenger")
    mgr.start()
    try:
        assert (mgr.mode, mgr.primary.version, mgr.secondary and mgr.secondary.version) == ("shadow", "1", "2")
        assert mgr.route("k") == (mgr.primary, mgr.secondary, "primary")  # answers with v1, shadows v2
        registry.aliases["champion"] = "2"  # promoted: champion == challenger, nothing left to shadow
        assert mgr.poll_once() is True
        assert (mgr.mode, mgr.primary.version, mgr.secondary) == ("single", "2", None)
        registry.versions["3"] = fitted()
        registry.aliases["challenger"] = "3"  # the next challenger is picked up by the same poller
        assert mgr.poll_once() is False
        assert (mgr.mode, mgr.secondary and mgr.secondary.version) == ("shadow", "3")
    finally:
        mgr.stop()


def test_a_shadow_that_cannot_load_never_stops_the_primary(registry: FakeRegistry) -> None:
    registry.aliases["challenger"] = "9"
    registry.versions["9"] = _logistic().fit(np.eye(2), [0, 1])  # no column names: cannot serve
    mgr = ModelManager("rides", client_factory=lambda: registry, poll_seconds=60, shadow_alias="challenger")
    mgr.start()
    try:
        assert (mgr.mode, mgr.primary.version, mgr.secondary) == ("single", "1", None)
        assert "rides v9 cannot serve" in (mgr.status()["last_error"] or "")
    finally:
        mgr.stop()


def test_compiled_linear_pipeline_equals_sklearn_and_refuses_what_sklearn_refuses() -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from airflow_mlops.serving.fastpath import compile_checked

    rng = np.random.default_rng(5)
    x = pd.DataFrame(rng.normal(size=(200, 2)) * [3.0, 10.0] + [1.0, 12.0], columns=COLUMNS)
    y = (x["trip_distance_km"] + 0.1 * x["hour"] > 2).astype(int)
    pipeline = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), _logistic()).fit(x, y)
    fast = compile_checked(pipeline, COLUMNS)
    assert fast is not None
    rows = np.array([[1.0, np.nan], [np.nan, 3.0], [-1e6, 1e6], [0.5, 12.0]])
    np.testing.assert_allclose(fast(rows), pipeline.predict_proba(pd.DataFrame(rows, columns=COLUMNS))[:, 1],
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="infinity"):
        fast(np.array([[np.inf, 1.0]]))
    bare = compile_checked(fitted(), COLUMNS)  # no imputer: NaN is refused, as sklearn refuses it
    assert bare is not None
    with pytest.raises(ValueError, match="NaN"):
        bare(np.array([[np.nan, 1.0]]))
    from sklearn.ensemble import HistGradientBoostingClassifier

    trees = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    assert compile_checked(trees, COLUMNS) is None  # not compilable: served through sklearn
    loaded = LoadedModel("rides", "1", None, trees, tuple(COLUMNS), "now")
    np.testing.assert_array_equal(loaded.predict_matrix(rows), trees.predict_proba(pd.DataFrame(rows,
                                                                                             columns=COLUMNS))[:, 1])


def test_package_all_is_complete_and_lazy() -> None:
    heavy = "('mlflow', 'sklearn', 'pandas', 'numpy', 'prometheus_client')"
    code = f"import sys, airflow_mlops.serving; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    public = {"LoadedModel", "MissingFeatures", "ModelLoadError", "ModelManager", "PredictionLog", "ServingMetrics",
              "canary_bucket", "create_app", "entity_key_text"}
    assert set(serving.__all__) == public
    for name in public - {"create_app"}:  # create_app lives in app.py (built separately)
        assert getattr(serving, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        serving.nope  # noqa: B018


# ---------------------------------------------------------------------- metrics
def samples(metrics: ServingMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_metrics_render_the_contract_names() -> None:
    metrics = ServingMetrics("rides")
    metrics.observe(version="3", route="primary", status=200, seconds=0.004)
    metrics.observe(version="3", route="primary", status=200, seconds=0.02)
    metrics.observe(version="4", route="canary", status=500, seconds=3.0)
    metrics.set_versions("3", "4")
    dropped, written = [7], [40]
    metrics.track_dropped(lambda: dropped[0])
    metrics.track_written(lambda: written[0])
    got = samples(metrics)
    assert got[("mlops_serving_requests_total", (("model", "rides"), ("route", "primary"), ("status", "200"),
                                                 ("version", "3")))] == 2
    assert got[("mlops_serving_requests_total", (("model", "rides"), ("route", "canary"), ("status", "500"),
                                                 ("version", "4")))] == 1
    buckets = sorted(float(dict(labels)["le"]) for name, labels in got if name == "mlops_serving_request_seconds_bucket"
                     and dict(labels)["version"] == "3")
    assert buckets[0] == 0.0005 and buckets[-2] == 2.5 and buckets[-1] == float("inf")
    le_5ms = (("le", "0.005"), ("model", "rides"), ("route", "primary"), ("version", "3"))
    assert got[("mlops_serving_request_seconds_bucket", le_5ms)] == 1
    assert got[("mlops_serving_request_seconds_count", le_5ms[1:])] == 2
    info = {dict(labels)["slot"]: dict(labels)["version"] for name, labels in got if name == "mlops_serving_model_info"}
    assert info == {"primary": "3", "secondary": "4"}
    assert got[("mlops_serving_prediction_log_dropped_total", (("model", "rides"),))] == 7
    assert got[("mlops_serving_prediction_log_written_total", (("model", "rides"),))] == 40
    written[0] = 41  # read at scrape time, never a copy
    assert samples(metrics)[("mlops_serving_prediction_log_written_total", (("model", "rides"),))] == 41


def test_model_info_follows_the_slots_and_registries_are_private() -> None:
    metrics, other = ServingMetrics("rides"), ServingMetrics("rides")  # no duplicate-name clash
    metrics.set_versions("3", "4")
    metrics.set_versions("4", None)
    info = {(dict(labels)["slot"], dict(labels)["version"]): value for (name, labels), value in samples(metrics).items()
            if name == "mlops_serving_model_info"}
    assert info == {("primary", "4"): 1.0}
    assert samples(other)[("mlops_serving_prediction_log_dropped_total", (("model", "rides"),))] == 0
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("mlops_serving_requests_total") is None


def test_background_queue_drops_show_in_metrics() -> None:
    import threading

    from airflow_mlops.serving.scoring import Background

    metrics = ServingMetrics("rides")
    background = Background(None, "rides", max_jobs=2)
    metrics.track_background_dropped(lambda: background.dropped)
    release, started = threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(10)

    background.submit(blocking)
    assert started.wait(5), "the background thread runs jobs"
    ran: list[int] = []
    for i in range(5):  # two fit the queue while the thread is busy; three are dropped, never block
        background.submit(lambda i=i: ran.append(i))
    release.set()
    background.wait_idle()
    background.close()
    assert ran == [0, 1] and background.dropped == 3
    assert samples(metrics)[("mlops_serving_background_dropped_total", (("model", "rides"),))] == 3
