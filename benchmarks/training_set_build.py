"""Training-set build: the project's real path (build_training_set, one point-in-time engine) vs
pandas.merge_asof, and vs the same build on Feast's get_historical_features.

Setup (not timed): a temporary MLOPS_HOME and Feast repo with one entity and three feature views
totalling 20 features (benchmarks/_feature_data.py: hourly / daily / event-driven, TTLs 2 d / 2 d /
12 h) over seeded synthetic data, landed through `core.offline.land_landing_dir` and applied with
`FeastHook.apply()`. Then, per entity-row count, each method runs in its own fresh process (so peak
RSS is its own), after a 1,000-row warm-up in that process:

- engine: `build_training_set(FeastHook().get_store(), feature_service=..., ...)`, exactly what the
          training DAG's FeastBuildTrainingSetOperator calls: canonical entity order, the
          `core.point_in_time` as-of path (the service's views are local parquet), parquet snapshot
          written a row group at a time + sha256, lineage JSON. Its lineage must say join=asof;
- feast:  the same build_training_set with the path forced to Feast's get_historical_features (the
          fallback; what training sets used before the engine), per `ENTITY_CHUNK_ROWS` entity rows;
- pandas: read the three views' parquet from the offline store (pyarrow) and
          `pd.merge_asof(direction="backward", by=driver_id, tolerance=view.ttl)` per view — Feast's
          rule: the newest feature row with feature_ts <= entity_ts and entity_ts - feature_ts <= ttl.
          Join only (no snapshot), the baseline of the ratios;
- duckdb_asof (with --candidates): one duckdb query, an ASOF LEFT JOIN per view, TTL applied to the
  matched row (join only), the alternative engine that was measured and not taken.

Reported: wall and CPU seconds (all threads), ratios to the pandas run of the same repetition, peak
RSS (kernel high-water mark, reset before the timed call) and its growth over the RSS before the call.
`--methods engine --rows 10000000` runs the engine alone (the 10 M-row memory check).

Correctness: every feature column of every output is compared row by row with the pandas baseline's
(aligned on `row_id`), exactly: tolerance 0 (bitwise-equal float64, NaN only where the other is NaN;
int features compared as float64, exact below 2**53). Any mismatch prints examples and exits 1. With
`--methods engine` alone there is no baseline: the engine's output is compared with nothing.

    .venv/bin/python benchmarks/training_set_build.py [--rows 1000000] [--entities 2000] [--days 30]
                                                      [--repeat 1] [--check-rows 0 (= all)]
                                                      [--methods engine,pandas,feast] [--candidates]
                                                      [--chunk-rows 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _feature_data import (
    ENTITY_KEY,
    SERVICE,
    TS,
    VIEWS,
    DataConfig,
    bench_env,
    entity_df,
    load_note,
    machine_note,
    setup_state,
)

WARMUP_ROWS = 1000
METHODS = ("engine", "pandas", "feast")
CANDIDATES = ("duckdb_asof",)  # an alternative engine, measured and checked like the others
LABELS = {
    "engine": "build_training_set (point-in-time engine, as-of path)",
    "feast": "build_training_set, Feast get_historical_features path",
    "pandas": "pandas.merge_asof baseline (join only)",
    "duckdb_asof": "candidate: duckdb ASOF JOIN (join only)",
}


# -- memory ---------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0) and return the current RSS in kB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_kb("VmRSS")


# -- the two methods (run in a child process) ----------------------------------------------------
def run_build(edf: pd.DataFrame, work: Path, path: str, chunk_rows: int) -> dict[str, Any]:
    """build_training_set as the training DAG calls it; `path` "feast" forces Feast's get_historical_features."""
    from airflow_mlops.core import point_in_time, training_set
    from airflow_mlops.hooks.feast import FeastHook

    store = FeastHook().get_store()
    quiet()  # after feast's import, which resets the DeprecationWarning filter
    training_set.ENTITY_CHUNK_ROWS = chunk_rows
    if path == "feast":
        forced = point_in_time.JoinPlan(point_in_time.FEAST, "forced by the benchmark")
        point_in_time.plan = lambda *_args, **_kw: forced
    kwargs = dict(feature_service=SERVICE, entity_keys=[ENTITY_KEY], timestamp_column=TS, label="label",
                  request_features=["row_id"])
    training_set.build_training_set(store, entity_df=edf.head(WARMUP_ROWS), out_dir=work / "warmup", **kwargs)
    phases = _instrument(training_set, point_in_time)
    rss0 = reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    lineage = training_set.build_training_set(store, entity_df=edf, out_dir=work / f"sets_{path}", **kwargs)
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    if lineage["join"] != path.replace("engine", "asof"):
        sys.exit(f"the {path} run joined via {lineage['join']}")
    return {"seconds": total, "cpu_seconds": cpu, "phases": phases, "rss0_kb": rss0, "peak_kb": _status_kb("VmHWM"),
            "output": lineage["path"], "missing": lineage["missing"], "join": lineage["join"]}


