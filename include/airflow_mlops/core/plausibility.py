"""Plausibility rules: what a batch must look like given the dataset's history and its neighbours.

GX checks a batch on its own; these rules need context GX does not have. Each is named in the
contract (`meta.airflow_mlops`, profiled by `airflow-mlops suite`) and reported like any failure:

- `timestamps_not_before_valid_from` — no timestamp before the contract's `valid_from` (an
  epoch-zero default, a two-digit year, a unit mix-up land decades early).
- `timestamps_within_backfill_span` — no event time more than `max_backfill_days` before the
  earliest event already landed for the dataset: history may grow backwards, but not by years in
  one batch. Needs the landed history; not evaluated for the first batch of a dataset.
- `no_degenerate_columns` — a column that varies in the reference (`varying_columns`: column ->
  share of its most common value) is constant in a batch of n rows where share**n < 1e-6: such a
  batch almost surely comes from a broken export (a default filled in, a join that lost a column).
- `schema_matches_dataset` — the batch's columns match another dataset's column set better than
  its own: the file was dropped into the wrong landing directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.suites import Contract

if TYPE_CHECKING:
    import pandas as pd

RULE_VALID_FROM = "timestamps_not_before_valid_from"
RULE_BACKFILL = "timestamps_within_backfill_span"
RULE_DEGENERATE = "no_degenerate_columns"
RULE_SCHEMA = "schema_matches_dataset"
DEGENERATE_PROBABILITY = 1e-6
SAMPLE_SIZE = 5


def _failure(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from airflow_mlops.core.validation import failure

    return failure(*args, **kwargs)


def _as_utc(value: str | datetime) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _too_early(series: pd.Series, limit: datetime) -> pd.Series:
    import pandas as pd

    if not pd.api.types.is_datetime64_any_dtype(series) or getattr(series.dt, "tz", None) is None:
        return series.iloc[0:0]  # not tz-aware: the timestamps_tz_utc rule already fails it
    return series[series < pd.Timestamp(limit)]


def valid_from_failures(frame: pd.DataFrame, contract: Contract) -> tuple[int, list[dict[str, Any]]]:
    """`timestamps_not_before_valid_from` on every contract timestamp column present."""
    if contract.valid_from is None:
        return 0, []
    limit, out, evaluated = _as_utc(contract.valid_from), [], 0
    for column in contract.all_timestamp_columns:
        if column not in frame.columns:
            continue
        evaluated += 1
        early = _too_early(frame[column], limit)
        if len(early):
            out.append(_failure(RULE_VALID_FROM, column, {"valid_from": contract.valid_from},
                                unexpected_count=len(early), rows=len(frame),
                                sample=[v.isoformat() for v in early.sort_values().head(SAMPLE_SIZE)],
                                detail=f"earliest {early.min().isoformat()} is before the dataset's valid_from "
                                       f"{contract.valid_from}: fix the timestamps at the source, or lower "
                                       f"valid_from in the suite if such old data is real"))
    return evaluated, out


def backfill_failures(frame: pd.DataFrame, contract: Contract,
                      landed_since: datetime | None) -> tuple[int, list[dict[str, Any]]]:
    """`timestamps_within_backfill_span`: event times at most `max_backfill_days` before the landed history."""
    column = contract.timestamp_column
    if contract.max_backfill_days is None or landed_since is None or column not in frame.columns:
        return 0, []
    limit = _as_utc(landed_since) - timedelta(days=float(contract.max_backfill_days))
    early = _too_early(frame[column], limit)
    if not len(early):
        return 1, []
    return 1, [_failure(RULE_BACKFILL, column, {"max_backfill_days": contract.max_backfill_days,
                                                "landed_since": _as_utc(landed_since).isoformat()},
                        unexpected_count=len(early), rows=len(frame),
                        sample=[v.isoformat() for v in early.sort_values().head(SAMPLE_SIZE)],
                        detail=f"earliest {early.min().isoformat()} is more than {contract.max_backfill_days:g} days "
                               f"before the landed history (which starts {_as_utc(landed_since).isoformat()}): "
                               f"check the batch's time zone/unit; a real backfill raises max_backfill_days")]


def degenerate_failures(frame: pd.DataFrame, contract: Contract) -> tuple[int, list[dict[str, Any]]]:
    """`no_degenerate_columns`: a column that varies in the reference is implausibly constant in the batch."""
    rows, out, evaluated = len(frame), [], 0
    for column, share in contract.varying_columns.items():
        if column not in frame.columns or rows < 2:
            continue
        evaluated += 1
        values = frame[column]
        if values.nunique(dropna=False) != 1:
            continue
        chance = float(share) ** rows
        if chance >= DEGENERATE_PROBABILITY:
            continue
        value = values.iloc[0]
        shown = "null" if value != value or value is None else value  # NaN != NaN
        out.append(_failure(RULE_DEGENERATE, column, {"reference_top_share": share},
                            unexpected_count=rows, rows=rows, sample=[shown],
                            detail=f"all {rows} rows hold {shown!r}, but the column varies in the reference (its "
                                   f"commonest value has share {share:g}, so {rows} equal values by chance has "
                                   f"probability {chance:.1e}): a default filled in or a lost join upstream"))
    return evaluated, out


def suite_columns(suite: Mapping[str, Any]) -> tuple[str, ...]:
    """A suite's column set: the contract's `columns`, else its `expect_table_columns_to_match_set`."""
    from airflow_mlops.core.suites import CONTRACT_KEY

    meta = (suite.get("meta") or {}).get(CONTRACT_KEY) or {}
    if meta.get("columns"):
        return tuple(str(c) for c in meta["columns"])
    for item in suite.get("expectations") or []:
        if item.get("type") == "expect_table_columns_to_match_set":
            return tuple(str(c) for c in item.get("kwargs", {}).get("column_set") or ())
    return ()


def _overlap(columns: set[str], expected: set[str]) -> float:
    return len(columns & expected) / len(columns | expected) if columns | expected else 0.0


def schema_failures(frame: pd.DataFrame, contract: Contract, own_columns: tuple[str, ...],
                    other_datasets: Mapping[str, tuple[str, ...]]) -> tuple[int, list[dict[str, Any]]]:
    """`schema_matches_dataset`: no other dataset's column set fits the batch better than its own."""
    columns = {str(c) for c in frame.columns}
    if not own_columns or not other_datasets:
        return 0, []
    own = _overlap(columns, set(own_columns))
    scores = {name: _overlap(columns, set(cols)) for name, cols in other_datasets.items()
              if name != contract.dataset and cols}
    best = max(scores, key=lambda name: scores[name], default=None)
    if best is None or scores[best] <= own:
        return 1, []
    fits = len(columns & set(other_datasets[best]))
    return 1, [_failure(RULE_SCHEMA, None, {"dataset": contract.dataset, "better_match": best},
                        detail=f"its {len(columns)} columns match dataset '{best}' ({fits} of "
                               f"{len(other_datasets[best])} columns, overlap {scores[best]:.0%}) better than "
                               f"'{contract.dataset}' ({len(columns & set(own_columns))} of {len(own_columns)}, "
                               f"overlap {own:.0%}): was it dropped into the wrong landing directory? "
                               f"Move it to landing/{best}/")]
