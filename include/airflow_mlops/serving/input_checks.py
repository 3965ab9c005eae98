"""Checks of the feature values a caller sent against the model version that scores them.

Parsing (`protocols.py`, `kserve.py`) checks each value on its own; these rules need the model:

- **All-missing rows** (features given directly: `/invocations`, V2 feature tensors): a row whose
  every feature column of the scoring model is null would be scored on the imputer's fill values
  alone, the same answer for any such row; 422 naming the row, unless the spec sets
  `serving.allow_empty_rows: true`. In `/predict` and V2 entity tensors a caller cannot send one:
  request-time features must be numbers and an entity without online features is a 404.
- **Ranges** (`serving.validate_ranges: true`): every number the caller sent (request-time features,
  or the feature columns given directly; never the online features, which come from our own store)
  must lie within the range the model's training set covered, widened by `RANGE_MARGIN` of that range
  on each side; 422 naming the value, the column, the allowed interval and the spec field. The range
  comes from the training-set profile the training job logs with each run (`core.training.
  FEATURE_PROFILE_ARTIFACT`, found through the run tag); a version without one is served unchecked
  (a warning names it once). NaN/Infinity never get here: the parsers refuse them.

Why a margin: the profile is what one training window happened to contain, and a slightly larger
trip or a new maximum surge is a legitimate request the monitoring DAG's drift check should see,
not a 422. The check is for values no training row came near (`1e300`, `pickup_hour` 99).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.serving.protocols import RequestError, Where, name_of

if TYPE_CHECKING:
    import numpy as np
    from mlflow import MlflowClient

    from airflow_mlops.serving.loaded import LoadedModel

log = logging.getLogger(__name__)

RANGE_MARGIN = 0.1  # of the training-set range (max - min), on each side; of max(|value|, 1) for a constant column


@dataclass(frozen=True)
class FeatureRanges:
    """Allowed interval per feature column, in the model's column order (-inf/inf where the profile has none)."""

    low: np.ndarray
    high: np.ndarray
    seen: Mapping[str, tuple[float, float]]  # the training set's own min/max, for messages
    _only: dict[frozenset[str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False,
                                                                         compare=False)

    def only(self, columns: Sequence[str], given: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) with only the `given` columns bounded (cached: one set per request-feature list)."""
        import numpy as np

        bounds = self._only.get(given)
        if bounds is None:
            mask = np.array([c in given for c in columns])
            bounds = self._only[given] = (np.where(mask, self.low, -np.inf), np.where(mask, self.high, np.inf))
        return bounds

    @classmethod
    def from_profile(cls, profile: Any, columns: Sequence[str]) -> FeatureRanges | None:
        """The ranges of `columns` in a training-set profile ({"columns": {name: {"min", "max"}}}), or None."""
        import numpy as np

        given = profile.get("columns") if isinstance(profile, dict) else None
        if not isinstance(given, dict):
            return None
        low = np.full(len(columns), -np.inf)
        high = np.full(len(columns), np.inf)
        seen: dict[str, tuple[float, float]] = {}
        for j, column in enumerate(columns):
            entry = given.get(column)
            bounds = _bounds(entry.get("min"), entry.get("max")) if isinstance(entry, dict) else None
            if bounds is None:
                continue
            lo, hi = bounds
            margin = RANGE_MARGIN * ((hi - lo) or max(abs(lo), abs(hi), 1.0))
            low[j], high[j] = lo - margin, hi + margin
            seen[column] = bounds
        return cls(low, high, seen) if seen else None


def _bounds(low: Any, high: Any) -> tuple[float, float] | None:
    """(min, max) when both are finite JSON numbers with min <= max, else None (that column is not checked)."""
    if all(type(v) in (int, float) and math.isfinite(v) for v in (low, high)) and low <= high:
        return float(low), float(high)
    return None


def read_profile(client: MlflowClient, run_id: str | None) -> dict[str, Any] | None:
    """The training-set profile the version's run logged (run tag -> JSON artifact), or None if it has none."""
    from airflow_mlops.core.training import TAG_FEATURE_PROFILE

    if not run_id:
        return None
    try:
        path = client.get_run(run_id).data.tags.get(TAG_FEATURE_PROFILE)
    except Exception as exc:  # noqa: BLE001 - a run we cannot read: serve without ranges, say why
        log.info("run %s: no training-set feature profile readable (%s)", run_id, exc)
        return None
    if not path:
        return None
    try:
        with tempfile.TemporaryDirectory(prefix="mlops-profile-") as tmp:
            data = json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text())
    except Exception as exc:  # noqa: BLE001 - tagged but unreadable: serve without ranges, loudly
        log.warning("run %s: training-set feature profile %s cannot be read (%s); serving.validate_ranges will "
                    "not check this version", run_id, path, exc)
        return None
    return data if isinstance(data, dict) else None


def check_not_empty(model: LoadedModel, inputs: np.ndarray, rows: Sequence[int], where: Where | None) -> None:
    """422 naming the first row whose every feature column of `model` is missing (NaN); `rows`: the request's
    row index of each input row, `where` names them in the request."""
    import numpy as np

    if not inputs.shape[1]:
        return
    empty = np.isnan(inputs).all(axis=1)
    if empty.any():
        row = rows[int(np.argmax(empty))]
        field = name_of(where, row)
        raise RequestError(422, field, f"{field}: every feature column of {model.name} v{model.version} is missing "
                                       f"(null) {list(model.feature_columns)}; it would be scored on imputed values "
                                       "alone. Send at least one feature value, or set serving.allow_empty_rows: "
                                       "true in the model spec to score such rows")


def check_ranges(model: LoadedModel, ranges: FeatureRanges, inputs: np.ndarray, rows: Sequence[int],
                 where: Where | None, given: frozenset[str] | None) -> None:
    """422 naming the first value outside `ranges`; only columns in `given` (None: every column) are checked.

    A missing value (NaN) compares false and passes: it is imputed, as in training."""
    import numpy as np

    low, high = (ranges.low, ranges.high) if given is None else ranges.only(model.feature_columns, given)
    bad = (inputs < low) | (inputs > high)
    if not bad.any():
        return
    r, c = (int(i) for i in np.argwhere(bad)[0])
    column = model.feature_columns[c]
    field = name_of(where, rows[r], column)
    seen_low, seen_high = ranges.seen[column]
    raise RequestError(422, field, f"{field}: {float(inputs[r, c]):.6g} is outside the range of {column!r} for "
                                   f"{model.name} v{model.version}: [{float(ranges.low[c]):.6g}, "
                                   f"{float(ranges.high[c]):.6g}] (its training set spans [{seen_low:.6g}, "
                                   f"{seen_high:.6g}], plus {RANGE_MARGIN:.0%} of that span on each side). Refused "
                                   "because the model spec sets serving.validate_ranges: true")
