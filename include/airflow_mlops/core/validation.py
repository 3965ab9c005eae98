"""Data contracts: a GX expectation suite plus the rules GX has no built-in for, run on one batch.

A suite is GX JSON in `include/expectations/<name>.json` (`core.suites`: `suite.to_json_dict()`,
read back with `ExpectationSuite(**d)`). Its `meta["airflow_mlops"]` is the *contract* (`Contract`):
dataset, key and timestamp columns, label, leakage settings and the default `mode` (`fail` | `warn`).

Rules outside GX are reported beside GX results with the same fields (`rule`, `column`, ...):

- `timestamps_tz_utc` — every contract timestamp column is a tz-aware UTC datetime (any unit).
  Naive timestamps make point-in-time joins depend on the reader's time zone.
- `timestamps_not_in_future` — no value later than validation time + `future_tolerance_seconds`.
- `no_label_leakage` — (a) *name*: no column other than the contract's own label is named like a
  label: the contract's `label_column`, its `forbidden_columns` and the labels of every model spec
  (`label_columns`, passed by the DAG factory), compared case-, `_`-, `-`- and space-insensitively.
  So a feature table never carries any model's label. (b) *correlation*, for batches that carry
  their label (label tables, training sets): no numeric non-key, non-timestamp column whose
  |Pearson r| with the label is >= `max_label_correlation` (default 0.95) — such a column restates
  the outcome and was computed after it.
- `file_not_empty`, `csv_utf8`, `file_readable` — the file could not be read (`core.offline`).
- `timestamps_not_before_valid_from`, `no_degenerate_columns` — plausibility (`core.plausibility`).
- With the landed history and the run's other files (`core.gate.LandingRules`, landing only):
  `row_key_unique`, `no_conflicting_corrections` (`core.row_keys`), `timestamps_within_backfill_span`
  and `schema_matches_dataset` (`core.plausibility`).

Results are plain JSON: a *failure* is {rule, column, kwargs, unexpected_count, unexpected_percent,
sample, detail, source: gx|contract}; a *result* is {suite, dataset, batch_id, source, success,
rows, columns, validated_at, statistics, failures, gx}. Suites are built by `suite_from_reference`
(the `airflow-mlops suite` command) and then reviewed by hand.
GX is imported inside functions only, with progress bars off and analytics off.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.suites import CONTRACT_KEY, Contract, load_suite, save_suite, suite_from_reference, suite_path
from airflow_mlops.exceptions import DataValidationFailed

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CONTRACT_KEY", "Contract", "contract_failures", "describe_failure", "gx_context", "leakage_failures",
    "load_suite", "run_expectations", "save_suite", "suite_from_reference", "suite_path", "summarize",
    "timestamp_failures", "unreadable_result", "validate_frame",
]

RULE_TZ_UTC = "timestamps_tz_utc"
RULE_NOT_FUTURE = "timestamps_not_in_future"
RULE_LEAKAGE = "no_label_leakage"
ONCE_RULES = (RULE_LEAKAGE, "row_key_unique")  # one rule however many columns / places break it
FILE_RULES = ("file_not_empty", "csv_utf8", "file_readable")
TABLE_RULES = ("expect_table_columns_to_match_set", "expect_table_row_count_to_be_between")
SAMPLE_SIZE = 5
_UTC_NAMES = {"UTC", "Etc/UTC", "GMT", "Etc/GMT", "Z"}


# -- rules GX has no built-in for --------------------------------------------------------------------------
def failure(rule: str, column: str | None, kwargs: Mapping[str, Any] | None = None, *,
            unexpected_count: int | None = None, rows: int = 0, sample: Iterable[Any] = (), detail: str = "",
            source: str = "contract") -> dict[str, Any]:
    percent = round(100.0 * unexpected_count / rows, 4) if unexpected_count is not None and rows else None
    return {"rule": rule, "column": column, "kwargs": dict(kwargs or {}), "unexpected_count": unexpected_count,
            "unexpected_percent": percent, "sample": list(sample)[:SAMPLE_SIZE], "detail": detail, "source": source}


def _is_utc(tz: Any) -> bool:
    if tz is None:
        return False
    if isinstance(tz, timezone):
        return tz.utcoffset(None) == timedelta(0)
    return str(tz) in _UTC_NAMES


def timestamp_failures(frame: pd.DataFrame, column: str, now: datetime, tolerance_s: int) -> list[dict[str, Any]]:
    """`timestamps_tz_utc` and `timestamps_not_in_future` for one column."""
    import pandas as pd

    series, rows = frame[column], len(frame)
    is_datetime = pd.api.types.is_datetime64_any_dtype(series)
    tz = getattr(series.dt, "tz", None) if is_datetime else None
    if not _is_utc(tz):
        why = ("not a timestamp column" if not is_datetime else
               "naive timestamps (no time zone) are ambiguous" if tz is None else f"time zone {tz}")
        return [failure(RULE_TZ_UTC, column, {"expected": "datetime64[<unit>, UTC]"}, unexpected_count=rows, rows=rows,
                        sample=[str(v) for v in series.dropna().head(SAMPLE_SIZE)],
                        detail=f"dtype {series.dtype}: {why}; write tz-aware UTC timestamps")]
    limit = pd.Timestamp(now).tz_convert("UTC") + pd.Timedelta(seconds=tolerance_s)
    late = series[series > limit]
    if late.empty:
        return []
    return [failure(RULE_NOT_FUTURE, column, {"now": limit.isoformat(), "tolerance_seconds": tolerance_s},
                    unexpected_count=len(late), rows=rows,
                    sample=[v.isoformat() for v in late.sort_values(ascending=False).head(SAMPLE_SIZE)],
                    detail=f"latest {late.max().isoformat()} is after validation time {limit.isoformat()}")]


def _normalized(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def leakage_failures(frame: pd.DataFrame, contract: Contract,
                     label_columns: Iterable[str] = ()) -> list[dict[str, Any]]:
    """`no_label_leakage`: columns named like a label, or (with the label present) nearly equal to it."""
    own = contract.label_column
    labels = {_normalized(c): c for c in (*label_columns, *contract.forbidden_columns, *([own] if own else []))}
    out = []
    for column in frame.columns:
        hit = labels.get(_normalized(column))
        if hit is not None and column != own:
            what = "a feature table must not carry a model's label" if own is None else \
                "a label table must not carry a second copy of a label"
            out.append(failure(RULE_LEAKAGE, str(column), {"label": hit, "reason": "name"},
                               detail=f"column '{column}' is named like the label '{hit}': {what}"))
    if own is not None and own in frame.columns:
        out.extend(_correlated_with_label(frame, contract))
    return out


def _correlated_with_label(frame: pd.DataFrame, contract: Contract) -> list[dict[str, Any]]:
    import pandas as pd

    label = pd.to_numeric(frame[contract.label_column], errors="coerce")
    if label.nunique() < 2:
        return []
    skip = {contract.label_column, *contract.key_columns, *contract.all_timestamp_columns}
    out = []
    for column in frame.columns:
        values = frame[column]
        if column in skip or not pd.api.types.is_numeric_dtype(values) or values.nunique() < 2:
            continue
        r = values.astype(float).corr(label.astype(float))
        if pd.notna(r) and abs(r) >= contract.max_label_correlation:
            out.append(failure(RULE_LEAKAGE, str(column), {"label": contract.label_column, "reason": "correlation",
                                                           "abs_corr": round(abs(float(r)), 4),
                                                           "max_abs_corr": contract.max_label_correlation},
                               detail=f"|r| = {abs(r):.3f} with the label '{contract.label_column}' "
                                      f"(limit {contract.max_label_correlation}): it restates the outcome"))
    return out


def contract_failures(frame: pd.DataFrame, contract: Contract, *, now: datetime,
                      label_columns: Iterable[str] = ()) -> tuple[int, list[dict[str, Any]]]:
    """(rules evaluated, failures) of the contract rules; absent columns are left to the column-set rule."""
    from airflow_mlops.core.plausibility import degenerate_failures, valid_from_failures

    evaluated, out = 1, leakage_failures(frame, contract, label_columns)
    for column in contract.all_timestamp_columns:
        if column in frame.columns:
            evaluated += 2
            out.extend(timestamp_failures(frame, column, now, contract.future_tolerance_seconds))
    for rule in (valid_from_failures, degenerate_failures):
        count, found = rule(frame, contract)
        evaluated, out = evaluated + count, [*out, *found]
    return evaluated, out


# -- GX --------------------------------------------------------------------------------------------------
def import_gx() -> Any:
    """`great_expectations`, with its import-time INFO chatter (docs-decorator registration) kept out of task logs."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    with warnings.catch_warnings():  # its own imports of deprecated stdlib modules
        warnings.simplefilter("ignore", DeprecationWarning)
        import great_expectations

    return great_expectations


