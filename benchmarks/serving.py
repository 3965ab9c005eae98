"""Online serving: `airflow-mlops serve` vs `mlflow models serve --env-manager local`, same model, same run.

Setup (not timed), in a temporary MLOPS_HOME: `--days` of seeded demo data (airflow_mlops.demo),
landed into the offline store, `feast apply` + materialize into the SQLite online store (what the
feature DAG does); the ride_completion point-in-time training set (Feast, duckdb); a linear model
(median imputer + StandardScaler + LogisticRegression, a Pipeline fitted on a DataFrame) logged to a
SQLite MLflow store, registered as ride_completion v1 and given the `champion` alias.

Then two servers start side by side on free ports, each its own process:
- ours:   `airflow-mlops serve --model ride_completion --workers W` (uvicorn, follows the alias);
- mlflow: `mlflow models serve -m models:/ride_completion@champion --env-manager local --workers W`.

Three single-row cases, each warmed up, then two closed loops: client processes (not threads: one
GIL would make the client the bottleneck) with one keep-alive HTTP/1.1 connection each send one
request after the other for `--seconds`; latency with 1 client (no queueing), throughput with
`--clients` concurrent clients:
- ours /predict       {"driver_id": id, + 3 request features}: Feast online lookup + predict;
- ours /invocations   dataframe_split with all 7 feature columns (no lookup);
- mlflow /invocations the same body.
Entities cycle through every materialized driver. Reported: p50/p99 latency (ms, per request, as the
client sees it) for 1 and for N clients, throughput (requests/s) with N clients, ratios ours/mlflow.
The client runs on the same 2 cores as the servers (its CPU is part of every figure). Correctness: before timing,
the three cases agree on the prediction of 20 drivers (|diff| < 1e-9); any non-200 answer during
the run, or a server that fails to start or dies, exits 1.

    .venv/bin/python benchmarks/serving.py [--clients 4] [--seconds 15] [--workers 1] [--days 7]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _feature_data import load_note, machine_note

MODEL = "ride_completion"
PROJECT = Path(__file__).resolve().parents[1]
REQUEST = {"trip_distance_km": 3.2, "surge_multiplier": 1.25, "pickup_hour": 8}
BIN = Path(sys.executable).parent


def state_env(work: Path) -> dict[str, str]:
    """A process environment pointing at the temporary state only (no connection or URI leaks in)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW_", "AIRFLOW__", "MLOPS_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY"))}
    env.update(MLOPS_HOME=str(work / "home"), AIRFLOW_HOME=str(work / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               MLFLOW_TRACKING_URI=f"sqlite:///{work / 'home' / 'mlflow' / 'mlflow.db'}",
               MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", PYTHONHASHSEED="0",
               # mlflow models serve execs `uvicorn` found on PATH: this venv's
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


def setup(work: Path, days: int) -> dict[str, Any]:
    """Demo data -> offline store -> Feast apply/materialize -> training set -> logistic model as champion."""
    os.environ.update(state_env(work))
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from airflow_mlops import config
    from airflow_mlops.core.offline import land_landing_dir
    from airflow_mlops.core.spec import load_specs
    from airflow_mlops.core.training import build_pipeline, model_requirements
    from airflow_mlops.core.training_set import build_training_set, load_entity_df
    from airflow_mlops.demo import write_demo_batches
    from airflow_mlops.hooks.feast import FeastHook
    from airflow_mlops.hooks.mlflow import MLflowHook

    spec = next(s for s in load_specs() if s.name == MODEL)
    write_demo_batches(days=days)
    paths = config.paths()
    land_landing_dir(paths.landing_dir, paths.offline_dir)
    hook = FeastHook()
    hook.apply()
    hook.materialize_new()
    f = spec.features
    entity = load_entity_df(paths.dataset_dir(f.entity_df.dataset), f.entity_df.timestamp_column, days)
    lineage = build_training_set(hook.get_store(), feature_service=f.feature_service, entity_df=entity,
                                 entity_keys=list(f.entity_keys), timestamp_column=f.entity_df.timestamp_column,
                                 label=f.label, request_features=list(f.entity_df.request_features),
                                 out_dir=paths.training_sets_dir)
    import pandas as pd

    frame = pd.read_parquet(lineage["path"])
    columns = [*f.entity_df.request_features, *(c for c in frame.columns if c not in
                                                 {*f.entity_keys, f.entity_df.timestamp_column, f.label,
                                                  *f.entity_df.request_features})]
    model = build_pipeline("sklearn.linear_model.LogisticRegression", {"max_iter": 500},
                           {"impute": "median", "scale": True}, seed=7)
    model.fit(frame[columns].astype("float64"), frame[f.label])
    assert isinstance(model.steps[-1][1], LogisticRegression)
    mlflow_hook = MLflowHook()
    with mlflow_hook.activated() as client:
        mlflow.set_experiment("bench_serving")
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(model, name="model", pip_requirements=model_requirements("sklearn"),
                                            serialization_format="cloudpickle",
                                            # MLflow's pyfunc returns predict() (labels) unless told otherwise;
                                            # ours answers the positive-class probability: compare like for like
                                            pyfunc_predict_fn="predict_proba")
        version = mlflow.register_model(info.model_uri, MODEL)
        client.set_registered_model_alias(MODEL, "champion", version.version)
    drivers = sorted(int(d) for d in frame[f.entity_keys[0]].unique())
    return {"columns": columns, "drivers": drivers, "rows": len(frame), "model": model}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Servers:
    """Both server processes; `check()` exits 1 naming the one that died, `stop()` ends them (SIGTERM)."""

    def __init__(self, work: Path, workers: int) -> None:
        env = state_env(work)
        self.ports = {"ours": free_port(), "mlflow": free_port()}
        commands = {
            "ours": [str(BIN / "airflow-mlops"), "serve", "--model", MODEL, "--port", str(self.ports["ours"]),
                     "--workers", str(workers)],
            "mlflow": [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion", "--env-manager",
                       "local", "--port", str(self.ports["mlflow"]), "--workers", str(workers)],
        }
        self.logs = {name: (work / f"{name}.log").open("w") for name in commands}
        self.procs = {name: subprocess.Popen(cmd, env=env, cwd=work, stdout=self.logs[name], stderr=subprocess.STDOUT,
                                             start_new_session=True) for name, cmd in commands.items()}
        self.work = work

    def wait_ready(self, timeout: float = 180.0) -> None:
        paths = {"ours": "/ready", "mlflow": "/ping"}
        deadline = time.monotonic() + timeout
        for name, path in paths.items():
            while True:
                self.check()
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", self.ports[name], timeout=2)
                    conn.request("GET", path)
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    fail(f"{name} server not ready after {timeout:.0f} s; log: {self.work / f'{name}.log'}")
                time.sleep(0.3)

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                self.logs[name].flush()
                tail = (self.work / f"{name}.log").read_text()[-3000:]
                fail(f"{name} server exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def fail(message: str) -> None:
    print(f"FAILED: {message}", file=sys.stderr)
    raise SystemExit(1)


def bodies(case: str, driver: int, features: dict[str, float], columns: list[str]) -> bytes:
    if case == "predict":
        return json.dumps({"driver_id": driver, **REQUEST}).encode()
    return json.dumps({"dataframe_split": {"columns": columns, "data": [[features[c] for c in columns]]}}).encode()


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def feature_rows(columns: list[str], drivers: list[int]) -> dict[int, dict[str, float]]:
    """Each driver's full model input, from the online store (what /predict looks up) + the request features."""
    from airflow_mlops.hooks.feast import FeastHook

    store = FeastHook().get_store()
    online = store.get_online_features(features=store.get_feature_service("ride_completion_v1"),
                                       entity_rows=[{"driver_id": d} for d in drivers],
                                       full_feature_names=False).to_dict()
    rows = {}
    for i, driver in enumerate(drivers):
        values = {**REQUEST, **{k: v[i] for k, v in online.items()}}
        if any(values[c] is None for c in columns):
            continue  # no online value within the TTL: /predict fills NaN, JSON cannot carry it to MLflow
        rows[driver] = {c: float(values[c]) for c in columns}
    return rows


CASES = (("ours /predict (entity keys + Feast lookup)", "ours", "/predict", "predict"),
         ("ours /invocations (features given)", "ours", "/invocations", "invocations"),
         ("mlflow /invocations (features given)", "mlflow", "/invocations", "invocations"))


def agree(servers: Servers, rows: dict[int, dict[str, float]], columns: list[str]) -> None:
    for driver in list(rows)[:20]:
        got = []
        for _, server, path, case in CASES:
            conn = http.client.HTTPConnection("127.0.0.1", servers.ports[server], timeout=10)
            status, text = post(conn, path, bodies(case, driver, rows[driver], columns))
            if status != 200:
                fail(f"{server} {path} answered {status}: {text[:500]!r}")
            payload = json.loads(text)
            got.append(payload["predictions"][0]["prediction"] if case == "predict" else
                       _first(payload["predictions"]))
        if max(got) - min(got) > 1e-9:
            fail(f"driver {driver}: predictions differ between the cases: {got}")


def _first(predictions: Any) -> float:
    first = predictions[0]
    return float(first if not isinstance(first, (list, dict)) else list(first.values())[0]
                 if isinstance(first, dict) else first[-1])


def _client(port: int, path: str, payloads: list[bytes], offset: int, step: int, start_at: float,
            stop_at: float) -> tuple[list[float], list[str]]:
    """One client process: one keep-alive connection, back-to-back requests between two wall-clock instants."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    i = offset
    while time.time() < start_at:
        time.sleep(0.001)
    while time.time() < stop_at:
        body = payloads[i % len(payloads)]
        i += step
        started = time.perf_counter()
        status, text = post(conn, path, body)
        latencies.append(time.perf_counter() - started)
        if status != 200:
            return latencies, [f"{status}: {text[:300]!r}"]
    return latencies, []


def closed_loop(port: int, path: str, payloads: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """`clients` client PROCESSES (threads would share one GIL and measure the client), for `seconds` each."""
    from concurrent.futures import ProcessPoolExecutor

    start_at = time.time() + 1.0  # every client forked and connected before the clock starts
    with ProcessPoolExecutor(clients, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_client, port, path, payloads, n, clients, start_at, start_at + seconds)
                   for n in range(clients)]
        results = [future.result() for future in futures]
    errors = [error for _, errs in results for error in errs]
    if errors:
        fail(f"port {port} {path}: {len(errors)} failed request(s), first: {errors[0]}")
    flat = sorted(x for lat, _ in results for x in lat)
    return {"requests": len(flat), "rps": len(flat) / seconds, "p50": statistics.median(flat) * 1e3,
            "p99": flat[min(len(flat) - 1, int(len(flat) * 0.99))] * 1e3}


def measure(servers: Servers, rows: dict[int, dict[str, float]], columns: list[str],
            args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    results = {}
    for label, server, path, case in CASES:
        payloads = [bodies(case, d, rows[d], columns) for d in rows]
        closed_loop(servers.ports[server], path, payloads, args.clients, args.warmup)
        servers.check()
        one = closed_loop(servers.ports[server], path, payloads, 1, args.seconds)
        many = closed_loop(servers.ports[server], path, payloads, args.clients, args.seconds)
        servers.check()
        results[label] = {**many, "p50_1": one["p50"], "p99_1": one["p99"], "rps_1": one["rps"]}
    return results


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, setup_s: float, info: dict[str, Any]) -> None:
    mlflow = results[CASES[2][0]]
    print(f"\nserving benchmark: {machine_note()}; {load_note()}")
    print(f"model: {MODEL} v1 = Pipeline(median imputer, StandardScaler, LogisticRegression) on "
          f"{len(info['columns'])} columns, trained on {info['rows']:,} rows; {len(info['drivers'])} drivers online "
          f"(Feast SQLite); setup {setup_s:.0f} s")
    print(f"closed loops of {args.seconds:g} s per case after {args.warmup:g} s warm-up: 1 client process "
          f"(latency), then {args.clients} client processes (throughput), keep-alive; {args.workers} uvicorn worker(s) "
          "per server; "
          "single-row requests\n")
    n = args.clients
    print(f"| {'case':<44} | 1 client p50 / p99 ms | {n} clients p50 / p99 ms | req/s ({n} clients) "
          "| req/s vs mlflow |")
    print(f"|{'-' * 46}|----------------------:|-----------------------:|------------------:|----------------:|")
    for label, r in results.items():
        print(f"| {label:<44} | {r['p50_1']:9.2f} / {r['p99_1']:7.2f} | {r['p50']:10.2f} / {r['p99']:7.2f} | "
              f"{r['rps']:17,.0f} | {r['rps'] / mlflow['rps']:14.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent closed-loop clients")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per case and client count")
    parser.add_argument("--warmup", type=float, default=3.0, help="untimed seconds per case before timing")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of EACH server")
    parser.add_argument("--days", type=int, default=7, help="days of demo data")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state dir")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-serving-"))
    servers = None
    try:
        started = time.monotonic()
        info = setup(work, args.days)
        rows = feature_rows(info["columns"], info["drivers"])
        if len(rows) < 20:
            fail(f"only {len(rows)} drivers have every online feature; need >= 20 (raise --days?)")
        servers = Servers(work, args.workers)
        servers.wait_ready()
        setup_s = time.monotonic() - started
        agree(servers, rows, info["columns"])
        report(measure(servers, rows, info["columns"], args), args, setup_s, info)
    finally:
        if servers is not None:
            servers.stop()
        if args.keep:
            print(f"state kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
