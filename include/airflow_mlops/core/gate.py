"""The validation gate: validate batches, write their reports, quarantine the bad ones, say why.

A batch is a raw file (parquet or CSV) or a DataFrame. In `fail` mode a bad batch is moved to
quarantine with its report beside it; in `warn` mode it stays where it is and only the report and
the summary say what is wrong. Quarantine layout (`quarantine_dir` = `MLOPS_HOME/quarantine`)::

    <dataset>/<file>                the rejected batch (`<stem>.<batch_id><suffix>` when a different
                                    file of that name is already there; a DataFrame is written as
                                    `<batch_id>.parquet`)
    <dataset>/<file>.report.html    its self-contained report
    <dataset>/<file>.result.json    its full result

Reports live under `MLOPS_HOME/reports/validation` (see `core.validation_report`).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.offline import batch_id_of, load_raw_batch, raw_batches_in
from airflow_mlops.core.validation import (
    Contract,
    describe_failure,
    summarize,
    unreadable_result,
    validate_frame,
)
from airflow_mlops.core.validation_report import write_report
from airflow_mlops.exceptions import DataValidationFailed

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

TOP_FAILURES = 5


@dataclass(frozen=True)
class Gate:
    """Where reports and quarantined batches go, the validation time and the labels of every spec."""

    reports_root: Path
    quarantine_dir: Path
    now: datetime
    label_columns: tuple[str, ...] = ()
    context: Any = None  # a GX context to reuse; None builds an in-memory one per batch

    @classmethod
    def from_state_dir(cls, *, label_columns: Iterable[str] = (), context: Any = None,
                       now: datetime | None = None) -> Gate:
        from airflow_mlops.config import paths

        home = paths()
        return cls(reports_root=home.reports_dir / "validation", quarantine_dir=home.quarantine_dir,
                   now=now or datetime.now(UTC), label_columns=tuple(label_columns), context=context)


def frame_batch_id(frame: pd.DataFrame) -> str:
    """Content hash of a DataFrame (values, column names and dtypes), 16 hex digits like a file's batch id."""
    import pandas as pd

    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    return digest.hexdigest()[:16]


def validate_path(path: Path, suite: Mapping[str, Any], gate: Gate) -> dict[str, Any]:
    """The full result of one file; an unreadable file fails its file rule without running the suite."""
    frame, problem = load_raw_batch(path)
    batch_id = batch_id_of(path)
    if frame is None:
        rule, reason = problem or ("file_readable", "unknown")
        return unreadable_result(suite, rule, reason, batch_id=batch_id, source=path.name, now=gate.now)
    return validate_frame(frame, suite, now=gate.now, label_columns=gate.label_columns, context=gate.context,
                          batch_id=batch_id, source=path.name)


def check_batch(data: Path | pd.DataFrame, suite: Mapping[str, Any], gate: Gate, *, mode: str | None = None,
                quarantine: bool = True, source: str | None = None, with_lineage: bool = False) -> dict[str, Any]:
    """Validate, write the report, quarantine a failing batch in fail mode: the XCom-sized entry.

    The entry is `summarize(result)` plus {mode, report: {html, json, relpath, url}, quarantined_to}.
    `with_lineage`: the file is a training-set snapshot whose `<stem>.json` lineage moves with it.
    """
    contract = Contract.from_suite(suite)
    mode = mode or contract.mode
    if isinstance(data, Path):
        result = validate_path(data, suite, gate)
    else:
        result = validate_frame(data, suite, now=gate.now, label_columns=gate.label_columns, context=gate.context,
                                batch_id=frame_batch_id(data), source=source or "dataframe")
    report = write_report(result, gate.reports_root, mode)
    entry = {**summarize(result, TOP_FAILURES), "mode": mode, "report": report, "quarantined_to": None}
    if not result["success"] and mode == "fail" and quarantine:
        target = quarantine_batch(data, contract.dataset, result["batch_id"], report, gate.quarantine_dir,
                                  with_lineage=with_lineage)
        entry["quarantined_to"] = str(target)
    log.log(logging.INFO if result["success"] else logging.WARNING, "%s of %s: %s (%s rows); report %s",
            result["source"], contract.dataset, "passed" if result["success"] else "FAILED", result["rows"],
            report["html"])
    return entry


def quarantine_batch(data: Path | pd.DataFrame, dataset: str, batch_id: str, report: Mapping[str, str],
                     quarantine_dir: Path, *, with_lineage: bool = False) -> Path:
    """Move the file (or write the frame) to `quarantine_dir/<dataset>/` and copy its report beside it."""
    folder = Path(quarantine_dir) / dataset
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, Path):
        target = folder / data.name
        if target.exists() and batch_id_of(target) != batch_id:
            target = folder / f"{data.stem}.{batch_id}{data.suffix}"
        shutil.move(str(data), target)
        companion = data.with_suffix(".json")  # a training-set snapshot's lineage record
        if with_lineage and companion.is_file():
            shutil.move(str(companion), target.with_suffix(".json"))
    else:
        target = folder / f"{batch_id}.parquet"
        data.to_parquet(target, index=False)
    shutil.copyfile(report["html"], folder / f"{target.name}.report.html")
    shutil.copyfile(report["json"], folder / f"{target.name}.result.json")
    log.warning("quarantined %s to %s", getattr(data, "name", "dataframe"), target)
    return target


