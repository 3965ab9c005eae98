"""The offline store: raw batches landed as date-partitioned parquet that Feast (duckdb) reads.

Layout, one directory per dataset::

    <offline_dir>/<dataset>/date=YYYY-MM-DD/<batch_id>.parquet   one file per batch and UTC day
    <offline_dir>/<dataset>/_batches/<batch_id>.json             commit record of a landed batch

- `batch_id` is a short sha256 of the raw file's bytes, so landing the same batch twice writes
  nothing the second time (`already_landed`).
- Every file is written to a hidden temp file and renamed with `os.replace`, so a reader (duckdb's
  `**/*.parquet` glob, pyarrow's hive dataset) never sees a half-written file. The commit record is
  written last: a crash in between is repaired by the next landing of the same batch, which only
  writes the partitions that are still missing.
- Timestamps are written as `timestamp[us, tz=UTC]`: duckdb >= 2 fails on ns tz timestamps and
  naive timestamps make point-in-time joins depend on the reader's time zone.
- The hive `date=` directory shows up as an extra `date` column for duckdb's glob reader; Feast
  only selects the columns it needs, so it is harmless (checked by tests/integration).
- Raw batches are parquet or CSV (`RAW_SUFFIXES`). CSV is strict UTF-8 (a leading BOM is allowed)
  and has no types: a column whose every non-empty value is an ISO 8601 date-time is read as a
  timestamp (tz-aware when the values carry an offset or `Z`; naive otherwise, which the
  validation gate rejects). `load_raw_batch` names the rule a file breaks when it cannot be read:
  `file_not_empty`, `csv_utf8` or `file_readable`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import DataValidationFailed

if TYPE_CHECKING:
    import pandas as pd

    from airflow_mlops.core.row_keys import RowPolicy

log = logging.getLogger(__name__)

TIMESTAMP_COLUMN = "event_timestamp"
PARTITION_KEY = "date"
BATCH_ID_LENGTH = 16
LANDED_SUBDIR = "_landed"
MANIFEST_SUBDIR = "_batches"
RAW_SUFFIXES = (".parquet", ".csv")
RULE_NOT_EMPTY = "file_not_empty"
RULE_UTF8 = "csv_utf8"
RULE_READABLE = "file_readable"
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$")


def batch_id_of(src: Path) -> str:
    """Short sha256 of the file content: the same bytes always get the same id."""
    digest = hashlib.sha256()
    with src.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:BATCH_ID_LENGTH]


def atomic_write_bytes(target: Path, write: Any) -> None:
    """Call `write(tmp_path)`, then rename into place; readers see the old or the new file, never half.

    The temp file starts with a dot and lives in the target's directory: globs like `*.parquet`
    and pyarrow datasets skip it, and `os.replace` stays on one file system (atomic).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def normalize_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    """Every datetime column as tz-aware UTC with microsecond precision; naive values are read as UTC."""
    import pandas as pd

    out = frame.copy()
    for column in out.columns:
        series = out[column]
        if not pd.api.types.is_datetime64_any_dtype(series):
            continue
        if getattr(series.dt, "tz", None) is None:
            series = series.dt.tz_localize("UTC")
        out[column] = series.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return out


def raw_batches_in(folder: Path) -> list[Path]:
    """The raw batch files (`RAW_SUFFIXES`) directly in `folder`, by name; hidden and temp files are skipped."""
    if not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in RAW_SUFFIXES and not p.name.startswith((".", "_")))


def load_raw_batch(src: Path) -> tuple[pd.DataFrame | None, tuple[str, str] | None]:
    """Read a parquet or CSV batch: (frame, None), or (None, (rule, reason)) when the file cannot be read."""
    import pandas as pd

    src = Path(src)
    if src.stat().st_size == 0:
        return None, (RULE_NOT_EMPTY, "the file is empty (0 bytes)")
    try:
        if src.suffix.lower() == ".csv":
            return _read_csv(src)
        return pd.read_parquet(src), None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid and pandas' ParserError are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, (RULE_READABLE, f"cannot be read as {src.suffix.lstrip('.') or 'parquet'}: {reason}")


