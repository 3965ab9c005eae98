"""Predictions and delayed labels for the performance tests (unit: the core; adapter: the operator)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from airflow_mlops.serving.prediction_log import PredictionLog

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
END = T0 + timedelta(hours=24)


def truth(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative probabilities (roc_auc ~0.85)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + (y - 0.5) * 0.35 + rng.normal(0, 0.25, n), 0.01, 0.99)
    return y, p


def log(root: Path, proba: np.ndarray, version: str = "3") -> None:
    with PredictionLog(root, flush_rows=500) as log:
        for i, p in enumerate(proba):
            log.append({"request_id": f"r{i}", "time": T0 + timedelta(minutes=i), "model": "m",
                        "model_version": version, "route": "champion", "entity_key": {"driver_id": 1000 + i % 9},
                        "features": {"conv_rate": 0.5}, "prediction": float(p), "protocol": "predict"})


def labels(root: Path, name: str, frame: pd.DataFrame) -> Path:
    path = root / "labels" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path
