"""Seeded demo domain: will a ride request be completed by the assigned driver, and how long will the trip take?

Three tables, like a real ride-hailing warehouse:
- `driver_hourly_stats` (feature source): hourly per-driver snapshots of conv_rate, acc_rate,
  avg_daily_trips and rating;
- `rides` (label source of `ride_completion`, binary): one row per ride request with request-time
  features (trip_distance_km, surge_multiplier, pickup_hour) and the label `completed`;
- `trips` (label source of `ride_duration`, regression): one row per completed ride, keyed and timed
  like its request, with the same request-time features and the label `duration_min`.

`completed` depends on the driver's stats *as of the request time* (so a point-in-time join matters)
and on request features. `duration_min` is the distance at a speed set by the hour (rush hours are slow,
nights fast), the surge (busy streets) and the driver's acceptance rate as of the request, with
multiplicative noise: learnable (r2 well above 0) but not a copy of any one column. Two independent
knobs inject drift:
- `covariate_shift` in [0, 1]: longer trips, more surge, lower acceptance (inputs move, rule holds);
- `concept_shift` in [0, 1]: the rule itself changes (distance stops mattering, surge starts to).
A third knob degrades the data itself: `label_noise` in [0, 1] replaces that share of labels with
coin flips (a broken labelling job), and that share of trip durations with other trips' durations; at 1
nothing is learnable and evaluation thresholds refuse the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

DRIVER_ID_START = 1001


@dataclass(frozen=True)
class DemoConfig:
    start: datetime = datetime(2026, 10, 1, tzinfo=UTC)
    days: int = 30
    drivers: int = 200
    rides_per_day: int = 3500
    seed: int = 7
    covariate_shift: float = 0.0
    concept_shift: float = 0.0
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        for knob in ("covariate_shift", "concept_shift", "label_noise"):
            value = getattr(self, knob)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{knob}={value} is outside [0, 1]; use 0 for none and 1 for the strongest shift")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC); naive timestamps break point-in-time joins")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)


def driver_stats(cfg: DemoConfig) -> pd.DataFrame:
    """Hourly snapshots per driver: each driver has a latent quality that drifts slowly."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(cfg.seed)
    hours = cfg.days * 24
    quality = rng.normal(0.0, 1.0, cfg.drivers)
    walk = np.cumsum(rng.normal(0.0, 0.05, (hours, cfg.drivers)), axis=0) + quality
    shift = cfg.covariate_shift
    acc = _sigmoid(walk + rng.normal(0, 0.3, walk.shape) - 1.2 * shift)
    conv = _sigmoid(0.6 * walk + rng.normal(0, 0.4, walk.shape))
    trips = np.clip(rng.poisson(12 + 4 * np.clip(walk, -2, 2)), 0, None)
    rating = np.clip(4.3 + 0.25 * walk + rng.normal(0, 0.1, walk.shape), 1.0, 5.0)
    ts = pd.date_range(cfg.start, periods=hours, freq="h", tz="UTC", unit="us")
    frame = pd.DataFrame(
        {
            "driver_id": np.tile(np.arange(DRIVER_ID_START, DRIVER_ID_START + cfg.drivers), hours),
            "event_timestamp": np.repeat(ts, cfg.drivers),
            "conv_rate": conv.ravel().round(4),
            "acc_rate": acc.ravel().round(4),
            "avg_daily_trips": trips.ravel().astype("int64"),
            "rating": rating.ravel().round(3),
        }
    )
    frame["created"] = (frame["event_timestamp"] + pd.Timedelta(minutes=5)).astype("datetime64[us, UTC]")
    return frame


