"""Cost of `/predict?explain=true` vs a plain `/predict`: same server, same model, same entities, same run.

Setup (not timed) is benchmarks/serving.py's: a temporary MLOPS_HOME with `--days` of seeded demo data, Feast
apply + materialize (SQLite online store), the ride_completion training set, a linear Pipeline (median imputer,
StandardScaler, LogisticRegression) registered as v1 champion. Its run then gets the training-set feature profile
the training job logs (`core.training.feature_profile`, with the medians explanations are measured against).

One `airflow-mlops serve --model ride_completion` process; closed loops of client processes with one keep-alive
connection each (benchmarks/serving.py `closed_loop`), single-row requests cycling over every materialized driver:
plain `/predict`, then `/predict?explain=true`, then both again (two rounds, so a slow phase of the machine shows
as a disagreement between rounds rather than as a cost). Correctness first: for 20 drivers the explained answer's
prediction equals the plain one and its `explanation.output`; any non-200 answer exits 1.

    .venv/bin/python benchmarks/serving_explain.py [--clients 4] [--seconds 10] [--days 7]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _feature_data import load_note, machine_note
from serving import BIN, MODEL, REQUEST, closed_loop, fail, feature_rows, free_port, post, setup, state_env

PATHS = {"plain": "/predict", "explain": "/predict?explain=true"}


def log_profile() -> None:
    """The training job's feature profile on v1's run (setup logs the model with MLflow directly)."""
    import mlflow.sklearn
    import pandas as pd

    from airflow_mlops import config
    from airflow_mlops.core.training import FEATURE_PROFILE_ARTIFACT, TAG_FEATURE_PROFILE, feature_profile
    from airflow_mlops.hooks.mlflow import MLflowHook

    snapshot = max(config.paths().training_sets_dir.rglob("*.parquet"), key=lambda p: p.stat().st_mtime)
    client = MLflowHook().get_conn()
    version = client.get_model_version(MODEL, "1")
    with MLflowHook().activated():
        columns = list(mlflow.sklearn.load_model(f"models:/{MODEL}/1").feature_names_in_)
    client.log_dict(version.run_id, feature_profile(pd.read_parquet(snapshot), columns), FEATURE_PROFILE_ARTIFACT)
    client.set_tag(version.run_id, TAG_FEATURE_PROFILE, FEATURE_PROFILE_ARTIFACT)


def start(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen([str(BIN / "airflow-mlops"), "serve", "--model", MODEL, "--port", str(port)],
                            env=state_env(work), cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"server exited with {proc.returncode}:\n{(work / 'serve.log').read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.3)
    fail(f"server not ready after 180 s; log: {work / 'serve.log'}")
    raise AssertionError  # fail() exits


def agree(port: int, drivers: list[int]) -> int:
    """Explained and plain answers agree on 20 drivers; returns the number of attributions per row."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    features = 0
    for driver in drivers[:20]:
        body = json.dumps({"driver_id": driver, **REQUEST}).encode()
        answers = {}
        for case, path in PATHS.items():
            status, text = post(conn, path, body)
            if status != 200:
                fail(f"{path} answered {status}: {text[:500]!r}")
            answers[case] = json.loads(text)["predictions"][0]
        plain, explained = answers["plain"], answers["explain"]
        why = explained.pop("explanation")
        if explained["prediction"] != plain["prediction"] or abs(why["output"] - plain["prediction"]) > 1e-12:
            fail(f"driver {driver}: explained answer differs: {answers}")
        features = len(why["attributions"])
    return features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent closed-loop clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per case, client count and round")
    parser.add_argument("--warmup", type=float, default=3.0, help="untimed seconds per case before timing")
    parser.add_argument("--days", type=int, default=7, help="days of demo data")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-explain-"))
    proc = None
    try:
        info = setup(work, args.days)
        log_profile()
        rows = feature_rows(info["columns"], info["drivers"])
        proc, port = start(work)
        features = agree(port, list(rows))
        payloads = [json.dumps({"driver_id": d, **REQUEST}).encode() for d in rows]
        for path in PATHS.values():
            closed_loop(port, path, payloads, args.clients, args.warmup)
        results: dict[str, list[dict[str, Any]]] = {case: [] for case in PATHS}
        for _ in range(2):
            for case, path in PATHS.items():
                one = closed_loop(port, path, payloads, 1, args.seconds)
                many = closed_loop(port, path, payloads, args.clients, args.seconds)
                results[case].append({**many, "p50_1": one["p50"], "p99_1": one["p99"]})
        report(results, args, features, len(rows))
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, features: int, drivers: int) -> None:
    print(f"\nexplain benchmark: {machine_note()}; {load_note()}")
    print(f"model: {MODEL} v1 = Pipeline(median imputer, StandardScaler, LogisticRegression), {features} features "
          f"(one explained row = one predict of {features + 2} rows); {drivers} drivers; 1 uvicorn worker; "
          f"{args.seconds:g} s per loop, two rounds\n")
    n = args.clients
    print(f"| round | case | 1 client p50 / p99 ms | {n} clients p50 / p99 ms | req/s ({n} clients) |")
    print("|---|---|---:|---:|---:|")
    for i in range(2):
        for case in PATHS:
            r = results[case][i]
            print(f"| {i + 1} | {PATHS[case]} | {r['p50_1']:.2f} / {r['p99_1']:.2f} | {r['p50']:.2f} / {r['p99']:.2f} "
                  f"| {r['rps']:,.0f} |")
    for i in range(2):
        plain, explain = results["plain"][i], results["explain"][i]
        print(f"round {i + 1}: explain adds {explain['p50_1'] - plain['p50_1']:+.2f} ms at p50 and "
              f"{explain['p99_1'] - plain['p99_1']:+.2f} ms at p99 (1 client); p99 ratio "
              f"{explain['p99_1'] / plain['p99_1']:.2f}x; throughput ratio {explain['rps'] / plain['rps']:.2f}x")


if __name__ == "__main__":
    main()
