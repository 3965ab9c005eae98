"""The serving app's online read (serving/feature_read.py) returns exactly what Feast's get_online_features does.

A real Feast repo (tests/support/feature_read_repo.py: composite keys, NULLs, lists, bool, float32,
a rewritten row, unknown entities, repeats) on the embedded SQLite online store. The same checks run
against Redis in tests/stack/test_feast_redis.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.feature_read_repo import (
    assert_feature_ages,
    assert_same_as_feast,
    assert_stale_policies,
    build_repo,
    entity_rows,
    feast_answer,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from airflow_mlops.hooks.feast import FeastHook

    home = tmp_path_factory.mktemp("feature_read")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLOPS_HOME", str(home))
        env.delenv("AIRFLOW_CONN_FEAST_DEFAULT", raising=False)
        env.delenv("MLOPS_FEAST_ONLINE_STORE", raising=False)
        feast_store = FeastHook(online_store=f"sqlite:///{home / 'online.db'}").get_store()
        build_repo(feast_store, home / "data")
        yield feast_store


def test_direct_read_equals_get_online_features(store: Any) -> None:
    assert_same_as_feast(store)
    answer = feast_answer(store, "all_plain", entity_rows())
    # the fixture's data must exercise what it claims: NULLs, unknown entities, lists, the newer row
    assert None in answer["conv_rate"] and None in answer["tier"] and None in answer["surge"]
    assert 0.99 in answer["conv_rate"] and [1, 2, 3] in answer["recent"]


def test_every_online_row_carries_its_age_and_stale_views_are_named(store: Any) -> None:
    assert_feature_ages(store)


def test_each_stale_features_policy_on_sqlite(store: Any) -> None:
    assert_stale_policies(store)  # the same checks run on Redis in tests/stack/test_feast_redis.py


def test_on_demand_views_go_through_feast(store: Any) -> None:
    from airflow_mlops.serving.feature_read import DirectRead
    from airflow_mlops.serving.features import OnlineFeatures

    service = store.get_feature_service("with_on_demand")
    assert DirectRead(store).read(service, entity_rows()[:3]) is None
    online = OnlineFeatures(store, "with_on_demand", ["driver_id"])
    rows = [{"driver_id": d} for d in (1, 2, 6)]
    assert online.lookup(rows) == feast_answer(store, "with_on_demand", rows)
    assert online.lookup(rows)["conv_pct"] == [99.0, 2.0, 6.0]


def test_lookup_reads_directly_and_reports_unknown_entities(store: Any) -> None:
    from airflow_mlops.serving.features import OnlineFeatures, UnknownEntity

    online = OnlineFeatures(store, "subset", ["driver_id", "city"])
    assert online._direct is not None
    rows = [{"driver_id": 2, "city": "paris"}, {"driver_id": 2, "city": "nowhere"}]
    assert online.lookup(rows) == feast_answer(store, "subset", rows)
    with pytest.raises(UnknownEntity, match="driver_id=5, city='nowhere'"):
        online.lookup([{"driver_id": 5, "city": "nowhere"}, {"driver_id": 2, "city": "paris"}])


def test_a_feast_apply_reaches_the_direct_read(store: Any, tmp_path: Path) -> None:
    """A service changed by `feast apply` is read with its new features once Feast's registry cache refreshes."""
    from feast import FeatureService

    from airflow_mlops.serving.feature_read import DirectRead

    direct = DirectRead(store)
    rows = entity_rows()[:10]
    before = direct.read(store.get_feature_service("subset"), rows)
    assert before is not None and set(before) == {"tier", "conv_rate", "surge"}
    view = store.get_feature_view("driver_stats")
    store.apply([FeatureService(name="subset", features=[view[["trips"]]])])
    service = store.get_feature_service("subset")
    store.refresh_registry()
    assert direct.read(service, rows) == feast_answer(store, "subset", rows)
    assert set(direct.read(service, rows) or {}) == {"trips"}


def test_missing_sqlite_store_raises_a_store_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No online DB: the read fails with sqlite3's error, which the app answers as 503 (OnlineStoreDown)."""
    from airflow_mlops.hooks.feast import FeastHook
    from airflow_mlops.serving.features import OnlineFeatures, OnlineStoreDown

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONN_FEAST_DEFAULT", raising=False)
    store = FeastHook(online_store=f"sqlite:///{tmp_path / 'online.db'}").get_store()
    build_repo(store, tmp_path / "data")
    online = OnlineFeatures(FeastHook(online_store=f"sqlite:///{tmp_path / 'gone' / 'x.db'}").get_store(),
                            "subset", ["driver_id", "city"])
    with pytest.raises(OnlineStoreDown, match="gone"):
        online.lookup([{"driver_id": 2, "city": "paris"}])
