"""Experiment routing in the serving app: sticky keyed buckets over N arms, and ModelManager following the record.

Real sklearn models; the registry is stubbed at its edge (the MlflowClient calls ModelManager makes), as in
test_serving_models.py. tests/integration/test_experiments.py runs the same against a real registry and app.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.experiments import PROMOTED, TAG, ab_arms, new_record
from airflow_mlops.core.spec import Experiment
from airflow_mlops.serving import models as serving_models
from airflow_mlops.serving.models import ModelManager
from airflow_mlops.serving.routing import Arms, arm_bucket, canary_bucket

pytestmark = pytest.mark.unit

COLUMNS = ["trip_distance_km", "hour"]
KEYS = [f'{{"driver_id":{i}}}' for i in range(20_000)]


def fitted(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    x = pd.DataFrame(np.random.default_rng(seed).normal(size=(80, 2)), columns=COLUMNS)
    return LogisticRegression().fit(x, (x["trip_distance_km"] > 0).astype(int))


class Registry:
    """The MlflowClient calls ModelManager makes, over an in-memory registry with registered-model tags."""

    def __init__(self) -> None:
        self.versions = {str(v): fitted(v) for v in (1, 2, 3)}
        self.aliases = {"champion": "1"}
        self.tags: dict[str, str] = {}
        self.loads: Counter[str] = Counter()

    def get_model_version(self, name: str, version: str) -> Any:
        return SimpleNamespace(version=version, run_id=f"run{version}")

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        return SimpleNamespace(version=self.aliases[alias])

    def get_registered_model(self, name: str) -> Any:
        return SimpleNamespace(tags=dict(self.tags))

    def search_model_versions(self, query: str) -> list[Any]:
        return [SimpleNamespace(version=v) for v in self.versions]

    def start(self, arms: dict[str, float] | None = None, **changes: Any) -> Any:
        record = new_record(Experiment(type="ab", traffic=0.3), task="binary", primary_metric="roc_auc",
                            champion="1", candidate="2", arms=["1", "2"], at=datetime(2026, 11, 1, tzinfo=UTC),
                            started_by={})
        from dataclasses import replace

        record = replace(record, arms=arms or record.arms, **changes)
        self.tags[TAG] = record.to_json()
        return record


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Registry:
    reg = Registry()

    def load(client: Any, name: str, version: str) -> Any:
        reg.loads[version] += 1
        return reg.versions[version]

    monkeypatch.setattr(serving_models, "load_sklearn", load)
    return reg


@pytest.fixture
def manager(registry: Registry) -> Iterator[ModelManager]:
    mgr = ModelManager("rides", client_factory=lambda: registry, poll_seconds=60)  # polls by hand
    mgr.start()
    yield mgr
    mgr.stop()


def _model(version: str) -> Any:
    return SimpleNamespace(version=version)


# ---------------------------------------------------------------------------------- keyed buckets
def test_arm_buckets_are_sticky_keyed_by_the_experiment_and_split_by_cumulative_shares() -> None:
    arms = Arms.of("v2-20261101T000000", "experiment:v2-20261101T000000", [_model("1"), _model("2"), _model("3")],
                   [0.5, 0.3, 0.2])
    picked = [arms.pick(key).version for key in KEYS]
    assert picked == [arms.pick(key).version for key in KEYS]  # the same entity, the same arm
    shares = Counter(picked)
    for version, share in (("1", 0.5), ("2", 0.3), ("3", 0.2)):
        assert shares[version] / len(KEYS) == pytest.approx(share, abs=0.015)
    assert arms.bounds == pytest.approx((0.5, 0.8, 1.0)) and arms.bounds[-1] == 1.0
    # another experiment draws a fresh split: its treatment group is not the last one's again
    first = [arm_bucket("exp-a", key) < 0.5 for key in KEYS]
    second = [arm_bucket("exp-b", key) < 0.5 for key in KEYS]
    both = sum(a and b for a, b in zip(first, second, strict=True)) / len(KEYS)
    assert both == pytest.approx(0.25, abs=0.015)
    assert [arm_bucket("exp-a", k) for k in KEYS[:50]] != [canary_bucket(k) for k in KEYS[:50]]


# ---------------------------------------------------------------------------- the manager follows
def test_a_running_record_routes_every_worker_alike_and_an_ended_one_routes_back(registry: Registry,
                                                                               manager: ModelManager) -> None:
    assert manager.route(KEYS[0])[2] == "primary" and manager.status()["experiment"] is None
    record = registry.start()
    manager.poll_once()
    other = ModelManager("rides", client_factory=lambda: registry, poll_seconds=60)  # a second worker
    other.start()
    routed = [manager.route(key) for key in KEYS[:4000]]
    assert {route for _, _, route in routed} == {record.route}
    versions = [model.version for model, _, _ in routed]
    assert versions == [other.route(key)[0].version for key in KEYS[:4000]]
    assert versions.count("2") / len(versions) == pytest.approx(0.3, abs=0.03)
    assert manager.status()["experiment"] == {"id": record.id, "route": record.route, "arms": [
        {"version": "1", "share": 0.7}, {"version": "2", "share": 0.3}]}
    assert [m.version for m in manager.served()] == ["1", "2"]
    registry.start(arms={"1": 0.1, "2": 0.9})  # new shares (a bandit update)
    manager.poll_once()
    assert [m.version for m, _, _ in (manager.route(k) for k in KEYS[:4000])].count("2") > 3400
    assert registry.loads == Counter({"1": 2, "2": 2}), "each worker loaded each version once"
    from dataclasses import replace

    registry.tags[TAG] = replace(record, status=PROMOTED).to_json()
    manager.poll_once()
    assert manager.route(KEYS[0]) == (manager.primary, None, "primary") and manager.status()["experiment"] is None
    other.stop()


def test_a_canary_pauses_experiment_routing_and_an_unreadable_record_is_no_experiment(registry: Registry,
                                                                                     manager: ModelManager) -> None:
    registry.start()
    manager.poll_once()
    manager.deploy("3", "canary", 0.5)
    assert {manager.route(key)[2] for key in KEYS[:200]} == {"primary", "canary"}
    manager.deploy(None, "full")  # back to following the alias: the record routes again
    manager.poll_once()
    assert manager.route(KEYS[0])[2].startswith("experiment:")
    registry.tags[TAG] = "{broken"
    manager.poll_once()
    assert manager.status()["experiment"] is None and manager.status()["last_error"] is None


def test_arm_shares_from_ab_traffic() -> None:
    assert ab_arms("1", "2", 0.1) == {"1": 0.9, "2": 0.1}
