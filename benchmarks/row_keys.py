"""What the row-key rules cost at landing, next to the GX validation every batch already pays.

A landed history of `--days` days of demo data (driver_hourly_stats and rides, seeded) sits in a
temporary offline store; a new batch of one more day (plus 1 % of rows re-sent from the history,
so the rules have something to find) is checked as the gate checks it:

- baseline: `validate_frame` (contract rules + the shipped GX suite) on the new batch;
- `row rules`: `core.row_keys.landed_rows` + `match_rows` against the history — for
  driver_hourly_stats (key driver_id + event_timestamp: only the batch's day partitions are read)
  and rides (key ride_id, no timestamp: every partition is read).

Correctness: the identical / conflicting rows found equal a pandas merge of batch and history on the
key (exit 1 otherwise). Timings: median of `--repeat`, interleaved, after a warm-up.

    .venv/bin/python benchmarks/row_keys.py [--days 30] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _feature_data import machine_note
from airflow_mlops.core.demo_data import DemoConfig, generate
from airflow_mlops.core.offline import land_batch
from airflow_mlops.core.row_keys import RowPolicy, landed_rows, match_rows
from airflow_mlops.core.suites import Contract, load_suite
from airflow_mlops.core.validation import gx_context, validate_frame

START = datetime(2026, 10, 1, tzinfo=UTC)


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _expected(batch: pd.DataFrame, history: pd.DataFrame, key: list[str]) -> tuple[int, int]:
    joined = batch.merge(history, on=key, suffixes=("", "_old"))
    values = [c for c in batch.columns if c not in key]
    differs = (joined[values].to_numpy() != joined[[f"{c}_old" for c in values]].to_numpy()).any(axis=1)
    return int((~differs).sum()), int(differs.sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    history = generate(DemoConfig(start=START, days=args.days))
    new = generate(DemoConfig(start=START + timedelta(days=args.days), days=1, seed=8))
    context, failed = gx_context(), False
    with tempfile.TemporaryDirectory() as tmp:
        offline = Path(tmp) / "offline"
        for dataset, frame in history.items():
            src = Path(tmp) / f"{dataset}.parquet"
            frame.to_parquet(src, index=False)
            land_batch(src, dataset, offline_dir=offline)
        print(machine_note())
        print(f"history: {args.days} days ({', '.join(f'{d} {len(f):,} rows' for d, f in history.items())}); "
              f"batch: 1 day + 1 % re-sent rows")
        for dataset, frame in new.items():
            resent = history[dataset].sample(frac=0.01, random_state=1)
            batch = pd.concat([frame, resent], ignore_index=True)
            suite = load_suite(dataset)
            policy = RowPolicy.of(Contract.from_suite(suite))

            def gate(batch: pd.DataFrame = batch, suite: dict = suite) -> None:
                validate_frame(batch, suite, context=context)

            def rows(batch: pd.DataFrame = batch, policy: RowPolicy = policy) -> object:
                return match_rows(batch, landed_rows(offline, policy, batch), policy.key)

            gate(), rows()  # warm-up
            base, extra = [], []
            for _ in range(args.repeat):
                base.append(_median(gate, 1))
                extra.append(_median(rows, 1))
            found = rows()
            expected = _expected(batch, history[dataset], list(policy.key))
            ok = (len(found.identical), len(found.conflicting)) == expected
            failed |= not ok
            b, e = statistics.median(base), statistics.median(extra)
            print(json.dumps({"dataset": dataset, "key": list(policy.key), "batch_rows": len(batch),
                              "gx_gate_s": round(b, 3), "row_rules_s": round(e, 3), "ratio": round(e / b, 2),
                              "identical_conflicting": [len(found.identical), len(found.conflicting)],
                              "equals_pandas_merge": ok}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
