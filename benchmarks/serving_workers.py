"""Serving throughput by worker processes: `airflow-mlops serve --workers 1` vs `--workers 2` vs
`mlflow models serve --workers 2`, same model, same run.

Setup (not timed) is benchmarks/serving.py's: a temporary MLOPS_HOME with `--days` of demo data in the
Feast SQLite online store and a linear Pipeline (median imputer, StandardScaler, LogisticRegression)
registered as ride_completion v1 with the `champion` alias. Three servers then run side by side, each its
own process tree on a free port:
- ours-1:   `airflow-mlops serve --model ride_completion --workers 1`;
- ours-2:   `airflow-mlops serve --model ride_completion --workers 2` (multiprocess metrics, both follow the alias);
- mlflow-2: `mlflow models serve -m models:/ride_completion@champion --env-manager local --workers 2`.

Cases: ours /predict (entity key + Feast lookup) on ours-1 and ours-2; /invocations with all 7 feature
columns (no lookup) on ours-1, ours-2 and mlflow-2. Each case: a warm-up, then a closed loop of
`--clients` client PROCESSES for `--seconds`, each on a keep-alive connection renewed every
`--reconnect` requests (with two workers, a connection is served by the worker that accepted it: renewing
spreads the clients over both, as a load balancer's pool would). The cases run `--repeat` times in
alternating order; the median throughput is reported, with ratios to the same protocol on one worker and
to MLflow's two workers. Client processes share the machine's cores with the servers (their CPU is part of
every figure). Before timing, all five cases agree on 20 drivers' predictions (|diff| < 1e-9); any non-200
answer, or a server that dies, exits 1. Servers that are not being timed sit idle.

    .venv/bin/python benchmarks/serving_workers.py [--clients 4] [--seconds 15] [--repeat 2] [--days 7]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving as base  # benchmarks/serving.py: setup, bodies, feature rows
from _feature_data import load_note, machine_note

SERVERS = {"ours-1": ("ours", 1), "ours-2": ("ours", 2), "mlflow-2": ("mlflow", 2)}
CASES = (("ours /predict (entity key + Feast lookup)", "ours-1", "/predict", "predict"),
         ("ours /predict (entity key + Feast lookup)", "ours-2", "/predict", "predict"),
         ("ours /invocations (features given)", "ours-1", "/invocations", "invocations"),
         ("ours /invocations (features given)", "ours-2", "/invocations", "invocations"),
         ("mlflow /invocations (features given)", "mlflow-2", "/invocations", "invocations"))


def command(name: str, port: int) -> list[str]:
    kind, workers = SERVERS[name]
    if kind == "ours":
        return [str(base.BIN / "airflow-mlops"), "serve", "--model", base.MODEL, "--port", str(port),
                "--workers", str(workers)]
    return [str(base.BIN / "mlflow"), "models", "serve", "-m", f"models:/{base.MODEL}@champion", "--env-manager",
            "local", "--port", str(port), "--workers", str(workers)]


class Servers:
    """The three server process trees; `check()` exits 1 naming one that died, `stop()` ends them (SIGTERM)."""

    def __init__(self, work: Path) -> None:
        env = base.state_env(work)
        self.work = work
        self.ports = {name: base.free_port() for name in SERVERS}
        self.logs = {name: (work / f"{name}.log").open("w") for name in SERVERS}
        self.procs = {name: subprocess.Popen(command(name, self.ports[name]), env=env, cwd=work,
                                             stdout=self.logs[name], stderr=subprocess.STDOUT, start_new_session=True)
                      for name in SERVERS}

    def wait_ready(self, timeout: float = 300.0) -> None:
        """ours: /ready on fresh connections until every worker has loaded the model; mlflow: /ping 200 ten
        times in a row on fresh connections (each worker answers once its model is loaded)."""
        deadline = time.monotonic() + timeout
        for name, (kind, workers) in SERVERS.items():
            streak = 0
            while streak < (1 if kind == "ours" else 10):
                self.check()
                if time.monotonic() > deadline:
                    base.fail(f"{name} not ready after {timeout:.0f} s; log: {self.work / f'{name}.log'}")
                status, body = self.get(name, "/ready" if kind == "ours" else "/ping")
                ok = status == 200 and (kind != "ours" or workers == 1 or
                                        len(json.loads(body).get("worker_versions") or {}) == workers)
                streak = streak + 1 if ok else 0
                time.sleep(0 if ok else 0.3)

    def get(self, name: str, path: str) -> tuple[int, bytes]:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.ports[name], timeout=5)
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        except OSError:
            return 0, b""

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                self.logs[name].flush()
                base.fail(f"{name} exited with {proc.returncode}:\n{(self.work / f'{name}.log').read_text()[-3000:]}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def agree(servers: Servers, rows: dict[int, dict[str, float]], columns: list[str]) -> None:
    for driver in list(rows)[:20]:
        got = []
        for _, server, path, case in CASES:
            conn = http.client.HTTPConnection("127.0.0.1", servers.ports[server], timeout=10)
            status, text = base.post(conn, path, base.bodies(case, driver, rows[driver], columns))
            if status != 200:
                base.fail(f"{server} {path} answered {status}: {text[:500]!r}")
            payload = json.loads(text)
            got.append(payload["predictions"][0]["prediction"] if case == "predict" else
                       base._first(payload["predictions"]))
        if max(got) - min(got) > 1e-9:
            base.fail(f"driver {driver}: predictions differ between the cases: {got}")


def _client(port: int, path: str, payloads: list[bytes], offset: int, step: int, reconnect: int, start_at: float,
            stop_at: float) -> tuple[list[float], list[str]]:
    """One client process: back-to-back requests between two wall-clock instants, a new connection every
    `reconnect` requests (its setup is timed: the first request on it pays it)."""
    latencies: list[float] = []
    i = offset
    while time.time() < start_at:
        time.sleep(0.001)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.time() < stop_at:
        if latencies and len(latencies) % reconnect == 0:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = payloads[i % len(payloads)]
        i += step
        started = time.perf_counter()
        status, text = base.post(conn, path, body)
        latencies.append(time.perf_counter() - started)
        if status != 200:
            return latencies, [f"{status}: {text[:300]!r}"]
    return latencies, []


def closed_loop(port: int, path: str, payloads: list[bytes], args: argparse.Namespace,
                seconds: float) -> dict[str, Any]:
    from concurrent.futures import ProcessPoolExecutor

    start_at = time.time() + 1.0  # every client forked before the clock starts
    with ProcessPoolExecutor(args.clients, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_client, port, path, payloads, n, args.clients, args.reconnect, start_at,
                               start_at + seconds) for n in range(args.clients)]
        results = [future.result() for future in futures]
    errors = [error for _, errs in results for error in errs]
    if errors:
        base.fail(f"port {port} {path}: {len(errors)} failed request(s), first: {errors[0]}")
    flat = sorted(x for lat, _ in results for x in lat)
    return {"rps": len(flat) / seconds, "p50": statistics.median(flat) * 1e3,
            "p99": flat[min(len(flat) - 1, int(len(flat) * 0.99))] * 1e3}


def measure(servers: Servers, rows: dict[int, dict[str, float]], columns: list[str],
            args: argparse.Namespace) -> dict[tuple[str, str], list[dict[str, Any]]]:
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(label, server): [] for label, server, _, _ in CASES}
    for repeat in range(args.repeat):
        order = CASES if repeat % 2 == 0 else tuple(reversed(CASES))
        for label, server, path, case in order:
            payloads = [base.bodies(case, d, rows[d], columns) for d in rows]
            closed_loop(servers.ports[server], path, payloads, args, args.warmup)
            runs[(label, server)].append(closed_loop(servers.ports[server], path, payloads, args, args.seconds))
            servers.check()
            print(f"  run {repeat + 1}: {label} on {server}: {runs[(label, server)][-1]['rps']:,.0f} req/s", flush=True)
    return runs


def report(runs: dict[tuple[str, str], list[dict[str, Any]]], args: argparse.Namespace, setup_s: float,
           info: dict[str, Any]) -> None:
    rps = {key: statistics.median(r["rps"] for r in values) for key, values in runs.items()}
    mlflow = rps[(CASES[4][0], "mlflow-2")]
    print(f"\nserving workers benchmark: {machine_note()}; {load_note()} (at the end)")
    print(f"model: {base.MODEL} v1 = Pipeline(median imputer, StandardScaler, LogisticRegression) on "
          f"{len(info['columns'])} columns; {len(info['drivers'])} drivers online (Feast SQLite); "
          f"setup {setup_s:.0f} s")
    print(f"{args.clients} client processes, closed loop, {args.seconds:g} s per case after {args.warmup:g} s warm-up, "
          f"new connection every {args.reconnect} requests, {args.repeat} run(s) in alternating order; median\n")
    print("| case | server | req/s (median) | all runs, req/s | p50 / p99 ms (last run) | vs same case, 1 worker "
          "| vs mlflow, 2 workers |")
    print("|---|---|---:|---|---:|---:|---:|")
    for (label, server), values in runs.items():
        one = rps.get((label, "ours-1"))
        same = f"{rps[(label, server)] / one:.2f}x" if one and server != "mlflow-2" else "-"
        last, every = values[-1], ", ".join(f"{r['rps']:,.0f}" for r in values)
        print(f"| {label} | {server} | {rps[(label, server)]:,.0f} | {every} "
              f"| {last['p50']:.2f} / {last['p99']:.2f} | {same} | {rps[(label, server)] / mlflow:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent closed-loop client processes")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per case and run")
    parser.add_argument("--warmup", type=float, default=3.0, help="untimed seconds per case before timing")
    parser.add_argument("--repeat", type=int, default=2, help="runs of every case, in alternating order")
    parser.add_argument("--reconnect", type=int, default=200, help="requests per client connection")
    parser.add_argument("--days", type=int, default=7, help="days of demo data")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state dir")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-workers-"))
    servers = None
    try:
        started = time.monotonic()
        info = base.setup(work, args.days)
        rows = base.feature_rows(info["columns"], info["drivers"])
        if len(rows) < 20:
            base.fail(f"only {len(rows)} drivers have every online feature; need >= 20 (raise --days?)")
        servers = Servers(work)
        servers.wait_ready()
        setup_s = time.monotonic() - started
        agree(servers, rows, info["columns"])
        print(f"setup and all servers ready in {setup_s:.0f} s; {load_note()} (before timing)", flush=True)
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
