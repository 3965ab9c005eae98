"""core.training and core.lineage with real pandas/sklearn objects; no MLflow, no Airflow runtime."""

from __future__ import annotations

import math
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core import lineage, training
from airflow_mlops.exceptions import TrainingFailed, TrainingSetError
from support.training_sets import demo_as_of_join

pytestmark = pytest.mark.unit

HGB = "sklearn.ensemble.HistGradientBoostingClassifier"
LOGREG = "sklearn.linear_model.LogisticRegression"
KEYS = ["driver_id"]


@pytest.fixture(scope="module")
def frame(small_demo) -> pd.DataFrame:
    """Rides joined as-of with driver stats, Feast-style: one view prefixed, one not; a few gaps."""
    joined = demo_as_of_join(small_demo)
    joined = joined.rename(columns={"conv_rate": "driver_hourly_stats__conv_rate"})
    joined.loc[joined.index[::17], "acc_rate"] = np.nan  # features missing out of TTL
    return joined.reset_index(drop=True)


def fit(frame: pd.DataFrame, **overrides):
    kwargs = {"label": "completed", "estimator": LOGREG, "params": {"max_iter": 200}, "seed": 7, "exclude": KEYS}
    return training.train(frame, **{**kwargs, **overrides})


# ----------------------------------------------------------------------------- build_pipeline
def test_pipeline_steps_follow_preprocessing() -> None:
    default = training.build_pipeline(LOGREG, {"C": 0.5}, None, seed=3)
    assert [name for name, _ in default.steps] == ["impute", "estimator"]
    assert default.named_steps["impute"].strategy == "median"
    assert default.named_steps["estimator"].C == 0.5
    scaled = training.build_pipeline(LOGREG, {}, {"impute": "none", "scale": True}, seed=3)
    assert [name for name, _ in scaled.steps] == ["scale", "estimator"]


def test_seed_becomes_random_state_unless_given() -> None:
    assert training.build_pipeline(HGB, {}, None, seed=11).named_steps["estimator"].random_state == 11
    explicit = training.build_pipeline(HGB, {"random_state": 1}, None, seed=11)
    assert explicit.named_steps["estimator"].random_state == 1
    # GaussianNB has no random_state: nothing to set, no error.
    training.build_pipeline("sklearn.naive_bayes.GaussianNB", {}, None, seed=11)


@pytest.mark.parametrize(
    ("estimator", "params", "field", "hint"),
    [
        ("sklearn.nope.Forest", {}, "training.estimator", "cannot import module"),
        ("sklearn.ensemble.NoSuchForest", {}, "training.estimator", "has no class"),
        ("sklearn.linear_model.LinearRegression", {}, "training.estimator", "is a regressor, but the spec's task"),
        ("sklearn.svm.SVC", {}, "training.estimator", "probability: true"),
        ("Forest", {}, "training.estimator", "dotted import path"),
        (HGB, {"max_itr": 5}, "training.params", "max_itr"),
    ],
)
def test_bad_estimator_or_params_name_the_field(estimator: str, params: dict, field: str, hint: str) -> None:
    with pytest.raises(TrainingFailed) as caught:
        training.build_pipeline(estimator, params, None, seed=1)
    assert str(caught.value).startswith(field) and hint in str(caught.value)


def test_bad_preprocessing_names_the_field() -> None:
    with pytest.raises(TrainingFailed, match=r"^training\.preprocessing\.impute: got 'zero'"):
        training.build_pipeline(LOGREG, {}, {"impute": "zero"}, seed=1)
    with pytest.raises(TrainingFailed, match=r"^training\.preprocessing: unknown keys \['encode'\]"):
        training.build_pipeline(LOGREG, {}, {"encode": True}, seed=1)


def test_invalid_param_value_fails_at_fit_naming_params(frame: pd.DataFrame) -> None:
    with pytest.raises(TrainingFailed, match=r"^training\.params: .*max_iter"):
        fit(frame, estimator=HGB, params={"max_iter": -3})


# ----------------------------------------------------------------------------- columns, split, metrics
def test_feature_columns_use_numeric_columns_only(frame: pd.DataFrame) -> None:
    extra = frame.assign(city="x", is_airport=False)
    columns = training.feature_columns(extra, ["driver_id", "event_timestamp", "completed"])
    assert columns == [
        "trip_distance_km",
        "surge_multiplier",
        "pickup_hour",
        "driver_hourly_stats__conv_rate",
        "acc_rate",
        "avg_daily_trips",
        "rating",
        "is_airport",
    ]
    with pytest.raises(TrainingFailed, match="no numeric feature columns"):
        training.feature_columns(frame[["driver_id", "event_timestamp"]], ["driver_id"])


