"""What explaining a version adds to its training job, on the demo's data size (`airflow-mlops demo`: 30 days).

Seeded demo data (`core.demo_data`, 30 days x 3,500 rides, 200 drivers: what the demo generates) joined as of
each ride with the driver stats (the point-in-time join the training-set task does, here with pandas); then, per
shipped spec trained on it (ride_completion: HistGradientBoostingClassifier; ride_duration:
HistGradientBoostingRegressor on the completed rides), `core.training.train` with the spec's estimator, params,
split and seed, and `jobs.training.explain_version` (permutation importance on at most 2,000 held-out rows,
3 repeats, the spec's primary metric), each timed `--repeats` times; reported: best and median seconds of both
and the ratio. No MLflow, no Airflow: the logging of the artifact is a few KB.

    .venv/bin/python benchmarks/training_explain.py [--days 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _feature_data import load_note, machine_note


def demo_frame(days: int) -> tuple[dict[str, Any], list[str]]:
    import pandas as pd

    from airflow_mlops.core.demo_data import DemoConfig, generate

    tables = generate(DemoConfig(start=datetime(2026, 10, 1, tzinfo=UTC), days=days))
    stats = tables["driver_hourly_stats"].drop(columns="created").sort_values("event_timestamp")
    joined = {dataset: pd.merge_asof(tables[dataset].sort_values("event_timestamp"), stats, on="event_timestamp",
                                     by="driver_id", direction="backward") for dataset in ("rides", "trips")}
    return joined, [c for c in stats.columns if c not in ("driver_id", "event_timestamp")]


def timed(spec: Any, frame: Any, repeats: int) -> dict[str, Any]:
    from airflow_mlops.core import training
    from airflow_mlops.jobs.training import TrainingRequest, explain_version

    t, f = spec.training, spec.features
    request = TrainingRequest(model_name=spec.name, training_set={"path": "-", "sha256": "-"},
                              estimator=t.estimator, label=f.label, params=dict(t.params), seed=t.seed,
                              split=t.split.model_dump(), exclude_columns=list(f.entity_keys), task=spec.task,
                              primary_metric=spec.evaluation.primary_metric)
    fits, explains, found = [], [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = training.train(frame, label=f.label, estimator=t.estimator, params=t.params, seed=t.seed,
                                split_config=t.split.model_dump(), exclude=list(f.entity_keys), task=spec.task)
        fits.append(time.perf_counter() - started)
        started = time.perf_counter()
        found = explain_version(request, result)
        explains.append(time.perf_counter() - started)
    assert found is not None
    return {"rows": len(frame), "held_out": found["held_out_rows"], "sampled": found["rows"],
            "features": len(found["features"]), "train": fits, "explain": explains}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=30, help="days of demo data (the demo's default: 30)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from airflow_mlops.core.spec import load_specs

    frames, stats_columns = demo_frame(args.days)
    specs = {s.name: s for s in load_specs()}
    print(f"\ntraining + explanation: {machine_note()}; {load_note()}; {args.days} days of demo data\n")
    print("| model | rows | held-out (sampled) | features | train() s best / median | explain s best / median "
          "| explain / train |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, spec in sorted(specs.items()):
        f = spec.features  # the training set's columns: keys, time, request features, label, the view's features
        keep = [*f.entity_keys, f.entity_df.timestamp_column, *f.entity_df.request_features, f.label, *stats_columns]
        frame = frames[f.entity_df.dataset][keep]
        r = timed(spec, frame, args.repeats)
        train_s, explain_s = statistics.median(r["train"]), statistics.median(r["explain"])
        print(f"| {name} | {r['rows']:,} | {r['held_out']:,} ({r['sampled']:,}) | {r['features']} | "
              f"{min(r['train']):.2f} / {train_s:.2f} | {min(r['explain']):.2f} / {explain_s:.2f} | "
              f"{explain_s / train_s:.2f} |")


if __name__ == "__main__":
    main()
