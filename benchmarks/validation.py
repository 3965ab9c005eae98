"""Great Expectations validation of the demo `rides` table scaled up vs the same checks in plain pandas.

The batch is `core.demo_data.rides` (seeded) with `--rows` rows. The suite, first found of:
1. `include/expectations/rides.json` (the project's reviewed suite, via `core.validation.load_suite`);
2. `core.validation.suite_from_reference` profiled on the clean batch (the `airflow-mlops suite` path);
3. a suite built here in code (if `core.validation` is not importable), run with a plain GX context.
It has ~20 expectations: exact column set, row count, compound uniqueness (driver_id +
event_timestamp), ride_id unique, not-null, dtypes, numeric ranges, label in {0, 1}.

Methods, timed on the same in-memory frame, interleaved, median of `--repeat` after a warm-up:
- `validate_frame`: the project's gate (contract rules + GX suite; a fresh ephemeral GX context per
  call, as a task does);
- `run_expectations`: the GX suite alone on a context made once;
- pandas baseline: every expectation of the same suite evaluated with vectorised pandas.
Two batches: clean, and dirty (0.05-0.1 % of rows broken for six expectations). Correctness: for every
expectation GX and pandas must agree on success and on unexpected_count (exact); else exit 1.
Progress bars are off (`ProgressBarsConfig(globally=False)`) and GX analytics are off.

    .venv/bin/python benchmarks/validation.py [--rows 1000000] [--repeat 5] [--seed 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _feature_data import load_note, machine_note

WARMUP_ROWS = 10_000
SUITE_NAME = "rides"


# -- data -----------------------------------------------------------------------------------------
def rides_batch(rows: int, seed: int) -> pd.DataFrame:
    from datetime import UTC, datetime

    from airflow_mlops.core.demo_data import DemoConfig, rides

    days = 30
    cfg = DemoConfig(start=datetime(2026, 10, 1, tzinfo=UTC), days=days, drivers=2000,
                     rides_per_day=-(-rows // days), seed=seed)
    return rides(cfg).head(rows).reset_index(drop=True)


def dirty(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Break six expectations on a few rows each (dtypes unchanged)."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    n = len(out)

    def rows(share: float) -> np.ndarray:
        return rng.choice(np.arange(1, n), max(1, int(n * share)), replace=False)

    out.loc[rows(0.001), "trip_distance_km"] = np.nan
    out.loc[rows(0.001), "surge_multiplier"] = 50.0
    out.loc[rows(0.001), "pickup_hour"] = 24
    out.loc[rows(0.001), "completed"] = 2
    dup = rows(0.0005)
    out.loc[dup, "ride_id"] = out["ride_id"].to_numpy()[dup - 1]
    dup = rows(0.0005)
    out.loc[dup, ["driver_id", "event_timestamp"]] = out.loc[dup - 1, ["driver_id", "event_timestamp"]].to_numpy()
    return out


# -- the suite ------------------------------------------------------------------------------------
def load_suite(clean: pd.DataFrame) -> tuple[dict[str, Any], str, Any]:
    """(suite JSON, where it came from, the validation module or None)."""
    try:
        from airflow_mlops.core import validation
    except ImportError:
        return builtin_suite(clean), "built in benchmarks/validation.py (core.validation not importable)", None
    from airflow_mlops.config import expectations_dir

    if (expectations_dir() / f"{SUITE_NAME}.json").is_file():
        return validation.load_suite(SUITE_NAME), f"{expectations_dir()}/{SUITE_NAME}.json", validation
    suite = validation.suite_from_reference(clean, SUITE_NAME, key_columns=["driver_id"],
                                            timestamp_column="event_timestamp", label_column="completed",
                                            unique_columns=["ride_id"])
    return (suite.to_json_dict(), "core.validation.suite_from_reference on the clean batch "
            f"(no include/expectations/{SUITE_NAME}.json yet)", validation)


def builtin_suite(clean: pd.DataFrame) -> dict[str, Any]:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=SUITE_NAME)
    add = suite.add_expectation
    add(gxe.ExpectTableColumnsToMatchSet(column_set=list(clean.columns), exact_match=True))
    add(gxe.ExpectTableRowCountToBeBetween(min_value=1))
    add(gxe.ExpectCompoundColumnsToBeUnique(column_list=["driver_id", "event_timestamp"]))
    add(gxe.ExpectColumnValuesToBeUnique(column="ride_id"))
    for column in clean.columns:
        add(gxe.ExpectColumnValuesToNotBeNull(column=column))
        if column != "event_timestamp":
            add(gxe.ExpectColumnTypeToBe(column=column, type_=str(clean[column].dtype)))
    for column in ("trip_distance_km", "surge_multiplier", "pickup_hour"):
        add(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=float(clean[column].min()),
                                              max_value=float(clean[column].max())))
    add(gxe.ExpectColumnValuesToBeInSet(column="completed", value_set=[0, 1]))
    return suite.to_json_dict()


def plain_gx(frame: pd.DataFrame, suite: dict[str, Any], context: Any) -> dict[str, Any]:
    """Fallback runner when core.validation is absent: the same GX calls, SUMMARY format."""
    import great_expectations as gx

    source = context.data_sources.add_or_update_pandas("bench")
    asset = source.add_dataframe_asset(f"a{time.perf_counter_ns()}")
    batch = asset.add_batch_definition_whole_dataframe("b").get_batch(batch_parameters={"dataframe": frame})
    return batch.validate(gx.ExpectationSuite(**suite), result_format="SUMMARY").to_json_dict()


def plain_context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                               analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False))
    return gx.get_context(project_config=config, mode="ephemeral")


# -- the pandas baseline --------------------------------------------------------------------------
def _map_result(bad: pd.Series) -> tuple[bool, int]:
    count = int(bad.sum())
    return count == 0, count


def pandas_check(frame: pd.DataFrame, kind: str, kw: dict[str, Any]) -> tuple[bool, int | None]:  # noqa: PLR0911
    """One expectation in plain pandas: (success, unexpected_count or None for table/aggregate ones)."""
    col = frame[kw["column"]] if "column" in kw else None
    if kind == "expect_table_columns_to_match_set":
        same = set(frame.columns) == set(kw["column_set"]) if kw.get("exact_match", True) \
            else set(kw["column_set"]) <= set(frame.columns)
        return same, None
    if kind == "expect_table_row_count_to_be_between":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        return (lo is None or len(frame) >= lo) and (hi is None or len(frame) <= hi), None
    if kind == "expect_compound_columns_to_be_unique":
        return _map_result(frame.duplicated(subset=kw["column_list"], keep=False))
    if kind == "expect_column_values_to_be_unique":
        return _map_result(col.duplicated(keep=False) & col.notna())
    if kind == "expect_column_values_to_not_be_null":
        return _map_result(col.isna())
    if kind == "expect_column_type_to_be":
        return str(col.dtype) == kw["type_"], None
    if kind == "expect_column_values_to_be_between":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        low = (col <= lo if kw.get("strict_min") else col < lo) if lo is not None else False
        high = (col >= hi if kw.get("strict_max") else col > hi) if hi is not None else False
        return _map_result((low | high) & col.notna())
    if kind == "expect_column_values_to_be_in_set":
        return _map_result(~col.isin(kw["value_set"]) & col.notna())
    sys.exit(f"the pandas baseline has no implementation of {kind}; add one to benchmarks/validation.py")


def pandas_suite(frame: pd.DataFrame, suite: dict[str, Any]) -> list[tuple[bool, int | None]]:
    return [pandas_check(frame, e["type"], e["kwargs"]) for e in suite["expectations"]]


# -- measuring ------------------------------------------------------------------------------------
def gx_outcomes(result: dict[str, Any]) -> list[tuple[bool, int | None]]:
    return [(bool(r["success"]), (r.get("result") or {}).get("unexpected_count")) for r in result["results"]]


def check_agreement(name: str, suite: dict[str, Any], gx_result: dict[str, Any], baseline: list) -> list[str]:
    """Per expectation: GX and pandas agree on success and unexpected_count; returns the failed ones."""
    got = gx_outcomes(gx_result)
    if len(got) != len(baseline):
        sys.exit(f"MISMATCH ({name}): GX returned {len(got)} results for {len(baseline)} expectations")
    errors, failed = [], []
    # GX returns the results in suite order (it normalizes kwargs, e.g. 1 -> 1.0): check type and column match
    for e, r, (gx_ok, gx_count), (ok, count) in zip(suite["expectations"], gx_result["results"], got, baseline,
                                                    strict=True):
        if _key(r["expectation_config"]) != _key(e):
            sys.exit(f"MISMATCH ({name}): GX result order differs from the suite at {_key(e)}")
        if gx_ok != ok or (count is not None and gx_count != count):
            errors.append(f"{e['type']} {e['kwargs']}: GX success={gx_ok} unexpected={gx_count}, "
                          f"pandas success={ok} unexpected={count}")
        if not ok:
            failed.append(f"{e['type']}({e['kwargs'].get('column') or e['kwargs'].get('column_list')}): {count}")
    if errors:
        print(f"MISMATCH ({name}):\n  " + "\n  ".join(errors), file=sys.stderr)
        sys.exit(1)
    return failed


def _key(config: dict[str, Any]) -> str:
    kwargs = config["kwargs"]
    return f"{config['type']}|{kwargs.get('column') or kwargs.get('column_list') or ''}"


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - started, time.process_time() - cpu, out


def methods(suite: dict[str, Any], validation: Any) -> dict[str, Callable[[pd.DataFrame], Any]]:
    if validation is None:
        context = plain_context()
        return {"GX suite (plain context)": lambda f: plain_gx(f, suite, context),
                "pandas baseline": lambda f: pandas_suite(f, suite)}
    context = validation.gx_context()

    def gx_only(frame: pd.DataFrame) -> dict[str, Any]:
        try:
            return validation.run_expectations(frame, suite, context)
        finally:  # each call adds a data source that keeps its DataFrame alive; drop it between runs
            for name in list(context.data_sources.all()):
                context.data_sources.delete(name)

    return {
        "validate_frame (contract rules + GX, new context)": lambda f: validation.validate_frame(f, suite),
        "run_expectations (GX suite only, context reused)": gx_only,
        "pandas baseline": lambda f: pandas_suite(f, suite),
    }


def bench(frame: pd.DataFrame, runners: dict[str, Callable], repeat: int) -> tuple[dict[str, tuple], dict]:
    """{method: (median wall s, median CPU s)} and each method's last output."""
    for run in runners.values():
        run(frame.head(WARMUP_ROWS))
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    last: dict[str, Any] = {}
    for rep in range(repeat):
        order = list(runners) if rep % 2 == 0 else list(runners)[::-1]
        for name in order:
            wall, cpu, last[name] = timed(lambda run=runners[name]: run(frame))
            seconds[name].append((wall, cpu))
    return {name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
            for name, s in seconds.items()}, last


