"""Drift check on 1M rows x 20 columns: `core.drift.check_drift` (Evidently) vs a bare scipy KS loop.

Data (seeded, regenerated identically in every child): reference and current, `--rows` rows x
`--columns` float64 columns each; the first half of the columns is shifted in current (mean +0.05 sd
and scale x1.05, alternating, so every shift is small but real), the other half is drawn like the
reference.

Methods, each in its own child process (so peak RSS is its own), in the same invocation:
- `scipy`:      `scipy.stats.ks_2samp` per column on the full numpy arrays, drift when p < 0.05;
- `ours`:       `check_drift(..., Drift(method="ks", threshold=0.05))` with the spec's default
                `sample_rows` (200,000 rows per side, fixed seed) — what the operator runs;
- `ours_full`:  the same with sampling off (every row through Evidently);
- `report`:     `ours` + `save_report` (Evidently HTML ~4 MB + JSON), the operator's full compute path.
Evidently's import (~10-15 s cold) happens before the clock starts and is reported apart.

Memory: peak RSS from `resource.getrusage(RUSAGE_SELF).ru_maxrss` of the child (a high-water mark,
includes the interpreter, the imports and the two input frames); "growth" = peak minus the RSS
high-water mark right after the data was built. Wall and CPU seconds of the timed call only.
Correctness: with sampling off our p-values must equal scipy's (same test, same data) and the
drift verdicts must match; with sampling the shifted columns must all be found.

    .venv/bin/python benchmarks/drift.py [--rows 1000000] [--columns 20] [--out /tmp/bench_drift.md]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _feature_data import load_note, machine_note

METHODS = ("scipy", "ours", "ours_full", "report")
LABELS = {"scipy": "bare scipy ks_2samp loop, all rows", "ours": "check_drift, default sample_rows",
          "ours_full": "check_drift, sampling off", "report": "check_drift (sampled) + save_report HTML/JSON"}
THRESHOLD = 0.05


def frames(rows: int, columns: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    names = [f"f{i:02d}" for i in range(columns)]
    reference = pd.DataFrame({n: rng.normal(0.0, 1.0, rows) for n in names})
    current = {}
    for i, name in enumerate(names):
        if i < columns // 2:
            current[name] = rng.normal(0.05, 1.0, rows) if i % 2 == 0 else rng.normal(0.0, 1.05, rows)
        else:
            current[name] = rng.normal(0.0, 1.0, rows)
    return reference, pd.DataFrame(current)


def _rss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def run_scipy(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    p_values = {}
    for name in reference.columns:
        p_values[name] = float(ks_2samp(reference[name].to_numpy(), current[name].to_numpy()).pvalue)
    return {"p_values": p_values, "drifted": sorted(c for c, p in p_values.items() if p < THRESHOLD)}


def run_ours(reference: pd.DataFrame, current: pd.DataFrame, sample: bool, save: Path | None) -> dict[str, Any]:
    from airflow_mlops.core.drift import check_drift, save_report
    from airflow_mlops.core.spec import Drift

    drift = Drift(method="ks", threshold=THRESHOLD, drift_share=0.5)
    result = check_drift(reference, current, list(reference.columns), drift, sample_rows=-1 if sample else None)
    out: dict[str, Any] = {"p_values": {c.column: c.score for c in result.columns},
                           "drifted": sorted(result.drifted_columns), "sampling": result.sampling.statement(),
                           "share": result.share, "detected": result.detected}
    if save is not None:
        saved = save_report(result, save, ["bench", "drift", "run"])
        out["html_bytes"] = Path(saved["html"]).stat().st_size
    return out


def child(method: str, args: argparse.Namespace) -> None:
    import_s = 0.0
    if method != "scipy":
        started = time.perf_counter()
        import evidently.presets  # noqa: F401  - the cold import is not part of the check's time

        import_s = time.perf_counter() - started
    reference, current = frames(args.rows, args.columns, args.seed)
    rss0 = _rss_kb()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if method == "scipy":
            out = run_scipy(reference, current)
        else:
            out = run_ours(reference, current, sample=method != "ours_full",
                           save=Path(tmp) if method == "report" else None)
        seconds, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    out.update(seconds=seconds, cpu_seconds=cpu, rss0_kb=rss0, peak_kb=_rss_kb(), import_seconds=import_s)
    args.result_file.write_text(json.dumps(out))


def spawn(method: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    result = work / f"{method}.json"
    cmd = [sys.executable, __file__, "--child", method, "--rows", str(args.rows), "--columns", str(args.columns),
           "--seed", str(args.seed), "--result-file", str(result)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # e.g. killed for memory: say so instead of a figure
        return {"error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    return dict(json.loads(result.read_text()))


def report(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    base = runs["scipy"]
    shifted = sorted(f"f{i:02d}" for i in range(args.columns // 2))
    lines = [f"# Drift benchmark: {args.rows:,} rows x {args.columns} columns per side",
             "", f"Machine: {machine_note()}; {args.load_before} at start, {load_note()} at end.",
             f"Command: `.venv/bin/python benchmarks/drift.py --rows {args.rows} --columns {args.columns} "
             f"--seed {args.seed}`", "",
             "Peak RSS: `resource.getrusage(RUSAGE_SELF).ru_maxrss` of each method's own child process "
             "(interpreter + imports + both input frames); growth = peak - high-water mark after building the data.",
             "Wall time on a shared machine is mostly waiting for a core: compare the CPU ratio too.",
             "", "| method | wall s | CPU s | ratio to scipy, wall | ratio to scipy, CPU | peak RSS MB (growth) | "
             "drifted found | note |", "|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        r = runs[method]
        if "error" in r:
            lines.append(f"| {LABELS[method]} | - | - | - | - | - | - | did not run: {r['error']} |")
            continue
        found = f"{len(set(r['drifted']) & set(shifted))}/{len(shifted)} shifted, " \
                f"{len(set(r['drifted']) - set(shifted))} unshifted"
        note = r.get("sampling", "all rows")
        if r.get("import_seconds"):
            note += f"; Evidently import {r['import_seconds']:.1f} s (not timed)"
        if r.get("html_bytes"):
            note += f"; HTML {r['html_bytes'] / 1e6:.1f} MB"
        lines.append(f"| {LABELS[method]} | {r['seconds']:.2f} | {r['cpu_seconds']:.1f} | "
                     f"{r['seconds'] / base['seconds']:.2f}x | {r['cpu_seconds'] / base['cpu_seconds']:.2f}x | "
                     f"{r['peak_kb'] / 1024:,.0f} "
                     f"(+{(r['peak_kb'] - r['rss0_kb']) / 1024:,.0f}) | {found} | {note} |")
    lines += ["", correctness(runs), "", "Raw: `" + json.dumps({m: {k: v for k, v in r.items() if k != "p_values"}
                                                         for m, r in runs.items()}) + "`"]
    return "\n".join(lines) + "\n"


def correctness(runs: dict[str, dict[str, Any]]) -> str:
    base, full = runs["scipy"], runs["ours_full"]
    if "error" in full:
        return "Correctness: sampling-off run did not complete; p-values not compared."
    worst = max(abs(full["p_values"][c] - p) / max(p, 1e-300) for c, p in base["p_values"].items())
    same = full["drifted"] == base["drifted"]
    return (f"Correctness: sampling off vs scipy: verdicts {'identical' if same else 'DIFFER'}; max relative "
            f"p-value difference {worst:.2e}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_drift.md"))
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return
    args.load_before = load_note()
    with tempfile.TemporaryDirectory(prefix="mlops-bench-drift-") as tmp:
        runs = {}
        for method in METHODS:
            runs[method] = spawn(method, args, Path(tmp))
            print(f"  {method}: {runs[method].get('seconds', runs[method].get('error'))}", file=sys.stderr)
    text = report(runs, args)
    args.out.write_text(text)
    print(text)
    if "DIFFER" in text:
        sys.exit(1)


if __name__ == "__main__":
    main()
