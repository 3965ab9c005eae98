"""Training-serving skew core: per-feature mismatch shares, one-sided columns, sampling (real pandas)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.prediction_window import read_prediction_window
from airflow_mlops.core.skew import compare, sample_rows
from airflow_mlops.exceptions import MonitoringInputError
from airflow_mlops.serving.prediction_log import PredictionLog

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def _frames(n: int = 400) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(2)
    offline = pd.DataFrame({"conv_rate": rng.uniform(0, 1, n).round(4), "acc_rate": rng.uniform(0, 1, n).round(4),
                            "avg_daily_trips": rng.integers(0, 30, n)})
    logged = offline.astype("float64").copy()
    return logged, offline


def test_identical_values_are_no_skew_and_nan_on_both_sides_matches() -> None:
    logged, offline = _frames()
    logged.loc[:9, "conv_rate"] = np.nan
    offline.loc[:9, "conv_rate"] = np.nan  # outside the TTL on both paths: the same answer
    logged["acc_rate"] *= 1 + 1e-9  # float noise within the relative tolerance
    result = compare(logged, offline, logged_features=list(logged.columns), offline_features=list(offline.columns),
                     tolerance=1e-6, max_mismatch_share=0.01)
    assert result.status == "ok" and result.value == 0.0 and result.skewed == []
    assert {name: info["mismatches"] for name, info in result.features.items()} == dict.fromkeys(logged.columns, 0)


def test_a_feature_differing_on_more_rows_than_allowed_is_named() -> None:
    logged, offline = _frames()
    logged.loc[:39, "acc_rate"] = logged.loc[:39, "acc_rate"] + 0.1  # 10 % of rows served a stale value
    logged.loc[40:41, "conv_rate"] = np.nan  # 0.5 %: the online store had nothing (one side only)
    result = compare(logged, offline, logged_features=list(logged.columns), offline_features=list(offline.columns),
                     tolerance=1e-6, max_mismatch_share=0.01)
    assert result.status == "detected" and result.skewed == ["acc_rate"]
    assert result.features["acc_rate"]["share"] == pytest.approx(0.1) and result.value == pytest.approx(0.1)
    assert result.features["conv_rate"]["mismatches"] == 2 and result.features["conv_rate"]["examples"][0][
        "logged"] is None
    assert "acc_rate" in result.reason and "0.01" in result.reason
    loose = compare(logged, offline, logged_features=list(logged.columns), offline_features=list(offline.columns),
                    tolerance=0.5, max_mismatch_share=0.01)
    assert loose.features["acc_rate"]["mismatches"] < 40, "a relative tolerance forgives small differences"


def test_a_column_on_one_side_only_is_skew_named_by_column_not_a_crash() -> None:
    logged, offline = _frames()
    logged = logged.drop(columns="avg_daily_trips").assign(driver_tenure=1.0)
    result = compare(logged, offline, logged_features=["conv_rate", "acc_rate", "driver_tenure"],
                     offline_features=["conv_rate", "acc_rate", "avg_daily_trips"], tolerance=1e-6,
                     max_mismatch_share=0.01)
    assert result.status == "detected"
    assert result.missing_offline == ("driver_tenure",) and result.missing_in_log == ("avg_daily_trips",)
    assert result.features["avg_daily_trips"]["problem"] == "column 'avg_daily_trips' is missing in the prediction log"
    assert "offline store" in result.features["driver_tenure"]["problem"]
    assert sorted(result.skewed) == ["avg_daily_trips", "driver_tenure"]
    assert result.to_dict()["missing_in_log"] == ["avg_daily_trips"]


def test_sampling_from_the_real_log_keeps_rows_with_keys_and_time(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_rows=500) as log:
        for i in range(300):
            log.append({"request_id": f"r{i}", "time": T0 + timedelta(minutes=i), "model": "m", "model_version": "1",
                        "route": "champion", "entity_key": {"driver_id": 1001 + i % 5} if i % 10 else {},
                        "features": {"conv_rate": 0.5}, "prediction": 0.5, "protocol": "predict"})
    frame = read_prediction_window("m", T0, T0 + timedelta(days=1), directory=tmp_path).frame
    rows = sample_rows(frame, ["driver_id"], 1000)
    assert len(rows) == 270 and rows["driver_id"].notna().all(), "rows without the entity key cannot be looked up"
    assert len(sample_rows(frame, ["driver_id"], 50, seed=1)) == 50
    with pytest.raises(MonitoringInputError, match=r"no entity column\(s\) \['rider_id'\].*entity_keys"):
        sample_rows(frame, ["rider_id"], 50)
