"""Row-level idempotency: one row per key in the offline store, whatever files the rows arrive in.

A dataset's contract names its row key (`row_key`, default entity keys + event timestamp) and two
policies. A row of a new batch is compared with the rows already landed and with the rows of the
files validated before it in the same run:

- *new*: its key is nowhere else — it lands.
- *identical*: the key exists with the same values (a re-sent file under a new name, two exports
  that overlap). `duplicates: reject` (default) fails the batch naming the keys and where they
  already are; `duplicates: skip_existing` drops those rows at landing and counts them.
- *conflicting*: the key exists with other values (a correction or a conflicting backfill).
  `corrections: reject` (default) fails the batch; `corrections: replace` makes landing replace
  the landed row's values in place (one atomic file rename per partition file), and says so.
  Two files of one run disagreeing on a key always fail: nothing says which one is right.
- A key repeated inside one batch always fails (`row_key_unique`).

Re-landing the very same file (same batch id) is not a duplicate: `core.offline` makes that a no-op.
So the offline store — and Feast's point-in-time join reading it — never holds two rows with one key.
When the event timestamp is part of the key, only the partitions of the batch's days are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.suites import Contract

if TYPE_CHECKING:
    import pandas as pd

RULE_UNIQUE = "row_key_unique"
RULE_CORRECTIONS = "no_conflicting_corrections"
SAMPLE_SIZE = 5
FILE_COLUMN = "__file"  # where a landed or earlier-in-run row lives (offline-relative partition file)
SOURCE_COLUMN = "__source"  # what a user calls it: the raw file it came from
_PARTITION = "date"


@dataclass(frozen=True)
class RowPolicy:
    """The row-level part of a contract, as landing needs it (JSON-able for XCom)."""

    dataset: str
    key: tuple[str, ...]
    timestamp_column: str
    duplicates: str = "reject"
    corrections: str = "reject"

    @classmethod
    def of(cls, contract: Contract) -> RowPolicy:
        return cls(contract.dataset, tuple(contract.row_key_columns), contract.timestamp_column,
                   contract.duplicates, contract.corrections)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RowPolicy:
        return cls(data["dataset"], tuple(data["key"]), data["timestamp_column"], data.get("duplicates", "reject"),
                   data.get("corrections", "reject"))

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "key": list(self.key), "timestamp_column": self.timestamp_column,
                "duplicates": self.duplicates, "corrections": self.corrections}


@dataclass
class RowMatches:
    """How a batch's rows relate to the rows already there (indices are positions in the batch)."""

    repeated_in_batch: list[int] = field(default_factory=list)
    identical: list[int] = field(default_factory=list)
    conflicting: list[int] = field(default_factory=list)
    # per conflicting/identical row: where the other copy is (partition file, raw source) and the changed columns
    where: dict[int, str] = field(default_factory=dict)
    source: dict[int, str] = field(default_factory=dict)
    changed: dict[int, list[str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"repeated_in_batch": len(self.repeated_in_batch), "identical": len(self.identical),
                "conflicting": len(self.conflicting)}


def _normalized(frame: pd.DataFrame) -> pd.DataFrame:
    from airflow_mlops.core.offline import normalize_timestamps

    return normalize_timestamps(frame.reset_index(drop=True))


def landed_rows(offline_dir: Path, policy: RowPolicy, batch: pd.DataFrame, *, exclude_batch: str = "") -> pd.DataFrame:
    """Rows already in the offline store whose key occurs in `batch` (+ FILE_COLUMN: their partition file).

    `exclude_batch`: rows written by this batch id (a crashed earlier landing of the same file) are not others.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    root = Path(offline_dir) / policy.dataset
    if not root.is_dir() or any(c not in batch.columns for c in policy.key):
        return pd.DataFrame()
    files = sorted(root.glob(f"{_PARTITION}=*/*.parquet"))
    if policy.timestamp_column in policy.key and policy.timestamp_column in batch.columns:
        stamps = batch[policy.timestamp_column].dropna()
        if hasattr(stamps, "dt") and getattr(stamps.dt, "tz", None) is not None:
            days = {f"{_PARTITION}={d}" for d in stamps.dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")}
            files = [f for f in files if f.parent.name in days]
    files = [f for f in files if not f.name.startswith(".") and f.stem != exclude_batch]
    from airflow_mlops.core.offline import landed_batches

    sources = {r["batch_id"]: r.get("source") or "?" for r in landed_batches(offline_dir, policy.dataset)}
    parts = []
    for path in files:
        frame = pq.read_table(path).to_pandas()
        frame = frame.drop(columns=[c for c in (FILE_COLUMN, SOURCE_COLUMN, _PARTITION) if c in frame.columns])
        parts.append(frame.assign(**{FILE_COLUMN: str(path.relative_to(offline_dir)),
                                     SOURCE_COLUMN: f"{sources.get(path.stem, 'an unrecorded batch')} "
                                                    f"(landed as batch {path.stem})"}))
    if not parts:
        return pd.DataFrame()
    landed = pd.concat(parts, ignore_index=True)
    keys = _key_frame(_normalized(batch), policy.key).drop_duplicates()
    return _matching(landed, keys, policy.key)


def _key_frame(frame: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    return frame[list(key)]


def _matching(frame: pd.DataFrame, keys: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    """Rows of `frame` whose key is in `keys`; keys compared as text when their dtypes cannot be merged."""
    try:
        return frame.merge(keys, on=list(key), how="inner")
    except (ValueError, TypeError):
        as_text = [frame[list(key)].astype(str).agg("\x1f".join, axis=1),
                   keys.astype(str).agg("\x1f".join, axis=1)]
        return frame[as_text[0].isin(set(as_text[1]))]


def _same(a: Any, b: Any) -> bool:
    import pandas as pd

    if a is None or (not isinstance(a, str | bytes) and pd.api.types.is_scalar(a) and pd.isna(a)):
        return b is None or (not isinstance(b, str | bytes) and pd.api.types.is_scalar(b) and pd.isna(b))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def match_rows(batch: pd.DataFrame, others: pd.DataFrame, key: Sequence[str]) -> RowMatches:
    """Classify each batch row against `others` (landed rows, or rows of earlier files; with FILE_COLUMN)."""
    batch = _normalized(batch)
    matches = RowMatches()
    if any(c not in batch.columns for c in key):
        return matches
    tuples = [tuple(row) for row in batch[list(key)].astype(object).itertuples(index=False, name=None)]
    seen: dict[tuple[Any, ...], int] = {}
    for position, row_key in enumerate(tuples):
        if row_key in seen:
            matches.repeated_in_batch.append(position)
        seen.setdefault(row_key, position)
    if others is None or others.empty:
        return matches
    others = _normalized(others)
    if SOURCE_COLUMN not in others.columns:
        others = others.assign(**{SOURCE_COLUMN: others[FILE_COLUMN]})
    values = [c for c in batch.columns
              if c not in key and c in others.columns and c not in (FILE_COLUMN, SOURCE_COLUMN)]
    index = {tuple(r[:len(key)]): r[len(key):] for r in
             others[[*key, *values, FILE_COLUMN, SOURCE_COLUMN]].astype(object).itertuples(index=False, name=None)}
    for position, row_key in enumerate(tuples):
        hit = index.get(row_key)
        if hit is None or position in matches.repeated_in_batch:
            continue
        row = batch.iloc[position]
        changed = [c for c, old in zip(values, hit[:-2], strict=True) if not _same(row[c], old)]
        matches.where[position], matches.source[position] = str(hit[-2]), str(hit[-1])
        (matches.conflicting if changed else matches.identical).append(position)
        if changed:
            matches.changed[position] = changed
    return matches


def _keys_of(batch: pd.DataFrame, positions: Sequence[int], key: Sequence[str]) -> list[dict[str, Any]]:
    rows = batch.iloc[list(positions)[:SAMPLE_SIZE]][list(key)]
    return [{c: (v.isoformat() if hasattr(v, "isoformat") else v) for c, v in r.items()}
            for r in rows.to_dict(orient="records")]


def row_failures(batch: pd.DataFrame, policy: RowPolicy, landed: RowMatches,
                 in_run: RowMatches) -> tuple[int, list[dict[str, Any]]]:
    """`row_key_unique` and `no_conflicting_corrections` failures under the policy (rules evaluated, failures)."""
    from airflow_mlops.core.validation import failure

    column, rows, out = "+".join(policy.key), len(batch), []
    kwargs = {"row_key": list(policy.key), "duplicates": policy.duplicates, "corrections": policy.corrections}

    def files(matches: RowMatches, positions: Sequence[int]) -> str:
        return ", ".join(sorted({matches.source[p] for p in positions}))[:300]

    if landed.repeated_in_batch:
        out.append(failure(RULE_UNIQUE, column, kwargs, unexpected_count=len(landed.repeated_in_batch), rows=rows,
                           sample=_keys_of(batch, landed.repeated_in_batch, policy.key),
                           detail="the same key occurs more than once in this batch; keep one row per key"))
    for positions, where, what in ((in_run.identical, in_run, "an earlier file of this run"),
                                   (in_run.conflicting, in_run, "an earlier file of this run, with other values")):
        if positions:
            out.append(failure(RULE_UNIQUE, column, kwargs, unexpected_count=len(positions), rows=rows,
                               sample=_keys_of(batch, positions, policy.key),
                               detail=f"{len(positions)} row key(s) are also in {what} ({files(where, positions)}); "
                                      f"send each row once"))
    fresh = [p for p in landed.identical if p not in in_run.identical and p not in in_run.conflicting]
    if fresh and policy.duplicates == "reject":
        out.append(failure(RULE_UNIQUE, column, kwargs, unexpected_count=len(fresh), rows=rows,
                           sample=_keys_of(batch, fresh, policy.key),
                           detail=f"{len(fresh)} row(s) are already landed with the same values (in "
                                  f"{files(landed, fresh)}): a re-sent batch? Remove the rows, or set "
                                  f"duplicates: skip_existing in the contract to drop such rows and count them"))
    conflicting = [p for p in landed.conflicting if p not in in_run.identical and p not in in_run.conflicting]
    if conflicting and policy.corrections == "reject":
        changed = sorted({c for p in conflicting for c in landed.changed.get(p, [])})
        out.append(failure(RULE_CORRECTIONS, column, {**kwargs, "changed_columns": changed},
                           unexpected_count=len(conflicting), rows=rows,
                           sample=_keys_of(batch, conflicting, policy.key),
                           detail=f"{len(conflicting)} row key(s) are already landed with other values (columns "
                                  f"{', '.join(changed)}; in {files(landed, conflicting)}): a correction or a "
                                  f"conflicting backfill is never appended. Set corrections: replace in the "
                                  f"contract to replace the landed rows, or drop these rows"))
    return 2, out


def row_plan(landed: RowMatches, policy: RowPolicy) -> dict[str, Any]:
    """What landing will do with a passing batch's rows (counts), for the summary and the report."""
    return {"policy": policy.to_json(), "identical_skipped": len(landed.identical),
            "corrections_replaced": len(landed.conflicting) if policy.corrections == "replace" else 0}
