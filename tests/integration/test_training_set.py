"""Point-in-time training sets from the real feature repo (duckdb), and the feature operators end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.exceptions import AirflowSkipException
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_mlops import config
from airflow_mlops.core import demo_data
from airflow_mlops.core.offline import land_landing_dir
from airflow_mlops.core.spec import parse_spec
from airflow_mlops.core.training_set import build_training_set, load_entity_df
from airflow_mlops.dags.assets import champion_asset, features_alias
from airflow_mlops.exceptions import MLOpsError, TrainingSetError
from airflow_mlops.hooks.feast import FeastHook
from airflow_mlops.operators.features import (
    FeastApplyOperator,
    FeastBuildTrainingSetOperator,
    FeastMaterializeOperator,
    LandRawBatchesOperator,
)

pytestmark = pytest.mark.integration

SPEC_FILE = config.project_dir() / "include" / "models" / "ride_completion.yaml"
VIEW = "driver_hourly_stats"
FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "rating"]
KEYS = dict(feature_service="ride_completion_v1", entity_keys=["driver_id"], timestamp_column="event_timestamp",
            label="completed", request_features=["trip_distance_km", "surge_multiplier", "pickup_hour"])


def _drop_in_landing(data: dict[str, pd.DataFrame]) -> None:
    for dataset, frame in data.items():
        target = config.paths().landing_dir / dataset / "demo.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target, index=False)


@pytest.fixture
def store(mlops_home: Path, small_demo: tuple) -> Any:
    _drop_in_landing(small_demo[1])
    land_landing_dir(config.paths().landing_dir, config.paths().offline_dir)
    hook = FeastHook()
    hook.apply()
    return hook.get_store()


def _entity_df(lookback_days: int = 30) -> pd.DataFrame:
    columns = [*KEYS["entity_keys"], KEYS["timestamp_column"], KEYS["label"], *KEYS["request_features"]]
    return load_entity_df(config.paths().dataset_dir("rides"), "event_timestamp", lookback_days, columns)


def _build(store: Any, entity_df: pd.DataFrame, out: Path) -> dict[str, Any]:
    return build_training_set(store, entity_df=entity_df, out_dir=out, **KEYS)


def test_point_in_time_join_matches_the_generator_truth(store: Any, small_demo: tuple, tmp_path: Path) -> None:
    _, data = small_demo
    lineage = _build(store, _entity_df(), tmp_path / "sets")
    frame = pd.read_parquet(lineage["path"])

    rides = data["rides"]
    assert lineage["rows"] == len(frame) == len(rides), "every entity row comes back exactly once"
    truth = demo_data._stats_as_of(rides, data[VIEW]).drop(columns="index", errors="ignore")
    truth = truth.assign(driver_id=rides["driver_id"], event_timestamp=rides["event_timestamp"])
    joined = frame.merge(truth, on=["driver_id", "event_timestamp"], suffixes=("", "_truth"), validate="1:1")
    assert len(joined) == len(rides)
    for column in ("acc_rate", "conv_rate", "rating"):
        np.testing.assert_array_equal(joined[column].to_numpy(), joined[f"{column}_truth"].to_numpy(), err_msg=column)
    assert lineage["missing"] == dict.fromkeys(FEATURES, 0)
    assert lineage["start"] == rides["event_timestamp"].min().isoformat()
    assert lineage["end"] == rides["event_timestamp"].max().isoformat()


def test_rows_outside_the_ttl_are_kept_and_reported_missing(store: Any, small_demo: tuple, tmp_path: Path) -> None:
    cfg, data = small_demo
    inside = _entity_df().head(40)
    stale = inside.head(7).assign(event_timestamp=cfg.end + timedelta(days=3))  # last stats > 2-day TTL ago
    early = inside.head(5).assign(event_timestamp=cfg.start - timedelta(hours=1))  # before any stats
    entity_df = pd.concat([inside, stale, early], ignore_index=True)

    lineage = _build(store, entity_df, tmp_path / "sets")
    assert lineage["rows"] == 52
    assert lineage["missing"] == dict.fromkeys(FEATURES, 12)
    frame = pd.read_parquet(lineage["path"])
    assert frame.loc[frame["event_timestamp"] > cfg.end, FEATURES].isna().all().all()


def test_same_inputs_give_the_same_content_addressed_snapshot(store: Any, tmp_path: Path) -> None:
    first = _build(store, _entity_df(), tmp_path / "sets")
    second = _build(store, _entity_df().sample(frac=1.0, random_state=3), tmp_path / "sets")  # row order differs

    assert first["sha256"] == second["sha256"] and first["path"] == second["path"]
    path = Path(first["path"])
    assert path.name == f"{first['sha256'][:16]}.parquet"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first["sha256"]
    assert {p.name for p in (tmp_path / "sets").iterdir()} == {path.name, path.with_suffix(".json").name}
    assert json.loads(path.with_suffix(".json").read_text()) == first


def test_chunked_join_gives_the_same_snapshot(store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded-memory chunks of entity rows must not change a single byte of the training set."""
    import airflow_mlops.core.training_set as training_set

    whole = _build(store, _entity_df(), tmp_path / "whole")
    monkeypatch.setattr(training_set, "ENTITY_CHUNK_ROWS", 97)  # many uneven chunks
    chunked = _build(store, _entity_df(), tmp_path / "chunked")
    assert chunked["rows"] == whole["rows"] > 97 * 3
    assert chunked["sha256"] == whole["sha256"]


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def test_lineage_is_plain_json_and_names_the_view_versions(store: Any, tmp_path: Path) -> None:
    lineage = _build(store, _entity_df(), tmp_path / "sets")
    assert all(type(leaf) in (str, int) for leaf in _leaves(lineage)), lineage
    view = lineage["feature_views"][VIEW]
    assert view["version"] == 0 and len(view["spec_sha256"]) == 16 and view["features"] == FEATURES
    assert view["created"].endswith("+00:00") and "materialized_until" not in view  # not materialized yet
    assert lineage["columns"] == ["driver_id", "event_timestamp", "completed", *KEYS["request_features"], *FEATURES]


