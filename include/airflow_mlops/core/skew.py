"""Training-serving skew: feature values logged at serving vs the offline store's, same entity and time.

The serving app logs every feature it fed the model (the online store's values plus request-time
features). Training reads the offline store through a point-in-time join. If both paths are right,
a logged online value equals the offline value as of the request time. This check samples logged
rows, looks up the offline values of the same entities as of the same times (`core.point_in_time`,
the join training sets and batch inference use), and counts per feature the share of rows whose values
differ by more than the relative `tolerance` (a value present on one side only is a mismatch; absent
on both sides is not).

Columns that exist on one side only are skew too, reported by name and counted as a full mismatch:
a feature the model logged that the feature service does not serve (`missing_offline`), or a
feature of the service the log does not hold (`missing_in_log`). Request-time features (given per
request, never in Feast) are excluded by the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.offline import normalize_timestamps
from airflow_mlops.core.point_in_time import FEAST_TIMESTAMP, PointInTimeJoin, RowsLost
from airflow_mlops.core.training_set import ENTITY_CHUNK_ROWS, _feature_service
from airflow_mlops.exceptions import MonitoringInputError

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)

ROW_ID = "_skew_row"
EXAMPLES = 3


@dataclass(frozen=True)
class SkewResult:
    """Per-feature mismatch shares, one-sided columns, and the verdict."""

    status: str  # ok | detected | skipped
    value: float | None  # the largest mismatch share
    threshold: float
    rows: int
    reason: str
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing_offline: tuple[str, ...] = ()
    missing_in_log: tuple[str, ...] = ()

    @property
    def skewed(self) -> list[str]:
        return [name for name, info in self.features.items() if info["share"] > self.threshold]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "value": self.value, "threshold": self.threshold, "rows": self.rows,
                "reason": self.reason, "skewed_features": self.skewed, "missing_offline": list(self.missing_offline),
                "missing_in_log": list(self.missing_in_log), "features": self.features}


def service_features(store: FeatureStore, feature_service: str) -> list[str]:
    """The feature names a feature service serves (unprefixed, as serving logs them)."""
    service = _feature_service(store, feature_service)
    return [f.name for projection in service.feature_view_projections for f in projection.features]


def sample_rows(frame: pd.DataFrame, entity_keys: Sequence[str], sample: int, seed: int = 0) -> pd.DataFrame:
    """At most `sample` logged rows that have every entity key and a time (others cannot be looked up)."""
    missing = [k for k in entity_keys if k not in frame.columns]
    if missing and len(frame):
        raise MonitoringInputError(
            f"the prediction log has no entity column(s) {missing} (columns: {sorted(frame.columns)}); the skew "
            f"check looks offline values up by them. Fix: pass the spec's features.entity_keys."
        )
    usable = frame.dropna(subset=[*entity_keys, "time"]) if len(frame) else frame
    if len(usable) > sample:
        usable = usable.sample(n=sample, random_state=seed)
    return usable.reset_index(drop=True)


def offline_values(store: FeatureStore, feature_service: str, rows: pd.DataFrame,
                   entity_keys: Sequence[str]) -> pd.DataFrame:
    """The offline store's values as of each row's time, row-aligned with `rows` (index 0..n-1)."""
    entity = rows[list(entity_keys)].copy()
    for key in entity_keys:
        entity[key] = _as_key(entity[key])
    entity[FEAST_TIMESTAMP] = normalize_timestamps(rows[["time"]])["time"]
    entity[ROW_ID] = range(len(entity))
    service = _feature_service(store, feature_service)
    try:
        result = PointInTimeJoin(store, service, entity, purpose="skew check").frame(ENTITY_CHUNK_ROWS)
    except RowsLost as lost:
        raise MonitoringInputError(f"skew check, feature service '{feature_service}': {lost}") from None
    return result.set_index(ROW_ID)


def _as_key(values: pd.Series) -> pd.Series:
    """JSON-decoded integer keys come back as floats when a row lacked one: Feast joins on int64."""
    import pandas as pd

    if pd.api.types.is_float_dtype(values) and (values == values.round()).all():
        return values.astype("int64")
    return values


def compare(logged: pd.DataFrame, offline: pd.DataFrame, *, logged_features: Sequence[str],
            offline_features: Sequence[str], tolerance: float, max_mismatch_share: float) -> SkewResult:
    """Mismatch share per feature present on both sides; one-sided columns are full mismatches."""
    missing_offline = tuple(sorted(set(logged_features) - set(offline_features)))
    missing_in_log = tuple(sorted(set(offline_features) - set(logged_features)))
    rows = len(logged)
    features = {name: _mismatch(logged[name], offline[name], tolerance)
                for name in logged_features if name in set(offline_features)}
    for name in (*missing_offline, *missing_in_log):
        side = "the offline store (feature service)" if name in missing_offline else "the prediction log"
        features[name] = {"compared": rows, "mismatches": rows, "share": 1.0, "examples": [],
                          "problem": f"column '{name}' is missing in {side}"}
    worst = max((info["share"] for info in features.values()), default=0.0)
    skewed = sorted(name for name, info in features.items() if info["share"] > max_mismatch_share)
    status = "detected" if skewed else "ok"
    reason = (f"skew in {skewed}: mismatch share above {max_mismatch_share:g} "
              f"(relative tolerance {tolerance:g}) on {rows} sampled rows" if skewed else
              f"{len(features)} feature(s) match within relative tolerance {tolerance:g} on {rows} sampled rows "
              f"(largest mismatch share {worst:.4f} <= {max_mismatch_share:g})")
    return SkewResult(status=status, value=float(worst), threshold=max_mismatch_share, rows=rows, reason=reason,
                      features=features, missing_offline=missing_offline, missing_in_log=missing_in_log)


def _mismatch(logged: pd.Series, offline: pd.Series, tolerance: float) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    a = pd.to_numeric(logged, errors="coerce").to_numpy(dtype="float64")
    b = pd.to_numeric(offline.reset_index(drop=True), errors="coerce").to_numpy(dtype="float64")
    same = np.isclose(a, b, rtol=tolerance, atol=0.0, equal_nan=True)
    bad = np.flatnonzero(~same)
    examples = [{"logged": _num(a[i]), "offline": _num(b[i])} for i in bad[:EXAMPLES]]
    return {"compared": len(a), "mismatches": len(bad), "share": float(len(bad) / len(a)) if len(a) else 0.0,
            "examples": examples}


def _num(value: float) -> float | None:
    return None if value != value else float(value)


def skipped(reason: str, threshold: float, rows: int = 0) -> SkewResult:
    return SkewResult(status="skipped", value=None, threshold=threshold, rows=rows, reason=reason)