def gx_context() -> Any:
    """An in-memory GX context: no files, no analytics, no progress bars, no network."""
    gx = import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                               analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False))
    return gx.get_context(project_config=config, mode="ephemeral")


def run_expectations(frame: pd.DataFrame, suite: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """Run a suite (JSON) on a DataFrame; the GX result as JSON (SUMMARY format, samples of 5)."""
    gx = import_gx()
    from great_expectations.exceptions import GreatExpectationsError

    try:
        gx_suite = gx.ExpectationSuite(**copy.deepcopy(dict(suite)))
    except (GreatExpectationsError, ValueError, TypeError, KeyError) as exc:
        raise DataValidationFailed(f"expectation suite '{suite.get('name')}' is not a valid GX suite: {exc}") from None
    context = context if context is not None else gx_context()
    name = f"airflow_mlops_{uuid.uuid4().hex[:12]}"
    source = context.data_sources.add_pandas(name)
    try:
        batch_definition = source.add_dataframe_asset("batch").add_batch_definition_whole_dataframe("batch")
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(gx_suite, result_format={"result_format": "SUMMARY",
                                                         "partial_unexpected_count": SAMPLE_SIZE})
        return dict(result.to_json_dict())
    finally:
        # A shared context keeps every datasource — and the DataFrame it holds — until deleted:
        # 6 x 1M-row batches grew a task from 0.4 to 0.9 GB (benchmarks/validation.py probe).
        context.data_sources.delete(name)


def gx_failures(result: Mapping[str, Any], rows: int) -> list[dict[str, Any]]:
    """The failed GX expectations as failures (one per expectation)."""
    out = []
    for item in result.get("results", []):
        if item.get("success"):
            continue
        config, res = item["expectation_config"], item.get("result") or {}
        kwargs = {k: v for k, v in config.get("kwargs", {}).items() if k != "batch_id"}
        error = item.get("exception_info") or {}
        detail = str(error.get("exception_message") or "") if error.get("raised_exception") else _observed(res)
        out.append(failure(config["type"], _column_of(kwargs, res), kwargs,
                           unexpected_count=res.get("unexpected_count"), rows=rows,
                           sample=res.get("partial_unexpected_list") or [], detail=detail, source="gx"))
    return out


def _column_of(kwargs: Mapping[str, Any], res: Mapping[str, Any]) -> str | None:
    if "column" in kwargs:
        return str(kwargs["column"])
    if "column_list" in kwargs:
        return "+".join(map(str, kwargs["column_list"]))
    mismatched = (res.get("details") or {}).get("mismatched") or {}
    names = [*(mismatched.get("missing") or []), *(mismatched.get("unexpected") or [])]
    return ", ".join(map(str, names)) or None


def _observed(res: Mapping[str, Any]) -> str:
    mismatched = (res.get("details") or {}).get("mismatched")
    if mismatched:
        missing, unexpected = mismatched.get("missing") or [], mismatched.get("unexpected") or []
        return f"missing columns {missing}, unexpected columns {unexpected}"
    if "observed_value" in res:
        return f"observed {json.dumps(res['observed_value'], default=str)[:200]}"
    return ""


# -- one batch ---------------------------------------------------------------------------------------------
FIRST_RULES = ("schema_matches_dataset",)  # explains the failures that follow from it (a wrong-dir file)


def _order(f: Mapping[str, Any]) -> tuple[int, int]:
    rank = -1 if f["rule"] in FIRST_RULES else 0 if f["rule"] in FILE_RULES or f["rule"] in TABLE_RULES else \
        1 if f["source"] == "contract" else 2
    return rank, -(f["unexpected_count"] or 0)


ExtraRules = Callable[["pd.DataFrame", Contract], tuple[int, list[dict[str, Any]]]]


def validate_frame(frame: pd.DataFrame, suite: Mapping[str, Any], *, now: datetime | None = None,
                   label_columns: Iterable[str] = (), context: Any = None, batch_id: str = "",
                   source: str = "dataframe", extra_rules: ExtraRules | None = None) -> dict[str, Any]:
    """Contract rules + GX suite on one DataFrame: the full result (JSON-able), failures worst first.

    `extra_rules(frame, contract)` adds rules that need context beyond the batch (the landed history,
    the other files of a run, the other datasets' schemas: `core.gate`); it returns (evaluated, failures).
    """
    contract = Contract.from_suite(suite)
    now = now or datetime.now(UTC)
    evaluated, failures = contract_failures(frame, contract, now=now, label_columns=label_columns)
    if extra_rules is not None:
        more, found = extra_rules(frame, contract)
        evaluated, failures = evaluated + more, [*failures, *found]
    gx_result = run_expectations(frame, suite, context)
    failures = sorted([*failures, *gx_failures(gx_result, len(frame))], key=_order)
    gx_stats = gx_result.get("statistics") or {}
    total = evaluated + int(gx_stats.get("evaluated_expectations") or 0)
    # contract rules: tz and not-future count per column, leakage and row-key uniqueness once each
    broken = {(f["rule"], None if f["rule"] in ONCE_RULES else f["column"]) for f in failures
              if f["source"] == "contract"}
    failed_rules = len(broken) + int(gx_stats.get("unsuccessful_expectations") or 0)
    return {**_header(suite, contract, batch_id, source, now), "success": not failures, "rows": len(frame),
            "columns": [str(c) for c in frame.columns], "failures": failures, "gx": gx_result,
            "statistics": _statistics(total, failed_rules)}


def unreadable_result(suite: Mapping[str, Any], rule: str, reason: str, *, batch_id: str, source: str,
                      now: datetime | None = None) -> dict[str, Any]:
    """The result of a file that could not be read at all (empty, not UTF-8, broken)."""
    contract = Contract.from_suite(suite)
    return {**_header(suite, contract, batch_id, source, now or datetime.now(UTC)), "success": False, "rows": 0,
            "columns": [], "failures": [failure(rule, None, {"file": source}, detail=reason)], "gx": {},
            "statistics": _statistics(1, 1)}


def _header(suite: Mapping[str, Any], contract: Contract, batch_id: str, source: str, now: datetime) -> dict[str, Any]:
    return {"suite": suite.get("name"), "dataset": contract.dataset, "batch_id": batch_id, "source": source,
            "validated_at": now.astimezone(UTC).isoformat()}


def _statistics(evaluated: int, failed: int) -> dict[str, Any]:
    return {"evaluated_rules": evaluated, "successful_rules": evaluated - failed, "unsuccessful_rules": failed,
            "success_percent": round(100.0 * (evaluated - failed) / evaluated, 2) if evaluated else 100.0}


def describe_failure(f: Mapping[str, Any]) -> str:
    """One line: column, rule, its arguments, unexpected count and a sample (or the detail)."""
    args = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in f["kwargs"].items()
                     if k not in ("column", "column_list", "column_set"))
    where = f"column '{f['column']}'" if f["column"] else "file" if f["rule"] in FILE_RULES else "table"
    text = f"{where}: rule {f['rule']}" + (f" ({args[:160]})" if args else "")
    if f["unexpected_count"] is not None:
        text += f": {f['unexpected_count']} unexpected"
        text += f" ({f['unexpected_percent']:.2f} %)" if f["unexpected_percent"] is not None else ""
        text += f", e.g. {json.dumps(f['sample'][:3], default=str)[:160]}" if f["sample"] else ""
    return text + (f" — {f['detail'][:400]}" if f["detail"] else "")


def summarize(result: Mapping[str, Any], top: int = 5) -> dict[str, Any]:
    """The XCom-sized part of a result: statistics and the top failures (samples of 3)."""
    keep = ("suite", "dataset", "batch_id", "source", "success", "rows", "validated_at", "statistics")
    failures = [{**{k: v for k, v in f.items() if k != "sample"}, "sample": f["sample"][:3]}
                for f in result["failures"][:top]]
    return {**{k: result[k] for k in keep}, "failures": failures, "failure_count": len(result["failures"])}
