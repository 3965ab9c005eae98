"""core/batch_inference.py: chunked scoring equals one-shot scoring, chunk boundaries, empty input,
missing columns, idempotent run folders; and the shape of the `<model>__batch_predict` DAG.

The feature store here is a stand-in with Feast's two calls (`get_feature_service`,
`get_historical_features(...).to_df()`): features are a pure function of (driver, event time) and
rows come back shuffled, as Feast's duckdb join does not keep entity order. The real Feast path is
exercised by tests/integration/test_batch_dag.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.batch_inference import (
    MANIFEST_FILE,
    PREDICTION_COLUMN,
    VERSION_COLUMN,
    BatchInferenceError,
    ScoringModel,
    predict_batch,
    run_folder_name,
)

pytestmark = pytest.mark.unit

SERVICE = "rides_v1"
SERVED = ["conv_rate", "rating"]
REQUEST = ["trip_distance_km"]
KEYS = ["driver_id"]
TS = "event_timestamp"


class ShuffledFeatureStore:
    """The two FeatureStore calls predict_batch makes; records each join's entity row count."""

    def __init__(self, features: list[str] = SERVED, drop_rows: int = 0) -> None:
        self.features = features
        self.drop_rows = drop_rows
        self.calls: list[int] = []

    def get_feature_service(self, name: str) -> Any:
        if name != SERVICE:
            from feast.errors import FeatureServiceNotFoundException

            raise FeatureServiceNotFoundException(name, "test")
        view = SimpleNamespace(name="driver_stats", features=[SimpleNamespace(name=f) for f in self.features])
        return SimpleNamespace(name=name, feature_view_projections=[view])

    def list_feature_services(self) -> list[Any]:
        return [SimpleNamespace(name=SERVICE)]

    def get_feature_view(self, name: str) -> Any:
        # Not a parquet FileSource view: predict_batch joins through get_historical_features (its Feast
        # fallback); the as-of path is compared with Feast on a real repo in tests/integration/test_batch_asof_join.py.
        from feast.errors import FeatureViewNotFoundException

        raise FeatureViewNotFoundException(name, "test")

    def get_historical_features(self, entity_df: pd.DataFrame, features: Any) -> Any:
        self.calls.append(len(entity_df))
        joined = entity_df.assign(**feature_values(entity_df, self.features))
        joined = joined.sample(frac=1.0, random_state=len(self.calls)).iloc[self.drop_rows:]
        return SimpleNamespace(to_df=lambda: joined.reset_index(drop=True))


def feature_values(entity: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    hours = entity[TS].dt.hour.to_numpy()
    ids = entity["driver_id"].to_numpy()
    values = {"conv_rate": (ids % 7) / 7 + hours / 100, "rating": 3 + (ids % 5) / 2 - hours / 50}
    return {n: values[n] for n in names}


def entity_rows(n: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stamps = pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 86_400, n)), unit="s")
    return pd.DataFrame({"driver_id": rng.integers(1000, 1040, n), TS: stamps,
                         "trip_distance_km": rng.uniform(0.5, 30, n), "completed": rng.integers(0, 2, n)})


@pytest.fixture(scope="module")
def model() -> ScoringModel:
    from sklearn.ensemble import HistGradientBoostingClassifier  # here, not at the top: collection stays fast
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = entity_rows(600, seed=1)
    x = pd.DataFrame({**feature_values(frame, SERVED), "trip_distance_km": frame["trip_distance_km"]})
    y = (x["conv_rate"] + x["trip_distance_km"] / 30 > 0.9).astype(int)
    pipeline = make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=20, random_state=0))
    return ScoringModel.from_estimator(pipeline.fit(x, y), version="3", run_id="abc123", uri="models:/rides/3")


def one_shot(model: ScoringModel, entity: pd.DataFrame) -> np.ndarray:
    x = pd.DataFrame({**feature_values(entity, SERVED), "trip_distance_km": entity["trip_distance_km"]})
    return model.estimator.predict_proba(x[list(model.feature_columns)].astype("float64"))[:, 1]


def run(store: Any, model: ScoringModel, entity: pd.DataFrame, out: Path, chunk_rows: int,
        run_id: str = "manual__2026-10-02T00:00:00+00:00") -> dict[str, Any]:
    return predict_batch(store, model=model, model_name="rides", feature_service=SERVICE, entity_df=entity,
                         entity_keys=KEYS, timestamp_column=TS, request_features=REQUEST, out_dir=out,
                         run_id=run_id, chunk_rows=chunk_rows)


