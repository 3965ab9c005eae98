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
import json
import logging
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.offline import batch_id_of, load_raw_batch, raw_batches_in
from airflow_mlops.core.validation import (
    Contract,
    ExtraRules,
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
    offline_dir: Path | None = None  # the landed history the row-key and backfill rules compare with
    schemas: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # every dataset's column set
    quarantine_log: Path | None = None  # one JSON line per quarantined batch (a retry reads it back)

    @classmethod
    def from_state_dir(cls, *, label_columns: Iterable[str] = (), context: Any = None,
                       now: datetime | None = None, schemas: Mapping[str, tuple[str, ...]] | None = None,
                       quarantine_log: Path | None = None) -> Gate:
        from airflow_mlops.config import paths

        home = paths()
        return cls(reports_root=home.reports_dir / "validation", quarantine_dir=home.quarantine_dir,
                   now=now or datetime.now(UTC), label_columns=tuple(label_columns), context=context,
                   offline_dir=home.offline_dir, schemas=dict(schemas or {}), quarantine_log=quarantine_log)


def frame_batch_id(frame: pd.DataFrame) -> str:
    """Content hash of a DataFrame (values, column names and dtypes), 16 hex digits like a file's batch id."""
    import pandas as pd

    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    return digest.hexdigest()[:16]


def validate_path(path: Path, suite: Mapping[str, Any], gate: Gate,
                  extra_rules: ExtraRules | None = None) -> dict[str, Any]:
    """The full result of one file; an unreadable file fails its file rule without running the suite."""
    frame, problem = load_raw_batch(path)
    batch_id = batch_id_of(path)
    if frame is None:
        rule, reason = problem or ("file_readable", "unknown")
        return unreadable_result(suite, rule, reason, batch_id=batch_id, source=path.name, now=gate.now)
    return validate_frame(frame, suite, now=gate.now, label_columns=gate.label_columns, context=gate.context,
                          batch_id=batch_id, source=path.name, extra_rules=extra_rules)


def check_batch(data: Path | pd.DataFrame, suite: Mapping[str, Any], gate: Gate, *, mode: str | None = None,
                quarantine: bool = True, source: str | None = None, with_lineage: bool = False,
                extra_rules: ExtraRules | None = None) -> dict[str, Any]:
    """Validate, write the report, quarantine a failing batch in fail mode: the XCom-sized entry.

    The entry is `summarize(result)` plus {mode, report: {html, json, relpath, url}, quarantined_to}.
    `with_lineage`: the file is a training-set snapshot whose `<stem>.json` lineage moves with it.
    """
    contract = Contract.from_suite(suite)
    mode = mode or contract.mode
    if isinstance(data, Path):
        result = validate_path(data, suite, gate, extra_rules)
    else:
        result = validate_frame(data, suite, now=gate.now, label_columns=gate.label_columns, context=gate.context,
                                batch_id=frame_batch_id(data), source=source or "dataframe", extra_rules=extra_rules)
    report = write_report(result, gate.reports_root, mode)
    entry = {**summarize(result, TOP_FAILURES), "mode": mode, "report": report, "quarantined_to": None}
    if not result["success"] and mode == "fail" and quarantine:
        target = quarantine_batch(data, contract.dataset, result["batch_id"], report, gate.quarantine_dir,
                                  with_lineage=with_lineage)
        entry["quarantined_to"] = str(target)
        record_quarantine(gate.quarantine_log, entry, contract.dataset)
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


def record_quarantine(log_path: Path | None, entry: Mapping[str, Any], dataset: str) -> None:
    """Append one quarantined batch to the task run's quarantine log (written before anything else can fail)."""
    if log_path is None:
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"dataset": dataset, "source": entry["source"], "batch_id": entry["batch_id"],
                       "quarantined_to": entry["quarantined_to"], "report": entry["report"]["html"]})
    with log_path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def quarantined_before(log_path: Path | None) -> list[dict[str, Any]]:
    """Batches an earlier try of this task run quarantined (empty when none, or no log)."""
    if log_path is None or not log_path.is_file():
        return []
    return [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]


