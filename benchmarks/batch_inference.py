"""Batch inference: the project's real path (core.batch_inference.predict_batch) vs a raw predict_proba loop.

Setup (not timed): a temporary MLOPS_HOME and Feast repo with one entity and three feature views
totalling 20 features (benchmarks/_feature_data.py, the training-set benchmark's data), landed
through `core.offline.land_landing_dir` and applied with `FeastHook.apply()`; `--rows` entity rows
(plus a `trip_km` request feature and a feature-dependent label); the point-in-time features of
those rows joined once through Feast in `--chunk-rows` chunks and saved ("prepared feature rows");
and the shipped spec's model (`core.training.build_pipeline`: median imputer + HistGradientBoosting
with the ride_completion spec's params) fitted on the first 100,000 prepared rows and pickled.

Then each method runs in its own fresh process (so peak RSS is its own), after a 1,000-row warm-up
in that process, order alternating between repetitions:

- batch: `predict_batch(FeastHook().get_store(), model=ScoringModel.from_estimator(model), ...)`,
         exactly what BatchPredictOperator calls once it has loaded the model: per chunk a
         point-in-time join (`core.point_in_time`, as-of path: each view's rows of the entity set's
         time span read and sorted once, then a sorted-key search per chunk, Feast's semantics; Feast's
         own join only for views it cannot read), `predict_proba` on the model's columns as float64, one parquet
         part (atomic temp + rename, sha256), then the manifest and the run-folder rename. Its
         phases are timed by wrapping functions (no package change): join (each chunk drawn from
         `PointInTimeJoin.chunks`), predict (`_score_chunk`), write (`_write_part`).
- raw:   the prepared feature rows (read before timing), then per chunk of the same size
         `model.predict_proba(chunk[columns].astype("float64"))[:, 1]` — no join, no write.

Features check (setup, not timed): the as-of join (`AsofJoiner`, chunk by chunk) against the
prepared rows Feast joined: every feature of every row equal (NaN where Feast has none), same dtypes.

Reported: wall and CPU seconds, rows/s, the rows/s ratio batch/raw for the whole path and for the
predict + write phases alone (target >= 0.7x), peak RSS (kernel high-water mark, reset before the
timed call) and its growth. Correctness: the batch output's predictions equal the raw loop's,
aligned on a `row_id` request column, bitwise (tolerance 0); the output has every entity row once.
Any difference exits 1.

    .venv/bin/python benchmarks/batch_inference.py [--rows 1000000] [--chunk-rows 100000]
                                                   [--entities 2000] [--days 30] [--repeat 1] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
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
    DataConfig,
    bench_env,
    entity_df,
    load_note,
    machine_note,
    setup_state,
)
from training_set_build import _status_kb, quiet, reset_peak_rss

WARMUP_ROWS = 1000
FIT_ROWS = 100_000
METHODS = ("batch", "raw")
REQUEST = ["trip_km", "row_id"]  # row_id rides along for the comparison; the model does not use it
LABELS = {"batch": "predict_batch (as-of join + predict + parquet)", "raw": "raw predict_proba loop (prepared rows)"}


# -- setup (parent process) ----------------------------------------------------------------------
def bench_entities(cfg: DataConfig, rows: int, events: pd.DataFrame, seed: int) -> pd.DataFrame:
    frame = entity_df(cfg, rows, events, seed).drop(columns="label")
    frame["trip_km"] = np.random.default_rng([seed, 7]).uniform(0.5, 30.0, rows)
    return frame


def prepare_features(entity: pd.DataFrame, chunk_rows: int) -> pd.DataFrame:
    """The point-in-time features of every entity row (Feast, chunked), in row_id order."""
    from airflow_mlops.hooks.feast import FeastHook

    store = FeastHook().get_store()
    quiet()  # after feast's import, which resets the DeprecationWarning filter
    service = store.get_feature_service(SERVICE)
    parts = [store.get_historical_features(entity_df=entity.iloc[i:i + chunk_rows], features=service).to_df()
             for i in range(0, len(entity), chunk_rows)]
    return pd.concat(parts, ignore_index=True).sort_values("row_id").reset_index(drop=True)


def fit_model(prepared: pd.DataFrame, seed: int) -> Any:
    """The shipped spec's pipeline on the first FIT_ROWS rows, label a noisy function of the features."""
    import yaml

    from airflow_mlops import config
    from airflow_mlops.core.training import build_pipeline, feature_columns

    spec = yaml.safe_load((config.project_dir() / "include" / "models" / "ride_completion.yaml").read_text())
    train = prepared.head(FIT_ROWS)
    columns = feature_columns(train, exclude=[ENTITY_KEY, TS, "row_id"])
    x = train[columns].astype("float64")
    score = x["conv_rate"].fillna(0) + 0.5 * x["rating"].fillna(0) - x["trip_km"] / 15 + x["last_tip"].fillna(0)
    y = (score + np.random.default_rng(seed).normal(0, 1, len(x)) > 0).astype("int64")
    pipeline = build_pipeline(spec["training"]["estimator"], spec["training"]["params"],
                              spec["training"]["preprocessing"], seed=seed)
    return pipeline.fit(x, y)