def _read_csv(src: Path) -> tuple[pd.DataFrame | None, tuple[str, str] | None]:
    import pandas as pd

    raw = src.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (RULE_UTF8, f"byte {exc.start} (0x{raw[exc.start]:02x}) is not valid UTF-8; "
                                 f"re-export the CSV as UTF-8")
    frame = pd.read_csv(io.StringIO(text.removeprefix("\ufeff")))
    for column in frame.columns:
        values = frame[column].dropna()
        if pd.api.types.is_string_dtype(frame[column]) and len(values) and values.astype(str).str.match(
                _ISO_DATETIME).all():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # mixed offsets: pandas warns and returns objects
                parsed = pd.to_datetime(frame[column], format="ISO8601", errors="coerce")
            if pd.api.types.is_datetime64_any_dtype(parsed):
                frame[column] = parsed
    return frame, None


def read_raw_batch(src: Path) -> pd.DataFrame:
    """`load_raw_batch`, raising DataValidationFailed (naming the file and the rule) when it cannot be read."""
    frame, problem = load_raw_batch(src)
    if frame is None:
        rule, reason = problem or (RULE_READABLE, "unknown")
        raise DataValidationFailed(f"raw batch {src}: rule {rule}: {reason}")
    return frame


def _read_batch(src: Path, dataset: str) -> pd.DataFrame:
    frame = read_raw_batch(src)
    if TIMESTAMP_COLUMN not in frame.columns:
        raise DataValidationFailed(
            f"batch {src} of dataset '{dataset}' has no '{TIMESTAMP_COLUMN}' column (columns: "
            f"{sorted(frame.columns)}); the offline store partitions by it and Feast joins on it. "
            f"Add the column (UTC event time) and land the file again."
        )
    if PARTITION_KEY in frame.columns:
        raise DataValidationFailed(
            f"batch {src} of dataset '{dataset}' has a '{PARTITION_KEY}' column, which clashes with the "
            f"hive partition directory 'date=YYYY-MM-DD' of the offline store; rename the column."
        )
    frame = normalize_timestamps(frame)
    if frame[TIMESTAMP_COLUMN].isna().any():
        raise DataValidationFailed(
            f"batch {src} of dataset '{dataset}' has {int(frame[TIMESTAMP_COLUMN].isna().sum())} rows "
            f"without '{TIMESTAMP_COLUMN}'; every row needs an event time. Fix the batch and land it again."
        )
    return frame


def _write_partition(part: pd.DataFrame, target: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False)
    atomic_write_bytes(target, lambda tmp: pq.write_table(table, tmp))


def _manifest_path(offline_dir: Path, dataset: str, batch_id: str) -> Path:
    return offline_dir / dataset / MANIFEST_SUBDIR / f"{batch_id}.json"


def land_batch(src: Path, dataset: str, *, offline_dir: Path, policy: RowPolicy | None = None) -> dict[str, Any]:
    """Land one raw parquet or CSV batch into the offline store (atomic, idempotent).

    With the dataset's row `policy` (`core.row_keys`), rows whose key is already landed with the
    same values are skipped (counted), a key already landed with other values is replaced in place
    under `corrections: replace` and refused otherwise, and a key repeated in the batch is refused:
    the store never holds two rows with one key. Without a policy (a dataset without a suite) rows
    are appended as they are.

    Returns {dataset, batch_id, rows, start, end, files, identical_skipped, corrections_replaced,
    corrected_files, already_landed}; `start`/`end` are the ISO UTC bounds of the batch's event
    timestamps, `files` the partition files (relative to `offline_dir`), `rows` the rows written.
    """
    src, offline_dir = Path(src), Path(offline_dir)
    batch_id = batch_id_of(src)
    manifest = _manifest_path(offline_dir, dataset, batch_id)
    if manifest.exists():
        record = json.loads(manifest.read_text())
        log.info("batch %s of %s (%s) was already landed; nothing written", batch_id, dataset, src.name)
        return {**record, "already_landed": True}
    frame = _read_batch(src, dataset).reset_index(drop=True)
    start, end = (frame[TIMESTAMP_COLUMN].min().isoformat(), frame[TIMESTAMP_COLUMN].max().isoformat()) \
        if len(frame) else (None, None)
    outcome: dict[str, Any] = {"identical_skipped": 0, "corrections_replaced": 0, "corrected_files": [],
                               "corrected_since": None}
    if policy is not None:
        frame, outcome = apply_row_policy(frame, policy, src, offline_dir, batch_id)
    days = frame[TIMESTAMP_COLUMN].dt.strftime("%Y-%m-%d")
    files = []
    for day, part in frame.groupby(days, sort=True):
        target = offline_dir / dataset / f"{PARTITION_KEY}={day}" / f"{batch_id}.parquet"
        if not target.exists():  # a crashed earlier landing may have written some partitions already
            _write_partition(part, target)
        files.append(str(target.relative_to(offline_dir)))
    record = {
        "dataset": dataset,
        "batch_id": batch_id,
        "source": src.name,
        "rows": len(frame),
        "start": start,
        "end": end,
        "files": files,
        **outcome,
    }
    atomic_write_bytes(manifest, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))
    log.info("landed batch %s of %s: %s rows in %s partition(s); %s identical row(s) skipped, %s corrected",
             batch_id, dataset, record["rows"], len(files), outcome["identical_skipped"],
             outcome["corrections_replaced"])
    return {**record, "already_landed": False}