def gx_result_of(last: dict[str, Any]) -> dict[str, Any]:
    for name, out in last.items():
        if name.startswith("run_expectations") or name.startswith("GX suite"):
            return out
    raise AssertionError("no GX runner")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    before = load_note()
    clean = rides_batch(args.rows, args.seed)
    batches = {"clean": clean, "dirty": dirty(clean, args.seed)}
    suite, origin, validation = load_suite(clean)
    runners = methods(suite, validation)
    print(f"\nMachine: {machine_note()}; {args.rows:,} rows x {clean.shape[1]} columns (demo `rides`, seed "
          f"{args.seed}); suite: {len(suite['expectations'])} expectations, {origin}; median of {args.repeat} "
          f"after a {WARMUP_ROWS:,}-row warm-up.\n")
    print("| batch | method | wall s (median) | wall ratio vs pandas | CPU s (median) | CPU ratio | rows/s (wall) |\n"
          "|---|---|---|---|---|---|---|")
    notes = []
    for label, frame in batches.items():
        medians, last = bench(frame, runners, args.repeat)
        failed = check_agreement(label, suite, gx_result_of(last), last["pandas baseline"])
        base, base_cpu = medians["pandas baseline"]
        for name, (wall, cpu) in medians.items():
            print(f"| {label} | {name} | {wall:.3f} | {wall / base:.1f}x | {cpu:.3f} | {cpu / base_cpu:.1f}x | "
                  f"{args.rows / wall:,.0f} |")
        notes.append(f"- {label}: GX and pandas agree on all {len(suite['expectations'])} expectations (success "
                     f"and exact unexpected_count); failing: {', '.join(failed) or 'none'}")
    print("\n" + "\n".join(notes))
    print(f"\nMachine load: {before} at start, {load_note()} at end.")


if __name__ == "__main__":
    main()
