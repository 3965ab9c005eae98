"""The one point-in-time join: training sets, batch inference and the skew check all get features here.

Which path runs (`plan`, decided per feature service and entity frame, logged by every caller and
recorded in the training set's lineage as `join`):

- `asof` — every view of the service is a plain FeatureView on a local parquet FileSource (a path
  without `scheme://`, parquet format or a `.parquet` path) and the entity frame holds each view's
  join keys: `core.asof_join.AsofJoiner` (each view's rows of the entity set's time span read once
  by `core.asof_rows`, then one binary search per entity row), Feast's rule exactly;
- `feast` — anything else (an on-demand view, a non-file or remote source, a missing join key, for
  which Feast raises its own error): Feast's `get_historical_features`, in chunks of entity rows.

Both paths return the entity rows in the order given, each exactly once, with the service's
features appended in service order (NaN/None where Feast has no value within the TTL).
Equality with Feast is proven cell for cell on randomized data against a real Feast repo:
tests/integration/test_point_in_time_equals_feast.py (docs/point_in_time.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.asof_join import FEAST_TIMESTAMP, AsofJoiner, AsofView, asof_plan

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ASOF, FEAST = "asof", "feast"
_ROW = "__mlops_pit_row"  # carried through Feast to restore entity order (Feast's output order is not stable)

__all__ = ["ASOF", "FEAST", "FEAST_TIMESTAMP", "JoinPlan", "PointInTimeJoin", "plan"]


@dataclass(frozen=True)
class JoinPlan:
    """Which path joins a service's features, and why (for the log and the lineage)."""

    path: str  # ASOF | FEAST
    reason: str
    views: tuple[AsofView, ...] = ()


def plan(store: Any, service: Any, entity_columns: list[str] | None = None) -> JoinPlan:
    """The path for `service` (see the module docstring); `entity_columns` None: the join keys are not checked."""
    views, why_not = asof_plan(store, service)
    if views is None:
        return JoinPlan(FEAST, why_not)
    if entity_columns is not None:
        absent = sorted({entity for view in views for _, entity in view.keys} - set(entity_columns))
        if absent:
            return JoinPlan(FEAST, f"the entity rows lack join key column(s) {absent}")
    names = ", ".join(view.name for view in views)
    return JoinPlan(ASOF, f"every view is a local parquet FileSource ({names})", tuple(views))


class PointInTimeJoin:
    """The point-in-time join of one entity frame (FEAST_TIMESTAMP column: tz-aware UTC), chunk by chunk."""

    def __init__(self, store: Any, service: Any, entity: pd.DataFrame, *, purpose: str) -> None:
        import pandas as pd

        index = entity.index
        plain = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
        # reset_index copies every column: only when the index is not 0..n-1 already
        self.store, self.service, self.entity = store, service, entity if plain else entity.reset_index(drop=True)
        self.plan = plan(store, service, list(entity.columns))
        log.info("%s: point-in-time join of %s entity rows with feature service %s via %s (%s)", purpose,
                 len(entity), service.name, self.plan.path, self.plan.reason)
        self._asof = AsofJoiner(list(self.plan.views), self.entity) if self.plan.path == ASOF else None

    @property
    def path(self) -> str:
        return self.plan.path

    def chunks(self, chunk_rows: int, *, same_dtypes: bool = False) -> Iterator[pd.DataFrame]:
        """The entity rows in order, `chunk_rows` at a time, each chunk with the features appended.

        `same_dtypes`: every chunk gets the dtypes the whole frame would have (an int feature is float64
        in every chunk when any row of the set has no value), so chunks can be written as one file. The
        Feast path then joins all chunks before yielding the whole frame once.
        """
        entity, step = self.entity, max(int(chunk_rows), 1)
        if self._asof is not None:
            widen = self._asof.views_with_gaps(entity, step) if same_dtypes else frozenset()
            for start in range(0, max(len(entity), 1), step):  # no rows: one empty frame with the feature columns
                yield self._asof.join(entity.iloc[start:start + step], widen=widen)
            return
        if not len(entity):
            yield self._feast(entity)
            return
        parts = (self._feast(entity.iloc[start:start + step]) for start in range(0, len(entity), step))
        if not same_dtypes:
            yield from parts
            return
        import pandas as pd

        yield pd.concat(list(parts), ignore_index=True)

    def frame(self, chunk_rows: int) -> pd.DataFrame:
        """All rows at once (the skew check's sample, tests)."""
        import pandas as pd

        parts = list(self.chunks(chunk_rows, same_dtypes=True))
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def _feast(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """Feast's get_historical_features for one chunk, back in the chunk's row order."""
        rows = chunk.reset_index(drop=True).assign(**{_ROW: range(len(chunk))})
        frame = self.store.get_historical_features(entity_df=rows, features=self.service).to_df()
        if _ROW in frame.columns:
            frame = frame.sort_values(_ROW, kind="mergesort").reset_index(drop=True)
            if len(frame) == len(rows) and (frame[_ROW].to_numpy() == rows[_ROW].to_numpy()).all():
                return frame.drop(columns=_ROW)
        raise RowsLost(len(frame), len(rows))


class RowsLost(Exception):
    """Feast returned other rows than it was given (each caller maps it to its own domain error)."""

    def __init__(self, got: int, given: int) -> None:
        self.got, self.given = got, given
        super().__init__(f"the point-in-time join returned {got} rows for {given} entity rows; it must return "
                         f"every entity row once (check the offline store type is duckdb)")