def datasets_in(landing_dir: Path) -> list[str]:
    if not Path(landing_dir).is_dir():
        return []
    return sorted(p.name for p in Path(landing_dir).iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def validate_landing(landing_dir: Path, load_suite: Callable[[str], Mapping[str, Any] | None], gate: Gate, *,
                     datasets: Iterable[str] | None = None, mode: str | None = None) -> dict[str, Any]:
    """Validate every raw file of `landing_dir/<dataset>/` against the dataset's suite.

    `load_suite(dataset)` returns the suite, None to let the dataset through unvalidated, or raises
    DataValidationFailed (missing suite): that dataset's files stay put and the summary lists the error.
    Returns {success, files, passed, failed, warned, unvalidated, errors, entries, landable}, where
    `landable` lists {dataset, file, batch_id} of every file that may be landed (passed, warned or
    unvalidated): the content hash lets a landing step refuse a file that changed after validation.
    """
    entries: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    unvalidated: list[dict[str, Any]] = []
    for dataset in list(datasets) if datasets is not None else datasets_in(landing_dir):
        files = raw_batches_in(Path(landing_dir) / dataset)
        if not files:
            continue
        try:
            suite = load_suite(dataset)
        except DataValidationFailed as exc:
            errors.append({"dataset": dataset, "files": [p.name for p in files], "error": str(exc)})
            continue
        if suite is None:
            log.warning("dataset %s has no suite; %s file(s) pass unvalidated", dataset, len(files))
            unvalidated.extend({"dataset": dataset, "file": p.name, "batch_id": batch_id_of(p)} for p in files)
            continue
        entries.extend({**check_batch(path, suite, gate, mode=mode), "dataset": dataset} for path in files)
    return _landing_summary(entries, errors, unvalidated)


def _landing_summary(entries: list[dict[str, Any]], errors: list[dict[str, Any]],
                     unvalidated: list[dict[str, Any]]) -> dict[str, Any]:
    def names(items: Iterable[Mapping[str, Any]], key: str = "source") -> list[str]:
        return [f"{e['dataset']}/{e[key]}" for e in items]

    failed = [e for e in entries if not e["success"] and e["mode"] == "fail"]
    good = [e for e in entries if e not in failed]
    return {"success": not failed and not errors, "files": len(entries) + len(unvalidated),
            "passed": names(e for e in entries if e["success"]), "failed": names(failed),
            "warned": names(e for e in good if not e["success"]), "unvalidated": names(unvalidated, "file"),
            "errors": errors, "entries": entries,
            "landable": [{"dataset": e["dataset"], "file": e["source"], "batch_id": e["batch_id"]} for e in good]
            + unvalidated}


def batch_message(entry: Mapping[str, Any], *, indent: str = "") -> str:
    """Why a batch failed: counts, the top failures (column, rule, unexpected count) and where the report is."""
    stats = entry["statistics"]
    lines = [f"{indent}batch {entry['source']} of dataset '{entry['dataset']}' broke suite '{entry['suite']}': "
             f"{stats['unsuccessful_rules']} of {stats['evaluated_rules']} rules failed ({entry['rows']} rows)"]
    lines += [f"{indent}  - {describe_failure(f)}" for f in entry["failures"]]
    more = entry["failure_count"] - len(entry["failures"])
    lines += [f"{indent}  - ... and {more} more failure(s) in the report"] if more > 0 else []
    lines.append(f"{indent}  full report: {entry['report']['html']} (task link \"Validation report\": "
                 f"{entry['report']['url']}; result JSON {entry['report']['json']})")
    if entry.get("quarantined_to"):
        lines.append(f"{indent}  quarantined to {entry['quarantined_to']} (report beside it)")
    return "\n".join(lines)


def landing_message(summary: Mapping[str, Any]) -> str:
    """The DataValidationFailed message of a landing-dir run: every bad file, every dataset without a suite."""
    failed = [e for e in summary["entries"] if not e["success"] and e["mode"] == "fail"]
    waiting = len(summary["passed"]) + len(summary["warned"]) + len(summary["unvalidated"])
    lines = [f"{len(failed)} of {summary['files']} raw batch(es) broke their data contract and "
             f"{len(summary['errors'])} dataset(s) cannot be validated; nothing is landed in this run "
             f"({waiting} good file(s) stay in the landing dir and land on the next run)."]
    lines += [batch_message(e, indent="  ") for e in failed]
    lines += [f"  dataset '{err['dataset']}' ({', '.join(err['files'])}): {err['error']}" for err in summary["errors"]]
    lines.append("Fix the data at its source and drop corrected files into landing/<dataset>/; the summary is in "
                 "XCom 'validation'.")
    return "\n".join(lines)