def apply_row_policy(frame: pd.DataFrame, policy: RowPolicy, src: Path, offline_dir: Path,
                     batch_id: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows of `frame` still to append, after skipping identical rows and replacing corrected ones in place."""
    from airflow_mlops.core.row_keys import landed_rows, match_rows

    landed = landed_rows(offline_dir, policy, frame, exclude_batch=batch_id)
    matches = match_rows(frame, landed, policy.key)
    where = f"batch {src.name} of dataset '{policy.dataset}'"
    if matches.repeated_in_batch:
        raise DataValidationFailed(f"{where} repeats {len(matches.repeated_in_batch)} row key(s) "
                                   f"({'+'.join(policy.key)}); nothing landed. Keep one row per key.")
    if matches.conflicting and policy.corrections != "replace":
        raise DataValidationFailed(
            f"{where}: {len(matches.conflicting)} row key(s) ({'+'.join(policy.key)}) are already landed with other "
            f"values; nothing landed. Set corrections: replace in the dataset's contract to replace them, or drop "
            f"the rows.")
    if matches.identical and policy.duplicates != "skip_existing":
        log.warning("%s: %s row(s) are already landed with the same values; skipped so the store keeps one row "
                    "per key (duplicates: %s)", where, len(matches.identical), policy.duplicates)
    corrected = _replace_in_place(frame, matches.conflicting, matches.where, policy, offline_dir)
    keep = frame.drop(index=[*matches.identical, *matches.conflicting])
    since = frame.loc[matches.conflicting, TIMESTAMP_COLUMN].min() if matches.conflicting else None
    return keep, {"identical_skipped": len(matches.identical), "corrections_replaced": len(matches.conflicting),
                  "corrected_files": corrected, "corrected_since": since.isoformat() if since is not None else None}


def _replace_in_place(frame: pd.DataFrame, positions: list[int], where: dict[int, str], policy: RowPolicy,
                      offline_dir: Path) -> list[str]:
    """Write the corrected rows' values into the partition files holding them: one atomic rename per file.

    A key's row is swapped with its new values in a single rename, so a reader sees the old row or
    the new one, never both and never neither.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    by_file: dict[str, list[int]] = {}
    for position in positions:
        by_file.setdefault(where[position], []).append(position)
    for relpath, rows in sorted(by_file.items()):
        path = Path(offline_dir) / relpath
        table = pq.read_table(path)
        old = table.to_pandas()
        new = frame.iloc[rows].set_index(list(policy.key))
        keyed = old.set_index(list(policy.key))
        columns = [c for c in new.columns if c in keyed.columns]
        for column in columns:
            keyed.loc[new.index, column] = new[column]
        updated = keyed.reset_index()[list(old.columns)]
        try:
            out = pa.Table.from_pandas(updated, schema=table.schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            raise DataValidationFailed(f"correcting {len(rows)} row(s) of {relpath}: the new values do not fit its "
                                       f"column types ({exc}); nothing replaced") from None
        atomic_write_bytes(path, lambda tmp, out=out: pq.write_table(out, tmp))
        log.warning("replaced %s corrected row(s) of dataset '%s' in %s (corrections: replace)", len(rows),
                    policy.dataset, relpath)
    return sorted(by_file)


def land_landing_dir(
    landing_dir: Path, offline_dir: Path, *, datasets: list[str] | None = None,
    allowed_batch_ids: set[str] | None = None, policies: dict[str, RowPolicy] | None = None,
) -> dict[str, Any]:
    """Land every `landing/<dataset>/*.{parquet,csv}`; each landed raw file moves to `landing/<dataset>/_landed/`.

    `allowed_batch_ids` restricts landing to content the validation gate passed: a file dropped (or
    rewritten) after validation has another id and waits for the next run's gate.
    Returns {batches: [land_batch results], landed: n new, already_landed: n, rows: new rows,
    datasets: [names seen], deferred: [files left for the next gate]}.
    """
    landing_dir, offline_dir = Path(landing_dir), Path(offline_dir)
    names = datasets if datasets is not None else _datasets_in(landing_dir)
    batches, deferred = [], []
    for dataset in names:
        for src in raw_batches_in(landing_dir / dataset):
            if allowed_batch_ids is not None and batch_id_of(src) not in allowed_batch_ids:
                deferred.append(f"{dataset}/{src.name}")
                continue
            result = land_batch(src, dataset, offline_dir=offline_dir, policy=(policies or {}).get(dataset))
            _move_to_landed(src, result["batch_id"])
            batches.append(result)
    new = [b for b in batches if not b["already_landed"]]
    return {
        "datasets": list(names),
        "batches": batches,
        "landed": len(new),
        "already_landed": len(batches) - len(new),
        "rows": sum(b["rows"] for b in new),
        "identical_skipped": sum(b.get("identical_skipped", 0) for b in new),
        "corrections_replaced": sum(b.get("corrections_replaced", 0) for b in new),
        # earliest event time of a corrected row per dataset: materialization must redo that window
        "corrected_since": {d: min(b["corrected_since"] for b in new if b["dataset"] == d and b.get("corrected_since"))
                            for d in {b["dataset"] for b in new if b.get("corrected_since")}},
        "deferred": deferred,
    }


def _datasets_in(landing_dir: Path) -> list[str]:
    if not landing_dir.is_dir():
        return []
    return sorted(p.name for p in landing_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def _move_to_landed(src: Path, batch_id: str) -> None:
    # Keep the raw file (audit trail; re-landing it is a no-op) but out of the next run's glob.
    # A different file dropped under a reused name must not overwrite the earlier audit copy.
    done = src.parent / LANDED_SUBDIR
    done.mkdir(exist_ok=True)
    target = done / src.name
    if target.exists() and batch_id_of(target) != batch_id:
        target = done / f"{src.stem}.{batch_id}{src.suffix}"
    shutil.move(str(src), target)


def landed_batches(offline_dir: Path, dataset: str) -> list[dict[str, Any]]:
    """Commit records of every batch landed for `dataset`, oldest event time first."""
    folder = Path(offline_dir) / dataset / MANIFEST_SUBDIR
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return sorted(records, key=lambda r: (r.get("start") or "", r["batch_id"]))


def partitions_between(dataset_dir: Path, start: str | None, end: str | None) -> list[str]:
    """The partition directories `<dataset_dir>/date=<day>` whose day lies in [start, end] (ISO times): what
    a reader of that time window opened (the OpenLineage inputs of a training set)."""
    if not start or not end or not Path(dataset_dir).is_dir():
        return []
    first, last = str(start)[:10], str(end)[:10]
    return sorted(str(d) for d in Path(dataset_dir).glob(f"{PARTITION_KEY}=*")
                  if d.is_dir() and first <= d.name.split("=", 1)[1] <= last)


def batch_id_from_file(path: str | Path) -> str:
    """The batch id a partition file was written by (its file name without `.parquet`)."""
    return Path(path).stem