def rides(cfg: DemoConfig, stats: pd.DataFrame | None = None) -> pd.DataFrame:
    """Ride requests with the label drawn from the driver's stats at request time."""
    import numpy as np
    import pandas as pd

    stats = driver_stats(cfg) if stats is None else stats
    rng = np.random.default_rng(cfg.seed + 1)
    n = cfg.days * cfg.rides_per_day
    offsets = np.sort(rng.uniform(0, cfg.days * 86400, n))
    ts = pd.to_datetime(cfg.start) + pd.to_timedelta(offsets, unit="s")
    frame = pd.DataFrame(
        {
            # Unique across batches (the rides contract keys rows by ride_id): the batch start in epoch
            # seconds x 1000 + a sequence; batches a day apart are 86.4 M ids apart, one holds < 1 M rides.
            "ride_id": int(cfg.start.timestamp()) * 1000 + np.arange(1, n + 1, dtype="int64"),
            "driver_id": rng.integers(DRIVER_ID_START, DRIVER_ID_START + cfg.drivers, n),
            "event_timestamp": ts.astype("datetime64[us, UTC]"),
        }
    )
    shift = cfg.covariate_shift
    frame["trip_distance_km"] = rng.lognormal(1.5 + 0.6 * shift, 0.6, n).round(2)
    frame["surge_multiplier"] = (1.0 + rng.exponential(0.15 + 0.5 * shift, n)).round(2)
    frame["pickup_hour"] = frame["event_timestamp"].dt.hour.astype("int64")
    known = _stats_as_of(frame, stats)
    frame["completed"] = _label(frame, known, cfg.concept_shift, rng)
    if cfg.label_noise > 0:
        noisy = rng.uniform(0, 1, len(frame)) < cfg.label_noise
        frame.loc[noisy, "completed"] = rng.integers(0, 2, int(noisy.sum()))
    return frame


def _stats_as_of(frame: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """The last snapshot at or before each request — the ground truth a point-in-time join must match."""
    import pandas as pd

    left = frame[["driver_id", "event_timestamp"]].reset_index()
    right = stats[["driver_id", "event_timestamp", "acc_rate", "conv_rate", "rating"]]
    merged = pd.merge_asof(left.sort_values("event_timestamp"), right.sort_values("event_timestamp"),
                           on="event_timestamp", by="driver_id", direction="backward")
    return merged.set_index("index").sort_index()


def _label(frame: pd.DataFrame, known: pd.DataFrame, concept: float, rng: object) -> pd.Series:

    distance_weight = -0.12 * (1.0 - concept)
    surge_weight = -1.5 * concept
    night = frame["pickup_hour"].isin([0, 1, 2, 3, 4]).astype(float)
    logit = (
        -1.0
        + 4.0 * known["acc_rate"].fillna(0.5).to_numpy()
        + 1.5 * known["conv_rate"].fillna(0.5).to_numpy()
        + 0.6 * (known["rating"].fillna(4.3).to_numpy() - 4.3)
        + distance_weight * frame["trip_distance_km"].to_numpy()
        + surge_weight * (frame["surge_multiplier"].to_numpy() - 1.0)
        - 0.5 * night.to_numpy()
    )
    draws = rng.uniform(0, 1, len(frame))  # type: ignore[attr-defined]
    return (draws < _sigmoid(logit)).astype("int64")


def trips(cfg: DemoConfig, ride_rows: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """The completed rides with their duration in minutes (`duration_min`), seeded (module doc)."""
    import numpy as np

    rng = np.random.default_rng(cfg.seed + 2)
    done = ride_rows[ride_rows["completed"] == 1].drop(columns=["completed"]).reset_index(drop=True)
    known = _stats_as_of(done, stats)
    hour = done["pickup_hour"].to_numpy()
    speed = np.where(np.isin(hour, [7, 8, 9, 16, 17, 18, 19]), 17.0, np.where(hour < 6, 36.0, 25.0))
    speed = speed * (1.0 - 0.25 * cfg.concept_shift)  # a changed world: traffic got worse everywhere
    speed = speed / (1.0 + 0.35 * (done["surge_multiplier"].to_numpy() - 1.0))  # surge: busy streets
    speed = speed * (0.7 + 0.6 * known["acc_rate"].fillna(0.5).to_numpy())  # keen drivers take the quick route
    minutes = 2.0 + done["trip_distance_km"].to_numpy() / speed * 60.0
    minutes = minutes * rng.lognormal(0.0, 0.18, len(done))
    if cfg.label_noise > 0:
        noisy = rng.uniform(0, 1, len(done)) < cfg.label_noise
        minutes[noisy] = rng.permutation(minutes)[noisy]
    return done.assign(duration_min=np.round(minutes, 2))


def _sigmoid(x: Any) -> Any:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-np.asarray(x)))


def generate(cfg: DemoConfig) -> dict[str, pd.DataFrame]:
    """Every table, keyed by dataset name as the offline store and Feast repo know them."""
    stats = driver_stats(cfg)
    ride_rows = rides(cfg, stats)
    return {"driver_hourly_stats": stats, "rides": ride_rows, "trips": trips(cfg, ride_rows, stats)}
