"""Hyperparameter search overhead: our `training.search` against a bare scikit-learn search on the same data.

Same process, same seeded data (`--rows` labelled rows x `--features` numeric features, 4 rows per timestamp),
same pipeline (median imputer -> HistGradientBoostingClassifier), same candidates (`--candidates` of a grid) and
the same time-ordered folds. Rounds alternate the order of the methods; each method's wall time per round:

- bare:     `GridSearchCV(pipeline, grid, cv=folds, scoring="roc_auc", refit=True).fit(x_train, y_train)` on the
            training part of the time split: the loop a user would write by hand.
- core:     `core.training.train(frame, search=...)`: split, the search (`core.search.run_search`), the refit,
            validation scoring and the feature profile; no MLflow.
- budgeted: as core, with `max_seconds` set high enough never to stop: candidates one GridSearchCV each.
- job:      `jobs.training.run_training_job`: core + the MLflow run, the logged model and one child run per
            candidate, into a fresh SQLite MLflow store under a temporary MLOPS_HOME.

Correctness: core, budgeted and job must pick the bare search's best candidate; else exit 1.
Printed: per-method median wall seconds and the median of each round's ratio to bare, then JSON.

    .venv/bin/python benchmarks/search_overhead.py [--rows 20000] [--features 10] [--candidates 6] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ESTIMATOR = "sklearn.ensemble.HistGradientBoostingClassifier"
PARAMS = {"max_iter": 40}
GRID_VALUES = {"max_leaf_nodes": [7, 15, 31, 63], "learning_rate": [0.05, 0.1, 0.2], "l2_regularization": [0.0, 1.0]}


def make_frame(rows: int, features: int, seed: int = 7) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    logit = x[:, 0] - 0.7 * x[:, 1] + 0.4 * x[:, 2] * x[:, 3] + rng.normal(scale=0.8, size=rows)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    frame["label"] = (logit > 0).astype("int64")
    frame["event_timestamp"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(rows) // 4, "min")
    return frame


def grid(candidates: int) -> dict[str, list[Any]]:
    import itertools

    names = list(GRID_VALUES)
    points = list(itertools.product(*GRID_VALUES.values()))[:candidates]
    return {name: sorted({point[i] for point in points}) for i, name in enumerate(names)
            if len({point[i] for point in points}) > 1} or {"max_leaf_nodes": [15]}


def search_config(space: dict[str, list[Any]], **extra: Any) -> dict[str, Any]:
    return {"method": "grid", "space": space, "cv": "time", "folds": 3, "n_iter": 10, "metric": "roc_auc",
            "max_seconds": None, **extra}


def run_bare(frame: Any, space: dict[str, list[Any]]) -> dict[str, Any]:
    from sklearn.model_selection import GridSearchCV

    from airflow_mlops.core import search, training

    train_part, _ = training.split(frame, "time", 0.2, "event_timestamp", 7)
    columns = [c for c in frame.columns if c.startswith("f")]
    x, y = train_part[columns].astype("float64"), train_part["label"]
    pipeline = training.build_pipeline(ESTIMATOR, PARAMS, None, 7)
    folds = search.time_folds(train_part["event_timestamp"].to_numpy(), 3)
    found = GridSearchCV(pipeline, {f"estimator__{k}": v for k, v in space.items()}, cv=folds, scoring="roc_auc",
                         refit=True).fit(x, y)
    return {k.removeprefix("estimator__"): v for k, v in found.best_params_.items()}


def run_core(frame: Any, config: dict[str, Any]) -> dict[str, Any]:
    from airflow_mlops.core import training

    result = training.train(frame, label="label", estimator=ESTIMATOR, params=PARAMS, seed=7, search=config)
    assert result.search is not None
    return result.search.best_params


def run_job(frame_path: Path, config: dict[str, Any], round_no: int) -> dict[str, Any]:
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.jobs.training import TrainingRequest, run_training_job

    record = {"path": str(frame_path), "sha256": hashlib.sha256(frame_path.read_bytes()).hexdigest(),
              "rows": None, "feature_service": "bench", "feature_views": {}}
    request = TrainingRequest(model_name=f"search_bench_{round_no}", training_set=record, estimator=ESTIMATOR,
                              label="label", params=dict(PARAMS), search=config, git_commit="0" * 40)
    hook = MLflowHook()
    result = run_training_job(request, hook)
    params = hook.get_conn().get_run(result["run_id"]).data.params
    return {k: json.loads(params[f"params.{k}"]) for k in config["space"]}


def timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = call()
    return time.perf_counter() - started, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="search_bench_"))
    os.environ["MLOPS_HOME"] = str(home)  # embedded default: a fresh SQLite MLflow store under it
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        os.environ.pop(name, None)
    frame = make_frame(args.rows, args.features)
    frame_path = home / "training_sets" / "bench.parquet"
    frame_path.parent.mkdir(parents=True)
    frame.to_parquet(frame_path, index=False)
    space = grid(args.candidates)
    config = search_config(space)
    methods = {
        "bare": lambda r: run_bare(frame, space),
        "core": lambda r: run_core(frame, config),
        "budgeted": lambda r: run_core(frame, {**config, "max_seconds": 10**6}),
        "job": lambda r: run_job(frame_path, config, r),
    }
    walls: dict[str, list[float]] = {name: [] for name in methods}
    best: dict[str, Any] = {}
    for round_no in range(args.repeat):
        order = list(methods) if round_no % 2 == 0 else list(reversed(methods))
        for name in order:
            seconds, best[name] = timed(lambda name=name, r=round_no: methods[name](r))
            walls[name].append(seconds)
            print(f"round {round_no + 1} {name:9s} {seconds:8.2f} s best {best[name]}", flush=True)
    wrong = {name: found for name, found in best.items() if found != best["bare"]}
    ratios = {name: statistics.median(w / b for w, b in zip(walls[name], walls["bare"], strict=True))
              for name in methods if name != "bare"}
    print(f"\n{args.rows} rows x {args.features} features, {len(list(_points(space)))} candidates x 3 time folds, "
          f"{args.repeat} rounds")
    print(f"{'method':10s} {'median s':>9s} {'ratio to bare (median of rounds)':>34s}")
    for name in methods:
        ratio = f"{ratios[name]:.3f}" if name in ratios else "1"
        print(f"{name:10s} {statistics.median(walls[name]):9.2f} {ratio:>34s}")
    print(json.dumps({"rows": args.rows, "features": args.features, "space": space, "walls": walls,
                      "ratios": ratios, "best": best["bare"], "disagree": wrong}, default=str))
    if wrong:
        print(f"FAIL: best candidate differs from the bare search: {wrong}", file=sys.stderr)
        return 1
    return 0


def _points(space: dict[str, list[Any]]) -> Any:
    import itertools

    return itertools.product(*space.values())


if __name__ == "__main__":
    sys.exit(main())
