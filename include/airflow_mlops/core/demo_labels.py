"""Delayed labels for the demo: the true outcome of every served prediction, written as a label file.

The demo's serving app logs each request's features (the driver's online stats and the request
features). The outcome of such a ride is drawn with the demo generator's own label function
(`core.demo_data._label`: the same logit of acc_rate, conv_rate, rating, trip distance, surge and
night hours, with the same `concept_shift` knob), seeded, so the same log window and seed give the
same labels. Two knobs make the served model look worse, for the performance check to catch:

- `concept_shift` in [0, 1]: the world's rule changes (distance stops mattering, surge starts to);
- `flip_share` in [0, 1]: that share of labels is inverted (a labelling job gone wrong).

The file is <labels_dir>/<model>/labels-<start>-<end>.parquet with request_id, event_timestamp (the
prediction time), the entity keys and the label column, written atomically (the label watcher and
the performance check never see half a file).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops import config
from airflow_mlops.core.offline import atomic_write_bytes

if TYPE_CHECKING:
    import pandas as pd

LABEL_INPUTS = ("acc_rate", "conv_rate", "rating", "trip_distance_km", "surge_multiplier", "pickup_hour")


def demo_outcomes(frame: pd.DataFrame, *, concept_shift: float = 0.0, flip_share: float = 0.0,
                  seed: int = 7) -> pd.Series:
    """0/1 outcomes for logged predictions (rows with the demo features), drawn by the generator's rule."""
    import numpy as np
    import pandas as pd

    from airflow_mlops.core.demo_data import _label

    for name, value in (("concept_shift", concept_shift), ("flip_share", flip_share)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value} is outside [0, 1]; use 0 for none and 1 for the strongest")
    missing = [c for c in LABEL_INPUTS if c not in frame.columns]
    if missing:
        raise ValueError(f"the logged predictions lack the demo feature(s) {missing} (have {sorted(frame.columns)}); "
                         f"demo labels are only defined for the demo model's features")
    rows = frame[list(LABEL_INPUTS)].apply(pd.to_numeric, errors="coerce")
    rows["pickup_hour"] = rows["pickup_hour"].fillna(12).astype("int64")
    rng = np.random.default_rng(seed)
    outcome = _label(rows, rows, concept_shift, rng)
    flips = rng.uniform(0, 1, len(rows)) < flip_share
    return pd.Series(np.where(flips, 1 - outcome, outcome), index=frame.index, dtype="int64")


def write_demo_labels(model: str, start: datetime, end: datetime, *, label: str = "completed",
                      entity_keys: tuple[str, ...] = ("driver_id",), concept_shift: float = 0.0,
                      flip_share: float = 0.0, seed: int = 7, directory: Path | None = None,
                      predictions_dir: Path | None = None) -> dict[str, Any]:
    """Label every prediction of `model` logged in [start, end); returns {path, rows, positives}."""
    from airflow_mlops.core.prediction_window import read_prediction_window

    window = read_prediction_window(model, start, end, directory=predictions_dir).frame
    outcomes = demo_outcomes(window, concept_shift=concept_shift, flip_share=flip_share, seed=seed)
    keys = [k for k in entity_keys if k in window.columns]
    labels = window[["request_id", "time", *keys]].rename(columns={"time": "event_timestamp"})
    labels = labels.assign(**{label: outcomes})
    folder = Path(directory) if directory is not None else config.paths().labels_dir / model
    target = folder / f"labels-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}.parquet"
    atomic_write_bytes(target, lambda tmp: labels.to_parquet(tmp, index=False))
    return {"path": str(target), "rows": len(labels), "positives": int(labels[label].sum())}