def test_time_split_puts_the_newest_rows_in_validation(frame: pd.DataFrame) -> None:
    train_part, valid_part = training.split(frame.sample(frac=1, random_state=0), "time", 0.25, "event_timestamp")
    assert len(train_part) + len(valid_part) == len(frame)
    assert train_part["event_timestamp"].max() < valid_part["event_timestamp"].min()
    assert abs(len(valid_part) / len(frame) - 0.25) < 0.01


def test_time_split_keeps_equal_timestamps_together() -> None:
    ts = pd.to_datetime(["2026-10-01"] * 3 + ["2026-10-02"] * 3, utc=True)
    tied = pd.DataFrame({"event_timestamp": ts, "x": range(6)})
    train_part, valid_part = training.split(tied, "time", 0.4, "event_timestamp")
    assert list(train_part["x"]) == [0, 1, 2] and list(valid_part["x"]) == [3, 4, 5]


def test_random_split_is_seeded(frame: pd.DataFrame) -> None:
    first = training.split(frame, "random", 0.2, seed=5)[1].index
    again = training.split(frame, "random", 0.2, seed=5)[1].index
    other = training.split(frame, "random", 0.2, seed=6)[1].index
    assert list(first) == list(again) and list(first) != list(other)


@pytest.mark.parametrize(
    ("method", "test_size", "field"),
    [("kfold", 0.2, "training.split.method"), ("time", 1.5, "training.split.test_size")],
)
def test_bad_split_names_the_field(frame: pd.DataFrame, method: str, test_size: float, field: str) -> None:
    with pytest.raises(TrainingFailed, match=rf"^{field}"):
        training.split(frame, method, test_size)


def test_time_split_needs_the_timestamp_column(frame: pd.DataFrame) -> None:
    with pytest.raises(TrainingFailed, match="timestamp_column: 'ts' is not a column"):
        training.split(frame, "time", 0.2, "ts")


def test_compute_metrics() -> None:
    y = np.array([0, 0, 1, 1])
    perfect = training.compute_metrics(y, [0.1, 0.2, 0.8, 0.9])
    assert set(perfect) == {
        "roc_auc",
        "accuracy",
        "f1",
        "precision",
        "recall",
        "log_loss",
        "average_precision",
        "brier",
    }
    assert perfect["roc_auc"] == perfect["accuracy"] == perfect["f1"] == perfect["average_precision"] == 1.0
    assert perfect["brier"] == pytest.approx(np.mean([0.01, 0.04, 0.04, 0.01]))
    wrong = training.compute_metrics(y, [0.9, 0.8, 0.2, 0.1], ["accuracy", "roc_auc"])
    assert wrong == {"accuracy": 0.0, "roc_auc": 0.0}
    single = training.compute_metrics([1, 1], [0.7, 0.9], ["roc_auc", "accuracy"])
    assert math.isnan(single["roc_auc"]) and single["accuracy"] == 1.0
    with pytest.raises(ValueError, match="unknown metrics"):
        training.compute_metrics(y, y, ["auc"])


# ----------------------------------------------------------------------------- train
def test_train_is_deterministic_and_complete(frame: pd.DataFrame) -> None:
    params = {"max_iter": 20, "max_leaf_nodes": 8}
    first = fit(frame, estimator=HGB, params=params)
    second = fit(frame, estimator=HGB, params=params)
    assert first.metrics == second.metrics
    assert first.metrics["roc_auc"] > 0.6
    assert first.train_rows + first.validation_rows == len(frame)
    assert "driver_id" not in first.feature_columns and "completed" not in first.feature_columns
    assert first.sample is not None and list(first.sample.columns) == first.feature_columns
    # the training set's own types (the MLflow signature follows them), not the float64 the model is fitted on
    assert first.sample.dtypes.to_dict() == frame[first.feature_columns].dtypes.to_dict()
    summary = first.summary()
    assert summary["split"]["method"] == "time" and "validation_from" in summary["split"]
    assert first.fit_seconds > 0 and first.total_seconds >= first.fit_seconds


def test_train_drops_unlabelled_rows_and_rejects_non_binary(frame: pd.DataFrame) -> None:
    gaps = frame.astype({"completed": "float64"})
    gaps.loc[gaps.index[:10], "completed"] = np.nan
    result = fit(gaps)
    assert result.train_rows + result.validation_rows == len(frame) - 10
    with pytest.raises(TrainingFailed, match="must be binary 0/1"):
        fit(frame.assign(completed=frame["completed"] * 2))
    with pytest.raises(TrainingFailed, match="features.label: 'done' is not a column"):
        fit(frame, label="done")


def test_train_needs_both_classes(frame: pd.DataFrame) -> None:
    with pytest.raises(TrainingFailed, match="only label value"):
        fit(frame.assign(completed=1))


def test_an_all_nan_feature_is_refused_naming_the_column(frame: pd.DataFrame) -> None:
    column = next(c for c in frame.columns if c.endswith("conv_rate"))
    with pytest.raises(TrainingFailed, match=rf"\['{column}'\] are missing \(NaN\) in all"):
        fit(frame.assign(**{column: float("nan")}))


