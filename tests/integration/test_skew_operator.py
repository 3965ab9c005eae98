"""FeastSkewCheckOperator against the real Feast repo (duckdb offline store) and the real prediction log.

The demo data is landed and applied as in test_training_set.py. "Served" rows carry what a correct
online store returns at request time: the driver's newest stats snapshot at or before the request
(pandas merge_asof on the generator's own table, independent of Feast). The check must find no skew
there, name the feature when serving used stale values, and name a feature the log lacks.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops import config
from airflow_mlops.core import monitoring_history
from airflow_mlops.core.offline import land_landing_dir
from airflow_mlops.hooks.feast import FeastHook
from airflow_mlops.operators.monitoring import FeastSkewCheckOperator
from airflow_mlops.serving.prediction_log import PredictionLog

pytestmark = pytest.mark.integration

FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "rating"]
REQUEST = ["trip_distance_km", "surge_multiplier", "pickup_hour"]
MONITORING = {"window": "7d", "skew": {"tolerance": 1e-6, "max_mismatch_share": 0.01, "sample_rows": 300}}


@pytest.fixture
def served(mlops_home: Path, small_demo: tuple) -> tuple[Any, pd.DataFrame]:
    """The demo repo applied on landed demo data, and 400 rides with the values serving would have logged."""
    cfg, data = small_demo
    for dataset, frame in data.items():
        target = config.paths().landing_dir / dataset / "demo.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target, index=False)
    land_landing_dir(config.paths().landing_dir, config.paths().offline_dir)
    FeastHook().apply()
    rides = data["rides"].iloc[50:450].reset_index(drop=True)
    stats = data["driver_hourly_stats"][["driver_id", "event_timestamp", *FEATURES]]
    truth = pd.merge_asof(rides.sort_values("event_timestamp"), stats.sort_values("event_timestamp"),
                          on="event_timestamp", by="driver_id", direction="backward")
    return cfg, truth.reset_index(drop=True)


def _log(model: str, rows: pd.DataFrame, features: list[str]) -> None:
    with PredictionLog(config.paths().predictions_dir, flush_rows=1000) as log:
        for i, row in rows.iterrows():
            log.append({"request_id": f"{model}-{i}", "time": row["event_timestamp"].to_pydatetime(), "model": model,
                        "model_version": "1", "route": "champion", "entity_key": {"driver_id": int(row["driver_id"])},
                        "features": {name: float(row[name]) for name in features}, "prediction": 0.5,
                        "protocol": "predict"})


def _check(model: str, end: Any) -> dict[str, Any]:
    op = FeastSkewCheckOperator(task_id="skew", model_name=model, monitoring=MONITORING,
                                feature_service="ride_completion_v1", entity_keys=["driver_id"],
                                request_features=REQUEST, window_end=end.isoformat())
    context = {"run_id": f"manual__{model}", "outlet_events": defaultdict(dict)}
    return op.execute(context)  # type: ignore[arg-type]


def test_correct_serving_has_no_skew_and_stale_values_are_named(served: tuple[Any, pd.DataFrame]) -> None:
    cfg, truth = served
    _log("skew_ok", truth, [*FEATURES, *REQUEST])
    stale = truth.copy()
    rng = np.random.default_rng(0)
    hit = rng.uniform(0, 1, len(stale)) < 0.2  # a fifth of requests got yesterday's acceptance rate
    stale.loc[hit, "acc_rate"] = (stale.loc[hit, "acc_rate"] * 0.8).round(4)
    _log("skew_stale", stale, [*FEATURES, *REQUEST])
    end = cfg.end + timedelta(hours=1)

    ok = _check("skew_ok", end)
    assert ok["status"] == "ok", ok
    assert ok["rows"] == 300 and ok["counts"] == {"predictions": 400, "sampled": 300}
    assert set(ok["features"]) == set(FEATURES), "request-time features are not Feast's to compare"
    assert all(info["mismatches"] == 0 for info in ok["features"].values()), ok["features"]

    bad = _check("skew_stale", end)
    assert bad["status"] == "detected" and bad["skewed_features"] == ["acc_rate"], bad
    assert 0.12 < bad["features"]["acc_rate"]["share"] < 0.28 and bad["value"] == bad["features"]["acc_rate"]["share"]
    assert all(bad["features"][name]["mismatches"] == 0 for name in ("conv_rate", "rating", "avg_daily_trips"))
    example = bad["features"]["acc_rate"]["examples"][0]
    assert example["logged"] == pytest.approx(round(example["offline"] * 0.8, 4))


def test_a_feature_missing_from_the_log_is_skew_by_name_and_runs_are_recorded(
        served: tuple[Any, pd.DataFrame]) -> None:
    cfg, truth = served
    _log("skew_missing", truth, ["conv_rate", "acc_rate", "avg_daily_trips", *REQUEST])  # `rating` never logged
    result = _check("skew_missing", cfg.end + timedelta(hours=1))
    assert result["status"] == "detected" and result["missing_in_log"] == ["rating"], result
    assert result["features"]["rating"]["problem"] == "column 'rating' is missing in the prediction log"
    assert result["skewed_features"] == ["rating"]

    empty = _check("skew_missing", cfg.start - timedelta(days=30))
    assert empty["status"] == "skipped" and "no predictions of skew_missing logged" in empty["reason"]
    records = monitoring_history.history("skew_missing", "skew")
    assert [r["status"] for r in records] == ["detected", "skipped"]
    assert records[0]["details"]["missing_in_log"] == ["rating"] and records[0]["run_id"] == "manual__skew_missing"
