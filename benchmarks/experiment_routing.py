"""`/predict` with online-experiment routing vs without, same server, same run (issue 21: within 5 % of the p99).

Setup (not timed) as benchmarks/serving.py: a temporary MLOPS_HOME with `--days` of demo data, Feast online
store, the linear ride_completion model as v1 `champion`; v2 is registered from v1's artifact (`challenger`).
One `airflow-mlops serve` process follows the registry. Then `--rounds` rounds of two phases, their order
alternating per round (off/on, on/off, ...) so that a drift in the machine's load hits both alike:

- off: no experiment record: every row goes to the primary;
- on:  an A/B record (v1 50 %, v2 50 %), written under the registry lease as the start task writes it; every
       row is routed by its keyed entity-key bucket (routing.Arms) and logged with route `experiment:<id>`.

Before each phase the script waits until /ready shows the record's state (the app reads it in its alias poll),
and checks one answer's route. Each phase: a closed loop of ONE client process (latency, no queueing) sending
single-row /predict requests for `--seconds`, entities cycling through every online driver. Reported: p50 / p99
per phase and round, and the median over rounds of the paired p99 ratio on/off.

Two in-process figures follow, steadier than an HTTP p99 on a loaded machine: the routing decision itself
(`Slots.route` per entity key, best of 7 passes over 20,000 keys, with and without an experiment), and the
request handler's own CPU time (`Server.predict` of the real app on the same state, called directly:
`time.thread_time_ns` per call, median and p99 of `--calls` calls per phase, off/on alternating, 3 rounds).

    .venv/bin/python benchmarks/experiment_routing.py [--rounds 4] [--seconds 12] [--days 7]
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _feature_data import load_note, machine_note
from serving import BIN, MODEL, bodies, closed_loop, fail, feature_rows, free_port, post, setup, state_env


def register_second_version() -> None:
    from airflow_mlops.hooks.mlflow import MLflowHook

    with MLflowHook().activated() as client:
        v1 = client.get_model_version_by_alias(MODEL, "champion")
        v2 = client.create_model_version(MODEL, v1.source, run_id=v1.run_id)
        client.set_registered_model_alias(MODEL, "challenger", v2.version)


def experiment(on: bool, round_: int) -> str | None:
    """Start an A/B record (on) or stop the running one (off), under the lease; the record id or None."""
    from airflow_mlops.core.experiment_registry import Who, start
    from airflow_mlops.core.spec import Experiment
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.hooks.mlflow_registry import ModelRegistry

    registry = ModelRegistry(MLflowHook().get_conn(), MODEL)
    who = Who("benchmark", "benchmark", "benchmark", f"round_{round_}_{'on' if on else 'off'}", "experiment")
    if on:
        return start(registry, Experiment(type="ab", traffic=0.5, metric="accuracy"), task="binary",
                     primary_metric="roc_auc", candidate="2", evaluated_champion="1", who=who, at=datetime.now(UTC),
                     run_id=None).id
    with registry.lease(who.owner):
        record = registry.experiment()
        if record is not None and record.running:
            registry.write_experiment(replace(record, status="stopped"))
    return None


def wait_routing(port: int, wanted: str | None, payload: bytes, timeout: float = 60.0) -> None:
    """Until /ready shows `wanted` and a /predict answer carries its route."""
    deadline = time.monotonic() + timeout
    route = f"experiment:{wanted}" if wanted else "primary"
    ready: dict[str, Any] = {}
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/ready")
            ready = json.loads(conn.getresponse().read())
            if ready.get("ready") and ((ready.get("experiment") or {}).get("id")) == wanted:
                status, text = post(conn, "/predict", payload)
                if status == 200 and json.loads(text)["predictions"][0]["route"] == route:
                    return
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            fail(f"the server does not route {route} after {timeout:.0f} s: {ready}")
        time.sleep(0.2)


def run_rounds(port: int, payloads: list[bytes], args: argparse.Namespace) -> list[dict[str, Any]]:
    measured = []
    closed_loop(port, "/predict", payloads, 1, args.warmup)
    for round_ in range(args.rounds):
        order = (False, True) if round_ % 2 == 0 else (True, False)
        for on in order:
            wanted = experiment(on, round_)
            wait_routing(port, wanted, payloads[0])
            closed_loop(port, "/predict", payloads, 1, 1.0)  # the newly loaded arm warm, off the clock
            result = closed_loop(port, "/predict", payloads, 1, args.seconds)
            measured.append({"round": round_ + 1, "phase": "on" if on else "off", **result})
            print(f"round {round_ + 1} {'on ' if on else 'off'}: p50 {result['p50']:.3f} ms, "
                  f"p99 {result['p99']:.3f} ms, {result['requests']:,} requests", flush=True)
    return measured


def route_cost() -> dict[str, float]:
    """Microseconds per `Slots.route(key)`: a single model, and a 2-arm experiment (keyed bucket + bisect)."""
    import timeit
    from types import SimpleNamespace

    from airflow_mlops.serving.routing import Arms, Slots, entity_key_text

    one, two = SimpleNamespace(version="1"), SimpleNamespace(version="2")
    keys = [entity_key_text({"driver_id": d}) for d in range(20_000)]
    cases = {"single": Slots(one), "experiment": Slots(one, experiment=Arms.of(  # type: ignore[arg-type]
        "v2-20261207T000000", "experiment:v2-20261207T000000", [one, two], [0.5, 0.5]))}  # type: ignore[list-item]
    cost = {}
    for name, slots in cases.items():
        passes = timeit.repeat(lambda s=slots: [s.route(k) for k in keys], number=1, repeat=7)
        cost[name] = min(passes) / len(keys) * 1e6
    return cost


def handler_cpu(payloads: list[bytes], calls: int) -> list[dict[str, Any]]:
    """Thread CPU microseconds per `Server.predict` call of the real app in this process, off and on."""
    from fastapi.testclient import TestClient

    from airflow_mlops.serving.app import create_app

    app = create_app(MODEL)
    measured = []
    with TestClient(app):
        server = app.state.server
        for round_ in range(3):
            for on in (False, True) if round_ % 2 == 0 else (True, False):
                experiment(on, 100 + round_)
                server.manager.poll_once()  # apply the record now (the poller would within poll_seconds)
                if (server.manager.status()["experiment"] is not None) != on:
                    fail(f"the in-process app does not show the experiment {'on' if on else 'off'}")
                cpu = []
                for i in range(calls + 300):  # the first 300 warm up
                    started = time.thread_time_ns()
                    reply = server.predict(payloads[i % len(payloads)], "application/json", None)
                    cpu.append(time.thread_time_ns() - started)
                    if reply.status != 200:
                        fail(f"in-process /predict answered {reply.status}: {reply.payload}")
                cpu = sorted(cpu[300:])
                measured.append({"round": round_ + 1, "phase": "on" if on else "off",
                                 "p50": statistics.median(cpu) / 1e3, "p99": cpu[int(len(cpu) * 0.99)] / 1e3})
    return measured


def report(measured: list[dict[str, Any]], args: argparse.Namespace, setup_s: float, drivers: int,
           handler: list[dict[str, Any]]) -> None:
    cost = route_cost()
    print(f"\nexperiment routing benchmark: {machine_note()}; {load_note()}")
    print(f"{drivers} online drivers; setup {setup_s:.0f} s; {args.rounds} rounds x 2 phases of {args.seconds:g} s, "
          "1 client process, single-row /predict\n")
    print("| round | phase | requests | p50 ms | p99 ms |")
    print("|---:|---|---:|---:|---:|")
    for m in measured:
        print(f"| {m['round']} | {m['phase']} | {m['requests']:,} | {m['p50']:.3f} | {m['p99']:.3f} |")
    by = {(m["round"], m["phase"]): m for m in measured}
    rounds = sorted({m["round"] for m in measured})
    p99 = [by[(r, "on")]["p99"] / by[(r, "off")]["p99"] for r in rounds]
    p50 = [by[(r, "on")]["p50"] / by[(r, "off")]["p50"] for r in rounds]
    print(f"\npaired ratios on/off per round: p99 {', '.join(f'{x:.3f}' for x in p99)}; "
          f"p50 {', '.join(f'{x:.3f}' for x in p50)}")
    print(f"median ratio: p99 {statistics.median(p99):.3f}, p50 {statistics.median(p50):.3f} "
          f"(target: p99 within 1.05)")
    off_p50 = statistics.median(m["p50"] for m in measured if m["phase"] == "off")
    added = cost["experiment"] - cost["single"]
    print(f"routing per entity key: {cost['single']:.3f} us (single model), {cost['experiment']:.3f} us (experiment, "
          f"2 arms): +{added:.3f} us = {added / (off_p50 * 1e3):.3%} of the off-phase p50 ({off_p50:.3f} ms)")
    print("\nhandler thread CPU per /predict call, in process (us): " + "; ".join(
        f"round {m['round']} {m['phase']} p50 {m['p50']:.1f} p99 {m['p99']:.1f}" for m in handler))
    for stat in ("p50", "p99"):
        off = statistics.median(m[stat] for m in handler if m["phase"] == "off")
        on = statistics.median(m[stat] for m in handler if m["phase"] == "on")
        print(f"handler {stat}: off {off:.1f} us, on {on:.1f} us, ratio {on / off:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="off/on pairs, order alternating")
    parser.add_argument("--seconds", type=float, default=12.0, help="timed seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="untimed seconds before the first round")
    parser.add_argument("--days", type=int, default=7, help="days of demo data")
    parser.add_argument("--calls", type=int, default=5000, help="in-process handler calls per phase")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-experiments-"))
    proc = None
    try:
        started = time.monotonic()
        info = setup(work, args.days)
        register_second_version()
        rows = feature_rows(info["columns"], info["drivers"])
        payloads = [bodies("predict", d, rows[d], info["columns"]) for d in rows]
        port = free_port()
        log = (work / "serve.log").open("w")
        proc = subprocess.Popen([str(BIN / "airflow-mlops"), "serve", "--model", MODEL, "--port", str(port)],
                                env=state_env(work), cwd=work, stdout=log, stderr=subprocess.STDOUT)
        wait_routing(port, None, payloads[0], timeout=180)
        setup_s = time.monotonic() - started
        measured = run_rounds(port, payloads, args)
        proc.terminate()
        proc.wait(30)
        proc = None
        report(measured, args, setup_s, len(rows), handler_cpu(payloads, args.calls))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