def _instrument(training_set: Any, point_in_time: Any) -> dict[str, float]:
    """Time the phases of build_training_set by wrapping what it calls (no package code is changed)."""
    phases: dict[str, float] = {"canonical entity order (_canonical)": 0.0, "point-in-time join (chunks)": 0.0,
                                "snapshot write + sha256": 0.0}

    def timed(fn: Any, key: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[key] += time.perf_counter() - started
        return wrapper

    chunks = point_in_time.PointInTimeJoin.chunks

    def timed_chunks(self: Any, *args: Any, **kwargs: Any) -> Any:
        inner = chunks(self, *args, **kwargs)
        while True:
            started = time.perf_counter()
            try:
                item = next(inner)
            except StopIteration:
                return
            finally:
                phases["point-in-time join (chunks)"] += time.perf_counter() - started
            yield item

    point_in_time.PointInTimeJoin.chunks = timed_chunks
    training_set._canonical = timed(training_set._canonical, "canonical entity order (_canonical)")
    write = training_set._write_snapshot

    def write_snapshot(*args: Any, **kwargs: Any) -> Any:
        joined = phases["point-in-time join (chunks)"]
        started = time.perf_counter()
        try:
            return write(*args, **kwargs)
        finally:  # the join runs lazily inside the write loop: its time is not the writer's
            phases["snapshot write + sha256"] += time.perf_counter() - started - (
                phases["point-in-time join (chunks)"] - joined)

    training_set._write_snapshot = write_snapshot
    return phases


def duckdb_asof(edf: pd.DataFrame, offline_dir: Path) -> pd.DataFrame:
    """Candidate fix: one duckdb query, an ASOF LEFT JOIN per view, TTL applied to the matched row.

    Same rule as Feast: newest row with feature_ts <= entity_ts (ties on feature_ts broken by the
    newest created timestamp), kept only if feature_ts >= entity_ts - ttl.
    """
    import duckdb

    selects, joins = [], []
    for i, v in enumerate(VIEWS):
        glob = str(offline_dir / v.name / "**" / "*.parquet").replace("'", "''")
        dedup = (f"QUALIFY row_number() OVER (PARTITION BY {ENTITY_KEY}, {TS} ORDER BY created DESC) = 1"
                 if v.created else "")
        source = (f"(SELECT {ENTITY_KEY}, {TS} AS f_ts, {', '.join(v.features)} FROM "
                  f"read_parquet('{glob}', hive_partitioning = false) {dedup})")
        joins.append(f"ASOF LEFT JOIN {source} AS v{i} ON e.{ENTITY_KEY} = v{i}.{ENTITY_KEY} AND e.{TS} >= v{i}.f_ts")
        fresh = f"v{i}.f_ts >= e.{TS} - INTERVAL {int(v.ttl.total_seconds())} SECOND"
        selects += [f"CASE WHEN {fresh} THEN v{i}.{f} END AS {f}" for f in v.features]
    sql = f"SELECT e.*, {', '.join(selects)} FROM entity AS e {' '.join(joins)}"
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("entity", edf)
        return con.execute(sql).df()


def pandas_point_in_time(edf: pd.DataFrame, offline_dir: Path) -> pd.DataFrame:
    """The baseline: per view, read its parquet and merge_asof backward by entity within the TTL."""
    import pyarrow.dataset as ds

    left = edf.sort_values(TS, kind="stable")
    for view in VIEWS:
        source = ds.dataset(str(offline_dir / view.name), format="parquet", partitioning="hive")
        right = source.to_table(columns=[ENTITY_KEY, TS, *view.features]).to_pandas().sort_values(TS, kind="stable")
        left = pd.merge_asof(left, right, on=TS, by=ENTITY_KEY, direction="backward",
                             tolerance=pd.Timedelta(view.ttl), allow_exact_matches=True)
    return left.sort_values("row_id", kind="stable").reset_index(drop=True)


def run_frame_join(edf: pd.DataFrame, work: Path, join: Any, name: str) -> dict[str, Any]:
    from airflow_mlops import config

    quiet()
    offline = config.paths().offline_dir
    join(edf.head(WARMUP_ROWS), offline)
    rss0 = reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    frame = join(edf, offline)
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = _status_kb("VmHWM")
    out = work / f"{name}_{len(edf)}.parquet"
    frame.to_parquet(out, index=False)  # after timing: only for the comparison
    return {"seconds": total, "cpu_seconds": cpu, "phases": {}, "rss0_kb": rss0, "peak_kb": peak, "output": str(out)}


def child(method: str, work: Path, entity_file: Path, result_file: Path, chunk_rows: int) -> None:
    os.environ.update(bench_env(work))
    edf = pd.read_parquet(entity_file)
    if method in ("engine", "feast"):
        result = run_build(edf, work, method, chunk_rows)
    else:
        join = pandas_point_in_time if method == "pandas" else duckdb_asof
        result = run_frame_join(edf, work, join, method)
    result_file.write_text(json.dumps(result))


def quiet() -> None:
    """Keep the table readable: no per-build INFO lines, no library deprecation warnings."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("airflow_mlops").setLevel(logging.WARNING)


# -- orchestration --------------------------------------------------------------------------------
def spawn(method: str, work: Path, entity_file: Path, tag: str, chunk_rows: int) -> dict[str, Any]:
    result_file = work / f"result_{method}_{tag}.json"
    cmd = [sys.executable, __file__, "--child", method, "--work", str(work), "--entity-file", str(entity_file),
           "--result-file", str(result_file), "--chunk-rows", str(chunk_rows)]
    subprocess.run(cmd, env={**os.environ, **bench_env(work)}, check=True)
    return json.loads(result_file.read_text())


def compare(name: str, file: str, baseline_file: str, check_rows: int, seed: int) -> dict[str, Any]:
    """Exact, cell-by-cell comparison of every feature column; returns NaN shares per view."""
    features = [f for v in VIEWS for f in v.features]
    a = pd.read_parquet(file).set_index("row_id").sort_index()
    b = pd.read_parquet(baseline_file).set_index("row_id").sort_index()
    if not a.index.equals(b.index):
        sys.exit(f"MISMATCH {name}: row ids differ ({len(a)} rows vs pandas {len(b)} rows)")
    if check_rows and check_rows < len(a):
        picks = np.sort(np.random.default_rng(seed).choice(len(a), check_rows, replace=False))
        a, b = a.iloc[picks], b.iloc[picks]
    bad = {}
    for column in [ENTITY_KEY, "label", *features]:
        x, y = a[column].to_numpy(dtype="float64"), b[column].to_numpy(dtype="float64")
        wrong = ~((x == y) | (np.isnan(x) & np.isnan(y)))
        if wrong.any():
            bad[column] = (int(wrong.sum()), a.index[wrong][:5].tolist())
    if not (a[TS].to_numpy() == b[TS].to_numpy()).all():
        bad[TS] = (-1, [])
    if bad:
        for column, (count, examples) in bad.items():
            print(f"MISMATCH {name} vs pandas, {column}: {count} rows differ, e.g. row_id {examples}", file=sys.stderr)
        sys.exit(1)
    nan_share = {v.name: float(a[v.features[0]].isna().mean()) for v in VIEWS}
    return {"rows_checked": len(a), "cells_checked": len(a) * len(features), "nan_share": nan_share}


def run_size(work: Path, cfg: DataConfig, rows: int, events: pd.DataFrame, args: argparse.Namespace) -> dict:
    entity_file = work / f"entity_{rows}.parquet"
    entity_df(cfg, rows, events, args.seed).to_parquet(entity_file, index=False)
    methods = tuple(args.methods.split(",")) + (CANDIDATES if args.candidates else ())
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for rep in range(args.repeat):
        for method in methods if rep % 2 == 0 else methods[::-1]:  # alternate who goes first
            runs[method].append(spawn(method, work, entity_file, f"{rows}_{rep}", args.chunk_rows))
            print(f"  rows={rows} rep={rep} {method}: {runs[method][-1]['seconds']:.2f} s", file=sys.stderr)
    if "pandas" not in runs:
        return {"rows": rows, "runs": runs, "checks": {}}
    base = runs["pandas"][-1]["output"]
    checks = {m: compare(m, runs[m][-1]["output"], base, args.check_rows, args.seed) for m in methods if m != "pandas"}
    return {"rows": rows, "runs": runs, "checks": checks}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def report(results: list[dict[str, Any]], args: argparse.Namespace, setup_s: float, cfg: DataConfig) -> None:
    print(f"\nMachine: {machine_note()}; feature data: {cfg.entities} entities x {cfg.days} days, "
          f"{args.feature_rows:,} feature rows in 3 views (20 features); setup {setup_s:.0f} s (not timed); "
          f"median of {args.repeat}; chunk size {args.chunk_rows:,}.\n")
    print("| entity rows | method | wall s (median) | all runs, wall s | wall ratio vs pandas (paired, range) | "
          "CPU s (all threads) | CPU ratio | peak RSS MB (growth) |\n|---|---|---|---|---|---|---|---|")
    for res in results:
        base = res["runs"].get("pandas")
        for method, runs in res["runs"].items():
            r = median_run(runs)
            every = ", ".join(f"{run['seconds']:.1f}" for run in runs)
            wall_ratio = cpu_ratio = "-"
            if base:
                ratios = sorted(run["seconds"] / b["seconds"] for run, b in zip(runs, base, strict=True))
                spread = f" ({ratios[0]:.2f}-{ratios[-1]:.2f})" if len(ratios) > 1 else ""
                wall_ratio = f"{statistics.median(ratios):.2f}x{spread}"
                cpus = [run["cpu_seconds"] / b["cpu_seconds"] for run, b in zip(runs, base, strict=True)]
                cpu_ratio = f"{statistics.median(cpus):.2f}x"
            print(f"| {res['rows']:,} | {LABELS[method]} | {r['seconds']:.2f} | {every} | {wall_ratio} | "
                  f"{r['cpu_seconds']:.1f} | {cpu_ratio} | "
                  f"{r['peak_kb'] / 1024:,.0f} (+{(r['peak_kb'] - r['rss0_kb']) / 1024:,.0f}) |")
    print("\nPhases of build_training_set (median run):\n\n"
          "| entity rows | path | phase | s | share |\n|---|---|---|---|---|")
    for res in results:
        for method in ("engine", "feast"):
            if method not in res["runs"]:
                continue
            r = median_run(res["runs"][method])
            other = r["seconds"] - sum(r["phases"].values())
            for phase, seconds in [*r["phases"].items(), ("other (normalize, lineage, registry)", other)]:
                print(f"| {res['rows']:,} | {method} | {phase} | {seconds:.2f} | {seconds / r['seconds']:.0%} |")
    print("\nCorrectness vs the pandas baseline (tolerance 0: bitwise-equal values, NaN exactly where it is NaN):\n")
    for res in results:
        for method, c in res["checks"].items():
            shares = ", ".join(f"{k} {v:.1%}" for k, v in c["nan_share"].items())
            print(f"- {res['rows']:,} rows, {method}: {c['rows_checked']:,} rows x 20 features = "
                  f"{c['cells_checked']:,} cells identical; NaN (no value within TTL): {shares}")
    print(f"\nMachine load: {args.load_before} at start, {load_note()} at end.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1000000", help="entity rows; comma-separated for a scaling series")
    parser.add_argument("--entities", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--check-rows", type=int, default=0, help="random rows to compare; 0 = every row")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--candidates", action=argparse.BooleanOptionalAction, default=False,
                        help="also measure the candidate engine (duckdb ASOF JOIN)")
    parser.add_argument("--chunk-rows", type=int, default=200_000, help="entity rows per join chunk (engine, feast)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--child", choices=METHODS + CANDIDATES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--entity-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work, args.entity_file, args.result_file, args.chunk_rows)
        return
    quiet()
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-ts-"))
    cfg = DataConfig(entities=args.entities, days=args.days, seed=args.seed)
    try:
        args.load_before = load_note()
        started = time.perf_counter()
        tables = setup_state(work, cfg)
        args.feature_rows = sum(len(t) for t in tables.values())
        setup_s = time.perf_counter() - started
        results = [run_size(work, cfg, int(n), tables["driver_events"], args) for n in args.rows.split(",")]
        report(results, args, setup_s, cfg)
    finally:
        if args.keep:
            print(f"\nkept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