def test_entity_df_is_only_the_newest_lookback_window(store: Any, small_demo: tuple) -> None:
    rides = small_demo[1]["rides"]
    window = _entity_df(lookback_days=1)
    newest = rides["event_timestamp"].max()
    expected = rides[rides["event_timestamp"] > newest - timedelta(days=1)]
    assert len(window) == len(expected) and window["event_timestamp"].min() == expected["event_timestamp"].min()
    assert str(window["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert list(window.columns) == ["driver_id", "event_timestamp", "completed", *KEYS["request_features"]]


def test_unknown_feature_service_and_missing_columns_are_training_set_errors(store: Any, tmp_path: Path) -> None:
    with pytest.raises(TrainingSetError, match=r"'ride_completion_v9' is not registered.*ride_completion_v1"):
        build_training_set(store, entity_df=_entity_df(), out_dir=tmp_path,
                           **{**KEYS, "feature_service": "ride_completion_v9"})
    with pytest.raises(TrainingSetError, match=r"lacks column\(s\) \['surge_multiplier'\]"):
        _build(store, _entity_df().drop(columns="surge_multiplier"), tmp_path)
    with pytest.raises(TrainingSetError, match="no landed data"):
        load_entity_df(tmp_path / "nothing", "event_timestamp", 30)


def test_feature_operators_end_to_end(mlops_home: Path, small_demo: tuple) -> None:
    """The feature DAG's tasks and the training-set task, run through execute() with a minimal context."""
    _drop_in_landing(small_demo[1])
    landed = LandRawBatchesOperator(task_id="land", fail_if_empty=True).execute({})
    data = small_demo[1]  # every shipped dataset: rides, driver_hourly_stats and the regression example's trips
    assert landed["landed"] == len(data) and landed["rows"] == sum(len(frame) for frame in data.values())
    with pytest.raises(MLOpsError, match="no new raw batch"):
        LandRawBatchesOperator(task_id="land", fail_if_empty=True).execute({})
    assert FeastApplyOperator(task_id="apply").execute({})["applied"] is True
    assert FeastApplyOperator(task_id="apply").execute({})["applied"] is False

    features, other = features_alias(VIEW), champion_asset("ride_completion")
    context: dict[str, Any] = {"outlet_events": OutletEventAccessors()}
    result = FeastMaterializeOperator(task_id="materialize", outlets=[features, other]).execute(context)
    stats_batch = next(b["batch_id"] for b in landed["batches"] if b["dataset"] == VIEW)
    assert _alias_events(context, features) == [(f"mlops.features.{VIEW}", f"mlops://features/{VIEW}", {
        "feature_view": VIEW, "mode": "full", "rows": 1440, "batch_ids": [stats_batch],
        "start": "2026-10-01T00:00:00+00:00", "end": "2026-10-03T23:00:00+00:00",
    })]
    assert context["outlet_events"][other].extra == {}, "only feature outlets are touched"
    assert json.loads(json.dumps(result)) == result

    window = FeastMaterializeOperator(task_id="m2", start="2026-10-03T00:00:00", end="2026-10-03T23:00:00+00:00")
    assert window.execute({"outlet_events": OutletEventAccessors()})["rows"] == 24 * 20

    spec = parse_spec(SPEC_FILE.read_text(), str(SPEC_FILE))
    lineage = FeastBuildTrainingSetOperator(
        task_id="build", model_name=spec.name, feature_service=spec.features.feature_service,
        entity_dataset=spec.features.entity_df.dataset, entity_keys=list(spec.features.entity_keys),
        timestamp_column=spec.features.entity_df.timestamp_column, label=spec.features.label,
        request_features=list(spec.features.entity_df.request_features), lookback_days=str(spec.training.lookback_days),
    ).execute({})
    assert Path(lineage["path"]).parent == mlops_home / "training_sets" / "ride_completion"
    assert lineage["rows"] == 1200 and json.loads(json.dumps(lineage)) == lineage
    assert lineage["feature_views"][VIEW]["materialized_until"] == "2026-10-03T23:00:00+00:00"


RIDE_VIEW = """

ride_stats = FeatureView(
    name="ride_stats", entities=[driver], ttl=timedelta(days=2),
    schema=[Field(name="trip_distance_km", dtype=Float64)],
    source=FileSource(name="rides_source", path=str(paths().dataset_dir("rides") / "**" / "*.parquet"),
                      timestamp_field="event_timestamp"),
)
"""


def _materialize(context: dict[str, Any], outlets: list[Asset | AssetAlias], **kwargs: Any) -> dict[str, Any]:
    return FeastMaterializeOperator(task_id="materialize", outlets=outlets, **kwargs).execute(context)


def _alias_events(context: dict[str, Any], alias: AssetAlias) -> list[tuple[str, str, dict[str, Any]]]:
    """(asset name, asset uri, event extra) of each event the task added through `alias`."""
    events = context["outlet_events"][alias].asset_alias_events
    return [(e.dest_asset_key.name, e.dest_asset_key.uri, e.extra) for e in events]


def test_materialize_skips_when_no_view_has_new_rows(mlops_home: Path, small_demo: tuple) -> None:
    _drop_in_landing(small_demo[1])
    LandRawBatchesOperator(task_id="land").execute({})
    FeastApplyOperator(task_id="apply").execute({})
    features = features_alias(VIEW)
    assert _materialize({"outlet_events": OutletEventAccessors()}, [features])["rows"] == 1440

    with pytest.raises(AirflowSkipException, match=rf"no new feature rows: views \['{VIEW}'\] are up to date"):
        _materialize({"outlet_events": OutletEventAccessors()}, [features])
    context: dict[str, Any] = {"outlet_events": OutletEventAccessors()}
    result = _materialize(context, [features], skip_when_up_to_date=False)
    assert result["views"][VIEW]["mode"] == "up_to_date" and result["rows"] == 0
    assert _alias_events(context, features) == [], "succeeds, but an alias with no added event emits nothing"


def test_only_views_with_new_rows_get_events(
    mlops_home: Path, small_demo: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two views; a new batch of driver stats only: the task succeeds and adds an event for that view alone.

    A static Asset outlet (the old way) still gets the extra for a view with new rows and none otherwise
    (Airflow then emits it with an empty extra: the reason to use `features_alias`).
    """
    repo = tmp_path / "repo"
    shutil.copytree(config.feature_repo_dir(), repo, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "definitions.py").write_text((repo / "definitions.py").read_text() + RIDE_VIEW)
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_TWO_VIEWS", json.dumps({"conn_type": "feast",
                                                                   "extra": {"repo_path": str(repo)}}))
    cfg, data = small_demo
    _drop_in_landing(data)
    LandRawBatchesOperator(task_id="land").execute({})
    FeastApplyOperator(task_id="apply", feast_conn_id="feast_two_views").execute({})
    stats, rides = features_alias(VIEW), features_alias("ride_stats")
    static_stats, static_rides = Asset(f"mlops.features.{VIEW}"), Asset("mlops.features.ride_stats")
    outlets: list[Asset | AssetAlias] = [stats, rides, static_stats, static_rides]
    context: dict[str, Any] = {"outlet_events": OutletEventAccessors()}
    first = _materialize(context, outlets, feast_conn_id="feast_two_views")
    assert first["feature_views"] == ["driver_hourly_stats", "ride_stats"]
    assert [name for name, _, _ in _alias_events(context, rides)] == ["mlops.features.ride_stats"]

    newer = demo_data.driver_stats(demo_data.DemoConfig(start=cfg.end, days=1, drivers=cfg.drivers, seed=5))
    _drop_in_landing({VIEW: newer})
    LandRawBatchesOperator(task_id="land").execute({})
    context = {"outlet_events": OutletEventAccessors()}
    second = _materialize(context, outlets, feast_conn_id="feast_two_views")
    assert second["views"]["ride_stats"]["mode"] == "up_to_date"
    [(name, _, extra)] = _alias_events(context, stats)
    assert name == f"mlops.features.{VIEW}" and extra["rows"] == len(newer) == second["rows"]
    assert extra["mode"] == "incremental"
    assert _alias_events(context, rides) == [], "no new ride_stats rows: no event"
    assert context["outlet_events"][static_stats].extra == extra
    assert context["outlet_events"][static_rides].extra == {}