@pytest.mark.parametrize(("rows", "chunk_rows", "sizes"), [
    (2500, 1000, [1000, 1000, 500]),   # last chunk partial
    (2000, 1000, [1000, 1000]),        # boundary falls exactly on the end
    (2500, 2500, [2500]),              # one chunk
    (2500, 10_000, [2500]),            # chunk larger than the input
    (50, 7, [7] * 7 + [1]),
])
def test_chunked_predictions_equal_one_shot_predict(model: ScoringModel, tmp_path: Path, rows: int,
                                                    chunk_rows: int, sizes: list[int]) -> None:
    entity = entity_rows(rows)
    store = ShuffledFeatureStore()
    lineage = run(store, model, entity, tmp_path, chunk_rows)

    assert store.calls == sizes, "one point-in-time join per chunk, chunks cut at chunk_rows"
    folder = Path(lineage["path"])
    parts = sorted(folder.glob("part-*.parquet"))
    assert [len(pd.read_parquet(p)) for p in parts] == sizes
    out = pd.read_parquet(folder)
    assert list(out.columns) == [*KEYS, TS, *REQUEST, PREDICTION_COLUMN, VERSION_COLUMN]
    # rows in entity order, identity columns exactly as given, predictions bitwise equal to one predict call
    np.testing.assert_array_equal(out["driver_id"].to_numpy(), entity["driver_id"].to_numpy())
    assert (out[TS].to_numpy() == entity[TS].astype("datetime64[us, UTC]").to_numpy()).all()
    np.testing.assert_array_equal(out["trip_distance_km"].to_numpy(), entity["trip_distance_km"].to_numpy())
    np.testing.assert_array_equal(out[PREDICTION_COLUMN].to_numpy(), one_shot(model, entity))
    assert set(out[VERSION_COLUMN]) == {"3"}
    assert (lineage["rows"], lineage["parts"], lineage["model_version"], lineage["run_id"]) == (rows, len(sizes),
                                                                                                "3", "abc123")
    assert lineage["window"] == {"start": entity[TS].min().isoformat(), "end": entity[TS].max().isoformat()}


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_each_task_writes_its_own_output_columns_chunk_by_chunk(tmp_path: Path, task: str) -> None:
    """multiclass: the class and one probability column per class; regression: the value (core.predictions)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    frame = entity_rows(600, seed=1)
    x = pd.DataFrame({**feature_values(frame, SERVED), "trip_distance_km": frame["trip_distance_km"]})
    signal = x["conv_rate"] + x["trip_distance_km"] / 30
    if task == "multiclass":
        estimator, y = LogisticRegression(max_iter=500), pd.cut(signal, 3, labels=["lo", "mid", "hi"]).astype(str)
    else:
        estimator, y = Ridge(), 5.0 + 10.0 * signal
    model = ScoringModel.from_estimator(estimator.fit(x, y), version="4", tags={"airflow_mlops.task": task})
    assert model.output.task == task
    entity = entity_rows(250)
    lineage = run(ShuffledFeatureStore(), model, entity, tmp_path, 100)
    out = pd.read_parquet(lineage["path"])
    xs = pd.DataFrame({**feature_values(entity, SERVED), "trip_distance_km": entity["trip_distance_km"]})
    expected = model.estimator.predict(xs[list(model.feature_columns)])
    outputs = [PREDICTION_COLUMN, *(["proba_hi", "proba_lo", "proba_mid"] if task == "multiclass" else [])]
    assert list(out.columns) == [*KEYS, TS, *REQUEST, *outputs, VERSION_COLUMN] == lineage["columns"]
    assert (lineage["rows"], lineage["parts"], len(out)) == (250, 3, 250)
    np.testing.assert_array_equal(out["driver_id"].to_numpy(), entity["driver_id"].to_numpy())
    if task == "multiclass":
        assert out[PREDICTION_COLUMN].tolist() == list(expected)
        proba = model.estimator.predict_proba(xs[list(model.feature_columns)])
        np.testing.assert_allclose(out[["proba_hi", "proba_lo", "proba_mid"]].to_numpy(), proba)
    else:
        np.testing.assert_allclose(out[PREDICTION_COLUMN].to_numpy(), expected)


def test_a_model_whose_tags_name_another_task_is_refused_before_scoring() -> None:
    from sklearn.linear_model import Ridge

    x = pd.DataFrame({"a": [0.0, 1.0, 2.0]})
    with pytest.raises(BatchInferenceError, match="has no predict_proba; a binary model answers class probabilities"):
        ScoringModel.from_estimator(Ridge().fit(x, [1.0, 2.0, 3.0]), version="5", uri="models:/m/5",
                                    tags={"airflow_mlops.task": "binary"})


def test_manifest_lists_every_part_and_its_hash_is_the_lineage_sha(model: ScoringModel, tmp_path: Path) -> None:
    lineage = run(ShuffledFeatureStore(), model, entity_rows(2500), tmp_path, 1000)
    manifest_file = Path(lineage["manifest"])
    assert manifest_file == Path(lineage["path"]) / MANIFEST_FILE
    assert hashlib.sha256(manifest_file.read_bytes()).hexdigest() == lineage["sha256"]
    manifest = json.loads(manifest_file.read_text())
    for part in manifest["parts"]:
        data = (manifest_file.parent / part["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == part["sha256"]
    assert sum(p["rows"] for p in manifest["parts"]) == manifest["rows"] == 2500
    assert manifest["feature_columns"] == list(model.feature_columns)


def test_same_run_twice_overwrites_its_folder_and_never_duplicates_rows(model: ScoringModel, tmp_path: Path) -> None:
    entity = entity_rows(1500)
    first = run(ShuffledFeatureStore(), model, entity, tmp_path, 1000, run_id="scheduled__2026-10-02")
    second = run(ShuffledFeatureStore(), model, entity.head(1200), tmp_path, 1000, run_id="scheduled__2026-10-02")
    assert first["path"] == second["path"]
    assert len(pd.read_parquet(second["path"])) == 1200, "the retry's output replaced the first attempt's"
    assert [p.name for p in tmp_path.iterdir()] == [run_folder_name("scheduled__2026-10-02")], "no temp leftovers"
    third = run(ShuffledFeatureStore(), model, entity, tmp_path, 1000, run_id="scheduled__2026-10-03")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run=scheduled__2026-10-02", "run=scheduled__2026-10-03"]
    again = run(ShuffledFeatureStore(), model, entity, tmp_path, 1000, run_id="scheduled__2026-10-03")
    assert again["sha256"] == third["sha256"], "same inputs give a byte-equal manifest"


def test_stale_temp_folder_of_a_crashed_attempt_is_removed(model: ScoringModel, tmp_path: Path) -> None:
    stale = tmp_path / f".{run_folder_name('r1')}.dead.tmp"
    stale.mkdir()
    (stale / "part-00000.parquet").write_bytes(b"half")
    run(ShuffledFeatureStore(), model, entity_rows(10), tmp_path, 1000, run_id="r1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run=r1"]


def test_empty_entity_set_logs_and_writes_zero_rows(model: ScoringModel, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    store = ShuffledFeatureStore()
    with caplog.at_level(logging.INFO, logger="airflow_mlops.core.batch_inference"):
        lineage = run(store, model, entity_rows(0), tmp_path, 1000)
    assert store.calls == [], "no join for no rows"
    assert (lineage["rows"], lineage["parts"], lineage["window"]) == (0, 0, {"start": "", "end": ""})
    assert not list(Path(lineage["path"]).glob("*.parquet")) and Path(lineage["manifest"]).is_file()
    assert any("no entity rows to score for rides: wrote 0 predictions" in r.getMessage() for r in caplog.records)


def test_model_columns_missing_from_service_and_request_are_named(model: ScoringModel, tmp_path: Path) -> None:
    store = ShuffledFeatureStore(features=["conv_rate"])  # the service lost `rating`
    with pytest.raises(BatchInferenceError) as err:
        run(store, model, entity_rows(100), tmp_path, 1000)
    message = str(err.value)
    assert "needs feature column(s) ['rating']" in message and f"feature service '{SERVICE}'" in message
    assert "v3" in message and "retrain" in message
    assert store.calls == [] and not list(tmp_path.iterdir()), "refused before any join or write"


def test_entity_columns_missing_are_named(model: ScoringModel, tmp_path: Path) -> None:
    with pytest.raises(BatchInferenceError, match=r"lacks column\(s\) \['trip_distance_km'\]"):
        run(ShuffledFeatureStore(), model, entity_rows(10).drop(columns="trip_distance_km"), tmp_path, 1000)


def test_rows_lost_by_the_join_fail_and_publish_nothing(model: ScoringModel, tmp_path: Path) -> None:
    with pytest.raises(BatchInferenceError, match="returned 999 rows for 1000 entity rows"):
        run(ShuffledFeatureStore(drop_rows=1), model, entity_rows(1500), tmp_path, 1000)
    assert not list(tmp_path.iterdir()), "no run folder, no temp folder after a failure"


def test_unknown_feature_service_names_the_registered_ones(model: ScoringModel, tmp_path: Path) -> None:
    with pytest.raises(Exception, match=rf"'nope' is not registered \(registered: \['{SERVICE}'\]\)"):
        predict_batch(ShuffledFeatureStore(), model=model, model_name="rides", feature_service="nope",
                      entity_df=entity_rows(5), entity_keys=KEYS, timestamp_column=TS, request_features=REQUEST,
                      out_dir=tmp_path, run_id="r")


def test_a_model_without_feature_names_is_refused() -> None:
    from sklearn.linear_model import LogisticRegression

    bare = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    with pytest.raises(BatchInferenceError, match="feature_names_in_"):
        ScoringModel.from_estimator(bare, version="1")


def test_run_folder_name_is_one_path_component() -> None:
    assert run_folder_name("manual__2026-10-02T00:00:00.123+00:00") == "run=manual__2026-10-02T00:00:00.123+00:00"
    assert run_folder_name("a/b c") == "run=a_b_c"


# -- the DAG --------------------------------------------------------------------------------------