def test_impute_none_with_missing_values_explains_the_fix(frame: pd.DataFrame) -> None:
    with pytest.raises(TrainingFailed, match="impute: none cannot handle missing values"):
        fit(frame, preprocessing={"impute": "none"})


def test_model_requirements_are_pinned() -> None:
    import cloudpickle
    import sklearn

    assert training.model_requirements(HGB) == [
        f"cloudpickle=={cloudpickle.__version__}",
        f"scikit-learn=={sklearn.__version__}",
    ]


# ----------------------------------------------------------------------------- lineage
def _git(tmp: Path, head: str) -> Path:
    (tmp / ".git" / "refs" / "heads").mkdir(parents=True)
    (tmp / ".git" / "HEAD").write_text(head)
    return tmp


def test_git_commit_reads_branch_packed_and_detached_heads(tmp_path: Path) -> None:
    sha = "a" * 40
    loose = _git(tmp_path / "loose", "ref: refs/heads/main\n")
    (loose / ".git" / "refs" / "heads" / "main").write_text(sha + "\n")
    assert lineage.git_commit(loose) == sha
    packed = _git(tmp_path / "packed", "ref: refs/heads/main\n")
    (packed / ".git" / "packed-refs").write_text(f"# pack-refs\n{'b' * 40} refs/heads/main\n")
    assert lineage.git_commit(packed) == "b" * 40
    detached = _git(tmp_path / "detached", "c" * 40)
    assert lineage.git_commit(detached) == "c" * 40
    unborn = _git(tmp_path / "unborn", "ref: refs/heads/main\n")
    assert lineage.git_commit(unborn) is None
    assert lineage.git_commit(tmp_path / "nothing") is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git binary to compare against")
def test_git_commit_matches_git_for_this_project() -> None:
    project = Path(__file__).resolve().parents[2]
    if not (project / ".git").exists():
        pytest.skip("project is not a git checkout")
    expected = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True)
    assert lineage.git_commit(project) == expected.stdout.strip()


def test_airflow_context_tags() -> None:
    ti = SimpleNamespace(task_id="train", try_number=2, dag_id="ride_completion__train")
    context = {
        "ti": ti,
        "run_id": "manual__1",
        "dag": SimpleNamespace(dag_id="ride_completion__train"),
        "logical_date": datetime(2026, 10, 1, tzinfo=UTC),
    }
    assert lineage.airflow_context_tags(context) == {
        "airflow_mlops.airflow.dag_id": "ride_completion__train",
        "airflow_mlops.airflow.run_id": "manual__1",
        "airflow_mlops.airflow.task_id": "train",
        "airflow_mlops.airflow.try_number": "2",
        "airflow_mlops.airflow.logical_date": "2026-10-01T00:00:00+00:00",
    }
    assert lineage.airflow_context_tags({"logical_date": None}) == {}
    assert all(key.startswith(lineage.TAG_PREFIX) for key in lineage.TRAINING_TAGS)


def test_snapshot_verification(tmp_path: Path) -> None:
    path = tmp_path / "set.parquet"
    path.write_bytes(b"rows")
    record = lineage.normalize_lineage(
        {
            "path": str(path),
            "sha256": lineage.file_sha256(path),
            "rows": 1,
            "feature_views": {"driver_hourly_stats": ["conv_rate"]},
        }
    )
    assert lineage.verify_snapshot(record) == path
    tags = lineage.training_set_tags(record)
    assert tags[lineage.TAG_TRAINING_SET_ROWS] == "1"
    assert tags[lineage.TAG_FEATURE_VIEWS] == '{"driver_hourly_stats": ["conv_rate"]}'
    path.write_bytes(b"other rows")
    with pytest.raises(TrainingSetError, match="changed after it was recorded"):
        lineage.verify_snapshot(record)
    path.unlink()
    with pytest.raises(TrainingSetError, match="does not exist"):
        lineage.verify_snapshot(record)


def test_normalize_lineage_accepts_json_and_rejects_junk() -> None:
    assert lineage.normalize_lineage('{"path": "p", "sha256": "s"}') == {"path": "p", "sha256": "s"}
    with pytest.raises(TrainingSetError, match="not JSON"):
        lineage.normalize_lineage("{'path': 'p'}")
    with pytest.raises(TrainingSetError, match=r"lacks \['sha256'\]"):
        lineage.normalize_lineage({"path": "p"})
    with pytest.raises(TrainingSetError, match="got list"):
        lineage.normalize_lineage([1])


def test_long_tag_values_are_clipped() -> None:
    clipped = lineage.clip_tag("x" * 9000)
    assert len(clipped) <= lineage.MAX_TAG_VALUE and clipped.endswith("training_set/lineage.json)")