# -- the two methods (child process) -------------------------------------------------------------
def run_batch(work: Path, chunk_rows: int) -> dict[str, Any]:
    from airflow_mlops.core import batch_inference as bi
    from airflow_mlops.hooks.feast import FeastHook

    entity = pd.read_parquet(work / "entity.parquet")
    model = bi.ScoringModel.from_estimator(pickle.loads((work / "model.pkl").read_bytes()), version="1")
    store = FeastHook().get_store()
    quiet()

    def call(frame: pd.DataFrame, out: Path) -> dict[str, Any]:
        return bi.predict_batch(store, model=model, model_name="bench", feature_service=SERVICE, entity_df=frame,
                                entity_keys=[ENTITY_KEY], timestamp_column=TS, request_features=REQUEST,
                                out_dir=out, run_id="bench", chunk_rows=chunk_rows)

    call(entity.head(WARMUP_ROWS), work / "warmup")
    phases = _instrument(bi)
    rss0 = reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    lineage = call(entity, work / "predictions")
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": total, "cpu_seconds": cpu, "phases": phases, "rss0_kb": rss0, "peak_kb": _status_kb("VmHWM"),
            "output": lineage["path"], "rows": lineage["rows"], "parts": lineage["parts"]}


def _instrument(module: Any) -> dict[str, list[float]]:
    """Wall and CPU seconds of each phase, by wrapping the module's functions (no package change)."""
    phases = {"join (as-of join: view rows read once, sorted-key search per chunk)": [0.0, 0.0],
              "predict (columns as float64, predict_proba, output frame)": [0.0, 0.0],
              "write (parquet part, atomic rename, sha256)": [0.0, 0.0]}
    from airflow_mlops.core import point_in_time

    chunks, join_key = point_in_time.PointInTimeJoin.chunks, next(iter(phases))

    def timed_chunks(self: Any, *args: Any, **kwargs: Any) -> Any:
        inner = chunks(self, *args, **kwargs)
        while True:
            started, cpu = time.perf_counter(), time.process_time()
            try:
                item = next(inner)
            except StopIteration:
                return
            finally:
                phases[join_key][0] += time.perf_counter() - started
                phases[join_key][1] += time.process_time() - cpu
            yield item

    point_in_time.PointInTimeJoin.chunks = timed_chunks
    for name, key in zip(("_score_chunk", "_write_part"), list(phases)[1:], strict=True):
        fn = getattr(module, name)

        def timed(*args: Any, _fn: Any = fn, _key: str = key, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.process_time()
            try:
                return _fn(*args, **kwargs)
            finally:
                phases[_key][0] += time.perf_counter() - started
                phases[_key][1] += time.process_time() - cpu

        setattr(module, name, timed)
    return phases


def run_raw(work: Path, chunk_rows: int) -> dict[str, Any]:
    prepared = pd.read_parquet(work / "prepared.parquet")
    model = pickle.loads((work / "model.pkl").read_bytes())
    columns = list(model.feature_names_in_)
    model.predict_proba(prepared.head(WARMUP_ROWS)[columns].astype("float64"))
    rss0 = reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    out = [model.predict_proba(prepared.iloc[i:i + chunk_rows][columns].astype("float64"))[:, 1]
           for i in range(0, len(prepared), chunk_rows)]
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = _status_kb("VmHWM")
    path = work / "raw_predictions.parquet"
    pd.DataFrame({"row_id": prepared["row_id"], "prediction": np.concatenate(out)}).to_parquet(path)  # after timing
    return {"seconds": total, "cpu_seconds": cpu, "phases": {}, "rss0_kb": rss0, "peak_kb": peak,
            "output": str(path), "rows": len(prepared), "parts": len(out)}


def child(method: str, work: Path, result_file: Path, chunk_rows: int) -> None:
    os.environ.update(bench_env(work))
    result = run_batch(work, chunk_rows) if method == "batch" else run_raw(work, chunk_rows)
    result_file.write_text(json.dumps(result))


# -- orchestration --------------------------------------------------------------------------------
def spawn(method: str, work: Path, tag: str, chunk_rows: int) -> dict[str, Any]:
    result_file = work / f"result_{method}_{tag}.json"
    cmd = [sys.executable, __file__, "--child", method, "--work", str(work), "--result-file", str(result_file),
           "--chunk-rows", str(chunk_rows)]
    subprocess.run(cmd, env={**os.environ, **bench_env(work)}, check=True)
    return json.loads(result_file.read_text())


def compare(batch: dict[str, Any], raw: dict[str, Any], rows: int) -> dict[str, Any]:
    got = pd.read_parquet(batch["output"], columns=["row_id", "prediction"]).sort_values("row_id")
    want = pd.read_parquet(raw["output"]).sort_values("row_id")
    if len(got) != rows or got["row_id"].nunique() != rows or not np.array_equal(got["row_id"], want["row_id"]):
        sys.exit(f"MISMATCH: batch output has {len(got)} rows ({got['row_id'].nunique()} distinct) for {rows}")
    differ = got["prediction"].to_numpy() != want["prediction"].to_numpy()
    if differ.any():
        sys.exit(f"MISMATCH: {int(differ.sum())} predictions differ, e.g. row_id {got['row_id'][differ][:5].tolist()}")
    return {"rows_checked": rows, "max_abs_diff": 0.0}


def check_features(work: Path, chunk_rows: int) -> dict[str, Any]:
    """The batch path's point-in-time join equals Feast's (the prepared rows) on every feature of every row."""
    from airflow_mlops.core import asof_join as aj
    from airflow_mlops.core import batch_inference as bi
    from airflow_mlops.core.offline import normalize_timestamps
    from airflow_mlops.hooks.feast import FeastHook

    store = FeastHook().get_store()
    quiet()
    views, why_not = aj.asof_plan(store, store.get_feature_service(SERVICE))
    if views is None:
        sys.exit(f"MISMATCH: the benchmark's views are not read by the as-of join ({why_not})")
    entity = normalize_timestamps(pd.read_parquet(work / "entity.parquet")).rename(columns={TS: bi.FEAST_TIMESTAMP})
    entity[bi._ROW] = range(len(entity))
    joiner = aj.AsofJoiner(views, entity)
    got = pd.concat([joiner.join(entity.iloc[i:i + chunk_rows]) for i in range(0, len(entity), chunk_rows)],
                    ignore_index=True).sort_values("row_id").reset_index(drop=True)
    want = pd.read_parquet(work / "prepared.parquet")  # Feast's join, in row_id order
    features = [name for view in views for _, name in view.features]
    for column in features:
        a, b = got[column].to_numpy(dtype="float64"), want[column].to_numpy(dtype="float64")
        differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
        if differ.any() or got[column].dtype != want[column].dtype:
            sys.exit(f"MISMATCH: feature {column}: {int(differ.sum())} rows differ from Feast's join "
                     f"(dtype {got[column].dtype} vs {want[column].dtype})")
    return {"rows": len(got), "features": len(features), "nan": int(got[features].isna().sum().sum())}


def predict_write(run: dict[str, Any], cpu: bool = False) -> float:
    return sum(s[int(cpu)] for k, s in run["phases"].items() if not k.startswith("join"))


def _paired(runs: dict[str, list[dict[str, Any]]], method: str, key: str = "seconds") -> float:
    """Median over repetitions of raw time / method time = the method's rows/s relative to raw."""
    return statistics.median(x[key] / y[key] for x, y in zip(runs["raw"], runs[method], strict=True))


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace, setup_s: float, check: dict) -> None:
    med = {m: sorted(r, key=lambda x: x["seconds"])[len(r) // 2] for m, r in runs.items()}
    rows, b = args.rows, med["batch"]
    print(f"\nMachine: {machine_note()}; {rows:,} entity rows, chunks of {args.chunk_rows:,}; feature data "
          f"{args.entities} entities x {args.days} days, 20 features in 3 views; model {args.model_note}; setup "
          f"{setup_s:.0f} s (not timed); median of {args.repeat}.\n")
    print("| method | wall s | all runs, wall s | rows/s (wall) | ratio to raw, wall | CPU s | ratio to raw, CPU | "
          "peak RSS MB (growth) |\n|---|---|---|---|---|---|---|---|")
    for method in METHODS:
        r = med[method]
        every = ", ".join(f"{x['seconds']:.1f}" for x in runs[method])
        print(f"| {LABELS[method]} | {r['seconds']:.2f} | {every} | {rows / r['seconds']:,.0f} | "
              f"{_paired(runs, method):.2f}x | {r['cpu_seconds']:.1f} | {_paired(runs, method, 'cpu_seconds'):.2f}x | "
              f"{r['peak_kb'] / 1024:,.0f} (+{(r['peak_kb'] - r['rss0_kb']) / 1024:,.0f}) |")
    pw = statistics.median(x["seconds"] / predict_write(y) for x, y in zip(runs["raw"], runs["batch"], strict=True))
    pw_cpu = statistics.median(x["cpu_seconds"] / predict_write(y, cpu=True)
                               for x, y in zip(runs["raw"], runs["batch"], strict=True))
    print(f"| predict_batch, predict + write phases only | {predict_write(b):.2f} | "
          f"{', '.join(f'{predict_write(x):.1f}' for x in runs['batch'])} | {rows / predict_write(b):,.0f} | "
          f"{pw:.2f}x | {predict_write(b, cpu=True):.1f} | {pw_cpu:.2f}x | - |")
    print("\nPhases of predict_batch (median run):\n\n| phase | wall s | share | CPU s |\n|---|---|---|---|")
    other = b["seconds"] - sum(w for w, _ in b["phases"].values())
    other_cpu = b["cpu_seconds"] - sum(c for _, c in b["phases"].values())
    for phase, (wall, cpu) in [*b["phases"].items(), ("other (normalize, manifest, rename)", (other, other_cpu))]:
        print(f"| {phase} | {wall:.2f} | {wall / b['seconds']:.0%} | {cpu:.1f} |")
    whole = _paired(runs, "batch")
    print(f"\nTarget >= 0.70x (rows/s vs raw, wall): whole path {whole:.2f}x ({'met' if whole >= 0.7 else 'MISSED'}); "
          f"predict + write {pw:.2f}x ({'met' if pw >= 0.7 else 'MISSED'}).")
    print(f"Correctness: {check['rows_checked']:,} rows, each once; predictions bitwise equal to the raw loop's.")
    feats = args.features_check
    print(f"Features: the batch path's as-of join equals Feast's on all {feats['features']} features of "
          f"{feats['rows']:,} rows ({feats['nan']:,} NaN in both), dtypes equal.")
    print(f"Machine load: {args.load_before} at start, {load_note()} at end.")
    print("\nJSON " + json.dumps({"runs": runs, "check": check}))


def setup(work: Path, args: argparse.Namespace) -> float:
    started = time.perf_counter()
    cfg = DataConfig(entities=args.entities, days=args.days, seed=args.seed)
    tables = setup_state(work, cfg)
    entity = bench_entities(cfg, args.rows, tables["driver_events"], args.seed)
    entity.to_parquet(work / "entity.parquet", index=False)
    prepared = prepare_features(entity, args.chunk_rows)
    prepared.to_parquet(work / "prepared.parquet", index=False)
    model = fit_model(prepared, args.seed)
    args.model_note = (f"{type(model[-1]).__name__}, {model[-1].n_iter_} iterations, "
                       f"{len(model.feature_names_in_)} input columns")
    (work / "model.pkl").write_bytes(pickle.dumps(model))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--entities", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work, args.result_file, args.chunk_rows)
        return
    quiet()
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-batch-"))
    try:
        args.load_before = load_note()
        setup_s = setup(work, args)
        args.features_check = check_features(work, args.chunk_rows)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
        for rep in range(args.repeat):
            for method in METHODS if rep % 2 == 0 else METHODS[::-1]:  # alternate who goes first
                runs[method].append(spawn(method, work, str(rep), args.chunk_rows))
                print(f"  rep={rep} {method}: {runs[method][-1]['seconds']:.2f} s", file=sys.stderr)
        check = compare(runs["batch"][-1], runs["raw"][-1], args.rows)
        report(runs, args, setup_s, check)
    finally:
        if args.keep:
            print(f"\nkept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
