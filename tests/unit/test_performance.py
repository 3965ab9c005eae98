"""Delayed-label performance core: label files, both joins, the verdict (real pandas/sklearn, real log writer)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.demo_labels import demo_outcomes, write_demo_labels
from airflow_mlops.core.performance import LABEL, join_labels, judge, load_labels, threshold_for
from airflow_mlops.core.prediction_window import read_prediction_window
from airflow_mlops.exceptions import MonitoringInputError
from airflow_mlops.serving.prediction_log import PredictionLog
from support.performance_data import END, T0
from support.performance_data import labels as _labels
from support.performance_data import log as _log
from support.performance_data import truth as _truth

pytestmark = pytest.mark.unit

HOUR = timedelta(hours=1)


def _window(root: Path) -> pd.DataFrame:
    return read_prediction_window("m", T0, END, directory=root / "log").frame


def _load(root: Path, join: str = "request_id") -> object:
    return load_labels(root / "labels", label_column="completed", join=join, entity_keys=["driver_id"],
                       timestamp_column="event_timestamp")


def _join(root: Path, join: str = "request_id", tolerance: timedelta = HOUR) -> object:
    return join_labels(_window(root), _load(root, join), join=join, entity_keys=["driver_id"],
                       timestamp_column="event_timestamp", tolerance=tolerance, start=T0, end=END)


def test_request_id_join_counts_unknown_ids_and_scores_like_sklearn(tmp_path: Path) -> None:
    y, p = _truth(300)
    _log(tmp_path / "log", p)
    known = pd.DataFrame({"request_id": [f"r{i}" for i in range(250)], "completed": y[:250]})
    strangers = pd.DataFrame({"request_id": ["ghost-1", "ghost-2", "ghost-3"], "completed": [1, 0, 1]})
    _labels(tmp_path, "a.parquet", known)
    _labels(tmp_path, "b.csv", strangers)

    joined = _join(tmp_path)
    assert joined.counts["matched"] == 250 and joined.counts["unknown_request_ids"] == 3
    assert joined.counts["predictions_unlabelled"] == 50 and joined.counts["label_rows"] == 253
    assert set(joined.unknown_sample) == {"ghost-1", "ghost-2", "ghost-3"}

    result = judge(joined, metric="roc_auc", champion_version="3", champion_value=0.80, tolerance=0.05, min_labels=100)
    from sklearn.metrics import roc_auc_score  # here, not at the top: collection stays fast

    assert result.value == pytest.approx(roc_auc_score(y[:250], p[:250])) and result.value > 0.8
    assert result.status == "ok" and "not below 0.7500" in result.reason
    assert result.threshold == pytest.approx(0.75) and result.rows == 250


def test_degraded_when_below_champion_minus_tolerance_and_ok_within_it(tmp_path: Path) -> None:
    y, p = _truth(300)
    _log(tmp_path / "log", p)
    _labels(tmp_path, "flipped.parquet", pd.DataFrame({"request_id": [f"r{i}" for i in range(300)],
                                                       "completed": 1 - y}))
    joined = _join(tmp_path)
    bad = judge(joined, metric="roc_auc", champion_version="3", champion_value=0.85, tolerance=0.05, min_labels=100)
    assert bad.status == "detected" and bad.degraded and bad.value < 0.5
    assert "below 0.8000" in bad.reason and "tolerance 0.05" in bad.reason
    # same rows against a champion that was just as bad: within tolerance, no verdict of degradation
    same = judge(joined, metric="roc_auc", champion_version="3", champion_value=bad.value + 0.04, tolerance=0.05,
                 min_labels=100)
    assert same.status == "ok" and not same.degraded


def test_loss_metrics_flip_the_direction(tmp_path: Path) -> None:
    y, p = _truth(300)
    _log(tmp_path / "log", p)
    _labels(tmp_path, "l.parquet", pd.DataFrame({"request_id": [f"r{i}" for i in range(300)], "completed": y}))
    joined = _join(tmp_path)
    from sklearn.metrics import log_loss  # here, not at the top: collection stays fast

    value = log_loss(y, p)
    assert threshold_for("log_loss", 0.4, 0.05) == pytest.approx(0.45)
    assert threshold_for("roc_auc", 0.8, 0.05) == pytest.approx(0.75)
    better = judge(joined, metric="log_loss", champion_version="3", champion_value=value + 0.2, tolerance=0.05,
                   min_labels=10)
    worse = judge(joined, metric="log_loss", champion_version="3", champion_value=value - 0.2, tolerance=0.05,
                  min_labels=10)
    assert better.value == pytest.approx(value) and better.status == "ok", "a LOWER loss than the champion is fine"
    assert worse.status == "detected" and "above" in worse.reason
    assert worse.threshold == pytest.approx(value - 0.15)


def test_too_few_labels_no_champion_or_other_versions_give_no_verdict(tmp_path: Path) -> None:
    y, p = _truth(120)
    _log(tmp_path / "log", p, version="2")
    _labels(tmp_path, "l.parquet", pd.DataFrame({"request_id": [f"r{i}" for i in range(40)], "completed": y[:40]}))
    joined = _join(tmp_path)
    few = judge(joined, metric="roc_auc", champion_version="2", champion_value=0.8, tolerance=0.05, min_labels=100)
    assert few.status == "skipped" and few.value is None
    assert "only 40 labelled prediction(s)" in few.reason and "monitoring.performance.min_labels" in few.reason
    other = judge(joined, metric="roc_auc", champion_version="5", champion_value=0.8, tolerance=0.05, min_labels=10)
    assert other.status == "skipped" and other.counts["other_version_rows"] == 40 and other.rows == 0
    assert judge(joined, metric="roc_auc", champion_version=None, champion_value=None, tolerance=0.05,
                 min_labels=1).reason.startswith("no champion")
    one_class = _labels(tmp_path, "z.parquet", pd.DataFrame({"request_id": [f"r{i}" for i in range(40)],
                                                             "completed": [1] * 40}))
    assert one_class.exists()
    undefined = judge(_join(tmp_path), metric="roc_auc", champion_version="2", champion_value=0.8, tolerance=0.05,
                      min_labels=10)
    assert undefined.status == "skipped" and "one class only" in undefined.reason


def test_entity_time_join_takes_the_nearest_prediction_within_tolerance(tmp_path: Path) -> None:
    y, p = _truth(200)
    _log(tmp_path / "log", p)
    rows = pd.DataFrame({"driver_id": [1000 + i % 9 for i in range(200)],
                         "event_timestamp": [T0 + timedelta(minutes=i, seconds=20) for i in range(200)],
                         "completed": y})
    far = rows.head(3).assign(driver_id=5555)  # an entity that was never served
    _labels(tmp_path, "e.parquet", pd.concat([rows, far], ignore_index=True))
    joined = _join(tmp_path, join="entity_time", tolerance=timedelta(minutes=5))
    assert joined.counts["matched"] == 200 and joined.counts["labels_without_prediction"] == 3
    merged = joined.frame.assign(i=joined.frame["request_id"].str[1:].astype(int)).sort_values("i")
    np.testing.assert_array_equal(merged[LABEL].to_numpy(), y)
    tight = _join(tmp_path, join="entity_time", tolerance=timedelta(seconds=10))
    assert tight.counts["matched"] == 0 and tight.counts["labels_without_prediction"] == 203


def test_labels_of_other_windows_are_not_counted_unknown(tmp_path: Path) -> None:
    y, p = _truth(100)
    _log(tmp_path / "log", p)
    stamps = [T0 + timedelta(minutes=i) for i in range(100)] + [T0 - timedelta(days=3)] * 4
    ids = [f"r{i}" for i in range(100)] + ["old-1", "old-2", "old-3", "old-4"]
    _labels(tmp_path, "t.parquet", pd.DataFrame({"request_id": ids, "event_timestamp": stamps,
                                                 "completed": [*y, 0, 1, 0, 1]}))
    joined = _join(tmp_path)
    assert joined.counts["outside_window"] == 4 and joined.counts["unknown_request_ids"] == 0
    assert joined.counts["matched"] == 100


def test_bad_label_files_name_the_file_and_column(tmp_path: Path) -> None:
    _labels(tmp_path, "nolabel.parquet", pd.DataFrame({"request_id": ["r1"], "outcome": [1]}))
    with pytest.raises(MonitoringInputError, match=r"nolabel\.parquet: no column\(s\) \['completed'\].*label_column"):
        _load(tmp_path)
    (tmp_path / "labels" / "nolabel.parquet").unlink()
    _labels(tmp_path, "weird.csv", pd.DataFrame({"request_id": ["r1", "r2", "r3"], "completed": ["yes", "1", ""]}))
    with pytest.raises(MonitoringInputError, match=r"weird\.csv: column 'completed' must hold 0/1.*'yes'"):
        _load(tmp_path)


def test_only_complete_files_count_and_duplicates_resolve_to_the_newest(tmp_path: Path) -> None:
    _labels(tmp_path, "1.parquet", pd.DataFrame({"request_id": ["r1", "r2", "r3"], "completed": [1, 0, None]}))
    _labels(tmp_path, "2.parquet", pd.DataFrame({"request_id": ["r2"], "completed": [1]}))
    whole = (tmp_path / "labels" / "2.parquet").read_bytes()
    (tmp_path / "labels" / "3.parquet").write_bytes(whole[: len(whole) // 2])  # a writer still at work
    (tmp_path / "labels" / ".4.parquet.tmp").write_bytes(whole)
    labels = _load(tmp_path)
    assert labels.files == ("1.parquet", "2.parquet")
    assert [u["file"] for u in labels.unreadable] == ["3.parquet"]
    assert labels.missing_label == 1 and labels.duplicates == 1
    assert dict(zip(labels.frame["request_id"], labels.frame[LABEL], strict=True)) == {"r1": 1, "r2": 1}


def test_demo_labels_follow_the_generator_rule_and_degrade_on_request(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"acc_rate": rng.uniform(0, 1, 4000), "conv_rate": rng.uniform(0, 1, 4000),
                          "rating": rng.uniform(3.5, 5, 4000), "trip_distance_km": rng.uniform(1, 20, 4000),
                          "surge_multiplier": rng.uniform(1, 2, 4000), "pickup_hour": rng.integers(0, 24, 4000)})
    first = demo_outcomes(frame, seed=5)
    assert first.equals(demo_outcomes(frame, seed=5)), "same rows + seed -> same labels"
    assert set(first.unique()) <= {0, 1}
    assert np.corrcoef(frame["acc_rate"], first)[0, 1] > 0.3, "acceptance drives completion, as in the generator"
    flipped = demo_outcomes(frame, seed=5, flip_share=1.0)
    assert (flipped == 1 - first).all()
    with pytest.raises(ValueError, match="lack the demo feature"):
        demo_outcomes(frame.drop(columns="rating"))

    with PredictionLog(tmp_path / "log") as log:
        for i, row in frame.head(50).iterrows():
            log.append({"request_id": f"q{i}", "time": T0 + timedelta(minutes=int(i)), "model": "m",
                        "model_version": "1", "route": "champion", "entity_key": {"driver_id": 1001},
                        "features": row.to_dict(), "prediction": 0.5, "protocol": "predict"})
    out = write_demo_labels("m", T0, END, directory=tmp_path / "labels", predictions_dir=tmp_path / "log")
    written = pd.read_parquet(out["path"])
    assert out["rows"] == 50 and list(written.columns) == ["request_id", "event_timestamp", "driver_id", "completed"]
    assert _load(tmp_path).frame["request_id"].tolist() == [f"q{i}" for i in range(50)]


def test_a_request_id_logged_twice_is_counted_and_joined_once(tmp_path: Path) -> None:
    y, p = _truth(50)
    _log(tmp_path / "log", p)
    with PredictionLog(tmp_path / "log") as log:  # a client reused its X-Request-ID an hour later
        log.append({"request_id": "r7", "time": T0 + timedelta(hours=2), "model": "m", "model_version": "3",
                    "route": "champion", "entity_key": {"driver_id": 1}, "features": {}, "prediction": 0.9,
                    "protocol": "predict"})
    _labels(tmp_path, "l.parquet", pd.DataFrame({"request_id": [f"r{i}" for i in range(50)], "completed": y}))
    joined = _join(tmp_path)
    assert joined.counts["repeated_request_ids"] == 1 and joined.counts["matched"] == 50
    assert joined.frame.loc[joined.frame["request_id"] == "r7", "prediction"].item() == 0.9


@pytest.mark.parametrize("join", ["request_id", "entity_time"])
def test_no_label_files_yet_is_no_verdict_not_a_crash(tmp_path: Path, join: str) -> None:
    _, p = _truth(30)
    _log(tmp_path / "log", p)
    joined = _join(tmp_path, join=join)
    assert joined.counts["matched"] == 0 and joined.counts["predictions_unlabelled"] == 30
    result = judge(joined, metric="roc_auc", champion_version="3", champion_value=0.8, tolerance=0.05, min_labels=5)
    assert result.status == "skipped" and "only 0 labelled prediction(s)" in result.reason
