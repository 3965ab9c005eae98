"""The demo generator: seeded, point-in-time label, and drift knobs that move what they claim to."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from airflow_mlops.core.demo_data import DemoConfig, _stats_as_of, generate, rides

pytestmark = pytest.mark.unit

SMALL = {"days": 4, "drivers": 30, "rides_per_day": 800}


def test_full_size_has_at_least_100k_labelled_rows() -> None:
    cfg = DemoConfig()
    assert cfg.days * cfg.rides_per_day >= 100_000


def test_seeded_and_typed(small_demo) -> None:
    cfg, data = small_demo
    again = generate(cfg)
    for name, frame in data.items():
        assert frame.equals(again[name]), name
    rides = data["rides"]
    assert str(rides["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert str(data["driver_hourly_stats"]["created"].dtype) == "datetime64[us, UTC]"
    assert rides["completed"].isin([0, 1]).all() and 0.3 < rides["completed"].mean() < 0.9
    assert rides["ride_id"].is_unique


def test_label_depends_on_stats_as_of_request_time(small_demo) -> None:
    _, data = small_demo
    known = _stats_as_of(data["rides"], data["driver_hourly_stats"])
    rides = data["rides"].assign(acc=known["acc_rate"])
    high = rides[rides["acc"] > rides["acc"].quantile(0.75)]["completed"].mean()
    low = rides[rides["acc"] < rides["acc"].quantile(0.25)]["completed"].mean()
    assert high - low > 0.15


def test_trips_are_the_completed_rides_with_a_learnable_duration(small_demo) -> None:
    import numpy as np

    _, data = small_demo
    trips, rides = data["trips"], data["rides"]
    completed = rides[rides["completed"] == 1]
    assert trips["ride_id"].tolist() == completed["ride_id"].tolist() and "completed" not in trips.columns
    assert trips["duration_min"].dtype == "float64" and (trips["duration_min"] > 0).all()
    # the regression label follows distance and hour, yet restates no single column (the leakage rule's 0.95)
    r = np.corrcoef(trips["trip_distance_km"], trips["duration_min"])[0, 1]
    assert 0.5 < r < 0.95
    per_km = trips["duration_min"] / trips["trip_distance_km"]
    assert per_km[trips["pickup_hour"].isin([7, 8, 9])].median() > 1.5 * per_km[trips["pickup_hour"] < 5].median()


def test_label_noise_scrambles_trip_durations() -> None:
    import numpy as np

    noisy = generate(DemoConfig(**SMALL, label_noise=1.0))["trips"]
    assert abs(np.corrcoef(noisy["trip_distance_km"], noisy["duration_min"])[0, 1]) < 0.1


def test_covariate_shift_moves_inputs() -> None:
    base = generate(DemoConfig(**SMALL))["rides"]
    shifted = generate(DemoConfig(**SMALL, covariate_shift=1.0))["rides"]
    assert shifted["trip_distance_km"].mean() > 1.5 * base["trip_distance_km"].mean()
    assert shifted["surge_multiplier"].mean() > base["surge_multiplier"].mean() + 0.2


def test_concept_shift_changes_the_rule_not_the_inputs() -> None:
    import numpy as np

    base = generate(DemoConfig(**SMALL))["rides"]
    shifted = generate(DemoConfig(**SMALL, concept_shift=1.0))["rides"]
    assert np.allclose(base["trip_distance_km"], shifted["trip_distance_km"])
    corr_base = np.corrcoef(base["trip_distance_km"], base["completed"])[0, 1]
    corr_shift = np.corrcoef(shifted["trip_distance_km"], shifted["completed"])[0, 1]
    assert corr_base < -0.1 and abs(corr_shift) < 0.05


@pytest.mark.parametrize(("field", "value"), [("covariate_shift", 1.5), ("concept_shift", -0.1)])
def test_knobs_out_of_range_are_rejected(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        DemoConfig(**{field: value})


def test_naive_start_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        DemoConfig(start=datetime(2026, 10, 1))


def test_ride_ids_are_unique_across_consecutive_batches() -> None:
    """The rides contract keys rows by ride_id: a later batch must not reuse an earlier one's ids."""
    first = rides(DemoConfig(start=datetime(2026, 10, 1, tzinfo=UTC), days=30, drivers=5, rides_per_day=200))
    later = rides(DemoConfig(start=datetime(2026, 10, 31, tzinfo=UTC), days=1, drivers=5, rides_per_day=200, seed=8))
    assert first["ride_id"].is_unique and not set(first["ride_id"]) & set(later["ride_id"])
    assert first["ride_id"].min() >= 1 and first["ride_id"].max() < 2**53, "positive and JSON-exact"


def test_demo_batches_end_now_unless_a_start_is_given(mlops_home: object) -> None:
    """A first demo run serves fresh features: the data ends at the start of the current hour, never later."""
    from datetime import timedelta

    import pandas as pd

    from airflow_mlops.demo import demo_end, write_demo_batches

    before = demo_end()
    written = write_demo_batches(days=1)
    ends = {before, demo_end()}  # the hour may turn while the batch is written
    stats = pd.read_parquet(written["driver_hourly_stats"])
    end = next(e for e in ends if stats["event_timestamp"].max() == pd.Timestamp(e - timedelta(hours=1)))
    assert stats["event_timestamp"].min() == pd.Timestamp(end - timedelta(days=1))
    assert pd.read_parquet(written["rides"])["event_timestamp"].max() < pd.Timestamp(end)
    again = write_demo_batches(days=1, start="2026-10-01")  # reproducible times on request
    first = pd.read_parquet(again["driver_hourly_stats"])["event_timestamp"].min()
    assert first == pd.Timestamp("2026-10-01", tz="UTC")