def retry_message(earlier: Sequence[Mapping[str, Any]]) -> str:
    """Why a retried (or cleared) validation task of a run that quarantined data fails again."""
    lines = [f"an earlier try of this run quarantined {len(earlier)} batch(es); a run that found bad data stays "
             f"failed (a retry must not turn a quarantine into a green run). Start a new run: good and corrected "
             f"files in the landing dir are validated and landed then."]
    lines += [f"  - {q['dataset']}/{q['source']} -> {q['quarantined_to']} (report {q['report']})" for q in earlier]
    return "\n".join(lines)


def datasets_in(landing_dir: Path) -> list[str]:
    if not Path(landing_dir).is_dir():
        return []
    return sorted(p.name for p in Path(landing_dir).iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


IN_FLIGHT_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")  # a writer's temp file, renamed when done


def unconsumed_files(landing_dir: Path, datasets: Iterable[str]) -> list[dict[str, str]]:
    """Files under the landing dir that no run will ever pick up, with why and what to do.

    Consumed are `landing/<dataset>/<name>.{parquet,csv}` (any case) for the datasets validated;
    `landing/<dataset>/_landed/` (done) and writers' temp files (in flight) are expected. Everything
    else is reported, hidden and `_` names included: a `.x.parquet` is skipped as a temp file.
    """
    from airflow_mlops.core.offline import LANDED_SUBDIR, RAW_SUFFIXES

    root, wanted, out = Path(landing_dir), set(datasets), []
    if not root.is_dir():
        return []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or path.name.lower().endswith(IN_FLIGHT_SUFFIXES) or \
                (len(rel.parts) > 2 and rel.parts[1] == LANDED_SUBDIR):
            continue
        if len(rel.parts) == 1:
            why = "directly in the landing dir, not in a dataset folder: move it to landing/<dataset>/"
        elif rel.parts[0].startswith((".", "_")):
            why = f"folder '{rel.parts[0]}' starts with '.' or '_', which no dataset may: rename the folder"
        elif rel.parts[0] not in wanted:
            continue  # a dataset not validated in this run: its own run reports it
        elif path.name.startswith((".", "_")):
            why = "hidden or '_' names are skipped as temp files: rename it if it is a batch"
        elif len(rel.parts) > 2:
            why = f"in a subdirectory: only files directly in landing/{rel.parts[0]}/ are read; move it up"
        elif path.suffix.lower() not in RAW_SUFFIXES:
            why = f"extension '{path.suffix or '(none)'}' is not one of {', '.join(RAW_SUFFIXES)}: convert or rename it"
        else:
            continue
        out.append({"file": rel.as_posix(), "reason": why})
    return out


class LandingRules:
    """The rules of one dataset that need more than the batch: landed history, earlier files, other schemas.

    Called once per file in order (`for_file`); a file that passes is remembered (`accept`), so a
    later file of the same run repeating its keys is caught.
    """

    def __init__(self, gate: Gate, suite: Mapping[str, Any], dataset: str) -> None:
        from airflow_mlops.core.offline import landed_batches
        from airflow_mlops.core.plausibility import suite_columns

        self.gate, self.dataset = gate, dataset
        self.own_columns = suite_columns(suite)
        records = landed_batches(gate.offline_dir, dataset) if gate.offline_dir else []
        starts = [r["start"] for r in records if r.get("start")]
        self.landed_since = datetime.fromisoformat(min(starts)) if starts else None
        self.accepted: list[pd.DataFrame] = []
        self.plans: dict[str, dict[str, Any]] = {}
        self._last: pd.DataFrame | None = None

    def for_file(self, path: Path) -> ExtraRules:
        batch_id = batch_id_of(path)

        def rules(frame: pd.DataFrame, contract: Contract) -> tuple[int, list[dict[str, Any]]]:
            from airflow_mlops.core import plausibility, row_keys

            policy = row_keys.RowPolicy.of(contract)
            landed_rows = row_keys.landed_rows(self.gate.offline_dir, policy, frame, exclude_batch=batch_id) \
                if self.gate.offline_dir else None
            landed = row_keys.match_rows(frame, landed_rows, policy.key)
            earlier = _concat(self.accepted)
            in_run = row_keys.match_rows(frame, earlier, policy.key)
            results = [plausibility.backfill_failures(frame, contract, self.landed_since),
                       plausibility.schema_failures(frame, contract, self.own_columns, self.gate.schemas),
                       row_keys.row_failures(frame, policy, landed, in_run)]
            self.plans[batch_id] = row_keys.row_plan(landed, policy)
            self._last = frame.assign(**{row_keys.FILE_COLUMN: f"landing/{self.dataset}/{path.name}"})
            return sum(r[0] for r in results), [f for r in results for f in r[1]]

        return rules

    def accept(self) -> None:
        if self._last is not None:
            self.accepted.append(self._last)
        self._last = None


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame | None:
    if not frames:
        return None
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def validate_landing(landing_dir: Path, load_suite: Callable[[str], Mapping[str, Any] | None], gate: Gate, *,
                     datasets: Iterable[str] | None = None, mode: str | None = None) -> dict[str, Any]:
    """Validate every raw file of `landing_dir/<dataset>/` against the dataset's suite.

    `load_suite(dataset)` returns the suite, None to let the dataset through unvalidated, or raises
    DataValidationFailed (missing suite): that dataset's files stay put and the summary lists the error.
    Beyond the suite, each file is checked against the landed history and the files before it
    (`LandingRules`: row keys, backfill span, wrong-dataset schema).
    Returns {success, files, passed, failed, warned, unvalidated, errors, entries, landable, unconsumed},
    where `landable` lists {dataset, file, batch_id, rows} of every file that may be landed (passed,
    warned or unvalidated; `rows` is the row plan with the dataset's row policy): the content hash lets a
    landing step refuse a file that changed after validation. `unconsumed` lists files no run will read.
    """
    entries: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    unvalidated: list[dict[str, Any]] = []
    names = list(datasets) if datasets is not None else datasets_in(landing_dir)
    for dataset in names:
        files = raw_batches_in(Path(landing_dir) / dataset)
        if not files:
            continue
        try:
            suite = load_suite(dataset)
        except DataValidationFailed as exc:
            errors.append({"dataset": dataset, "files": [p.name for p in files],
                           "error": str(exc) + _did_you_mean(dataset, gate.schemas)})
            continue
        if suite is None:
            log.warning("dataset %s has no suite; %s file(s) pass unvalidated", dataset, len(files))
            unvalidated.extend({"dataset": dataset, "file": p.name, "batch_id": batch_id_of(p)} for p in files)
            continue
        context = LandingRules(gate, suite, dataset)
        for path in files:
            entry = {**check_batch(path, suite, gate, mode=mode, extra_rules=context.for_file(path)),
                     "dataset": dataset}
            if entry["success"] or entry["mode"] == "warn":
                context.accept()
            entry["rows_plan"] = context.plans.get(entry["batch_id"])
            entries.append(entry)
    summary = _landing_summary(entries, errors, unvalidated)
    summary["unconsumed"] = unconsumed_files(landing_dir, names)
    for item in summary["unconsumed"]:
        log.warning("landing/%s is not consumed: %s", item["file"], item["reason"])
    return summary


def _did_you_mean(dataset: str, schemas: Mapping[str, Any]) -> str:
    import difflib

    close = [name for name in schemas if name.lower() == dataset.lower()] or \
        difflib.get_close_matches(dataset, list(schemas), n=1, cutoff=0.6)
    return f" (did you mean landing/{close[0]}/? dataset names are case-sensitive)" if close else ""


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
            "landable": [{"dataset": e["dataset"], "file": e["source"], "batch_id": e["batch_id"],
                          "rows": e.get("rows_plan")} for e in good]
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
