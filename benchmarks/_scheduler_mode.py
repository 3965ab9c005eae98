"""`training_dag.py --mode scheduler`: the training DAG under a real scheduler, task by task, against the script.

The stack is the project's own: `airflow-mlops up` (scheduler, dag-processor, triggerer, api-server;
LocalExecutor on the SQLite metadata DB) on the benchmark's state, or with `--executor celery` the tests'
stack (tests/support/airflow_stack.py) on CeleryExecutor, with the timing probe
(`_sched_probe/sitecustomize.py`) on PYTHONPATH. Each run: the live MLflow DB is replaced by a copy of the
pristine one, `<model>__train` is triggered over REST and waited for; per task, the REST API's task
instance (queued_when, start_date, end_date) and the probe's events (task process fork, outermost imports,
the supervisor's Execution API calls, execute()) split the time from the previous task's end into:

- scheduling:  previous task's end (the trigger, for the first) -> queued_when;
- pickup:      queued_when -> the task process is forked (LocalExecutor worker, supervisor set-up);
- runner:      the task runner outside execute(), less imports and API calls: start-up, DAG file parse,
               template rendering, XCom push, finalize;
- imports:     outermost imports in the task process (heavy ones: pandas, sklearn, mlflow, feast, ...);
- api:         the supervisor's Execution API calls in the task's window, heartbeats excepted (the task
               waits on them: run, XCom, state; a heartbeat runs beside the task and is counted apart);
- operator:    execute() less the imports and API calls inside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
PROBE = BENCH / "_sched_probe"
PASSWORD = "benchmark-scheduler"
READY_TIMEOUT_S = 600
RUN_TIMEOUT_S = 900
STOP_TIMEOUT_S = 40
PARTS = ("scheduling", "pickup", "runner", "imports", "api", "operator")


def _support() -> Any:
    sys.path.insert(0, str(PROJECT / "tests"))
    import support.airflow_client as client_module

    return client_module


def stack_env(base: dict[str, str], probe_dir: Path, preload: bool) -> dict[str, str]:
    env = dict(base)
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(PROBE), env.get("PYTHONPATH")])),
               MLOPS_BENCH_PROBE_DIR=str(probe_dir), PYTHONUNBUFFERED="1",
               AIRFLOW__MLOPS__PRELOAD_LIBRARIES=str(preload))
    return env


def _die_with_parent() -> None:
    import ctypes

    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def up_stack(env: dict[str, str], work: Path, log_path: Path, dag_id: str) -> Iterator[tuple[Any, float]]:
    """`airflow-mlops up` on a free port; yields (REST client, seconds until healthy and the DAG parsed)."""
    support = _support()
    from support.airflow_stack import free_port

    airflow_home = Path(env["AIRFLOW_HOME"])
    (airflow_home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": PASSWORD}))
    port = free_port()
    cli = Path(sys.executable).with_name("airflow-mlops")
    started = time.monotonic()
    with log_path.open("wb") as log:
        up = subprocess.Popen([str(cli), "up", "--port", str(port)], env=env, cwd=work, stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              preexec_fn=_die_with_parent)  # noqa: PLW1509 - no thread runs yet

    def alive() -> None:
        if up.poll() is not None:
            tail = log_path.read_text(errors="replace")[-6000:]
            raise SystemExit(f"`airflow-mlops up` exited {up.returncode}; log {log_path}:\n{tail}")

    client = support.AirflowClient(f"http://127.0.0.1:{port}", "admin", PASSWORD)
    try:
        support.wait_for(lambda: _healthy(client), READY_TIMEOUT_S, "Airflow from `up` healthy", on_poll=alive)
        support.wait_for(lambda: client.request("GET", "/dags", params={"dag_id_pattern": dag_id})["dags"],
                         READY_TIMEOUT_S, f"{dag_id} parsed", on_poll=alive)
        client.unpause_without_catchup(dag_id)
        yield client, time.monotonic() - started
    finally:
        client.close()
        _stop(up)


BROKER_URL = "redis://127.0.0.1:6379/14"  # a Redis database only this benchmark uses; flushed first
_PASSED_TO_CELERY = ("AIRFLOW_CONN_", "MLOPS_BENCH_", "PYTHONPATH", "AIRFLOW__MLOPS__")


@contextlib.contextmanager
def celery_stack(env: dict[str, str], work: Path, dag_id: str, preload: bool) -> Iterator[tuple[Any, float]]:
    """The tests' real stack (tests/support/airflow_stack.py) on CeleryExecutor: PostgreSQL metadata DB (fresh),
    Redis broker, one `airflow celery worker` (queue default, concurrency 1), on the benchmark's MLOPS_HOME.
    The preload goes through `[celery] celery_config_options` (plugin/preload.py), as a user would set it."""
    _support()
    import redis

    from support.airflow_stack import airflow_stack
    from support.mlflow_server import fresh_postgres_database

    redis.Redis.from_url(BROKER_URL).flushdb()
    started = time.monotonic()
    with fresh_postgres_database(f"mlops_bench_celery_{os.getpid()}_{int(preload)}") as database:
        extra = {k: v for k, v in env.items() if k.startswith(_PASSED_TO_CELERY)}
        extra.update(AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database, AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
                     AIRFLOW__CELERY__BROKER_URL=BROKER_URL,
                     AIRFLOW__CELERY__RESULT_BACKEND="db+" + database.replace("+psycopg2", ""))
        if preload:
            extra["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] = "airflow_mlops.plugin.preload.CELERY_CONFIG"
        with airflow_stack(Path(env["MLOPS_HOME"]), dag_ids=[dag_id], celery_workers={"celery-default": "default"},
                           extra_env=extra, audit_network=False) as stack:
            client = stack.client()
            try:
                client.unpause_without_catchup(dag_id)
                yield client, time.monotonic() - started
            finally:
                client.close()


def _healthy(client: Any) -> bool:
    import httpx

    try:
        health = httpx.get(f"{client.base_url}/api/v2/monitor/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return False
    return all((health.get(k) or {}).get("status") == "healthy" for k in ("scheduler", "dag_processor", "triggerer"))


def _stop(up: subprocess.Popen[bytes]) -> None:
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)  # `up` stops its whole tree within 30 s
        try:
            up.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)


def run_once(client: Any, probe_dir: Path, dag_id: str) -> dict[str, Any]:
    """Trigger the DAG, wait for it, and break each task's time down (tasks in the order they were queued)."""
    support = _support()

    for stale in probe_dir.glob("*.jsonl"):
        stale.unlink()
    triggered = time.time()
    run = client.trigger(dag_id)
    finished = _wait_for_run(client, dag_id, run["dag_run_id"])
    tis = {ti["task_id"]: ti for ti in client.task_instances(dag_id, run["dag_run_id"])}
    ended = support.parse_time(finished["end_date"]).timestamp()
    events = _events(probe_dir)
    tasks: dict[str, dict[str, Any]] = {}
    previous_end = triggered
    for task_id in sorted(tis, key=lambda t: tis[t].get("queued_when") or "~"):
        ti = tis[task_id]
        tasks[task_id] = _task_breakdown(ti, previous_end, events, support.parse_time)
        previous_end = tasks[task_id]["end"] or previous_end
    last_end = max((t["end"] for t in tasks.values() if t["end"]), default=ended)
    other_runs = [r["dag_run_id"] for r in client.dag_runs(dag_id) if r["dag_run_id"] != run["dag_run_id"]
                  and r["run_type"] != "manual" and r["state"] != "failed"]
    return {"state": finished["state"], "wall_s": ended - triggered, "run_id": run["dag_run_id"],
            "tasks": tasks, "after_last_task_s": ended - last_end, "other_runs": other_runs,
            "steps": {t: d["total"] for t, d in tasks.items()}}


def _wait_for_run(client: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    """Poll every 2 s (the api-server also serves the tasks' Execution API: keep out of its way) until the run
    ends; a poll the loaded api-server does not answer in time is retried, the run's end comes from the server."""
    import httpx

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            run = client.dag_run(dag_id, run_id)
        except httpx.TransportError as exc:
            print(f"    (REST poll not answered: {type(exc).__name__}; retrying)", file=sys.stderr, flush=True)
            continue
        if run["state"] in ("success", "failed"):
            return dict(run)
        time.sleep(2.0)
    raise SystemExit(f"{dag_id} run {run_id} did not finish within {RUN_TIMEOUT_S} s")


def _events(probe_dir: Path) -> dict[int, list[dict[str, Any]]]:
    events: dict[int, list[dict[str, Any]]] = {}
    for path in probe_dir.glob("*.jsonl"):
        lines = path.read_text(encoding="utf-8").splitlines()
        events[int(path.stem)] = [json.loads(line) for line in lines if line.strip()]
    return events


def _task_breakdown(ti: dict[str, Any], previous_end: float, events: dict[int, list[dict[str, Any]]],
                    parse_time: Any) -> dict[str, Any]:
    def stamp(key: str) -> float | None:
        return parse_time(ti[key]).timestamp() if ti.get(key) else None

    queued, start, end = stamp("queued_when"), stamp("start_date"), stamp("end_date")
    pid = _task_pid(ti, events)
    mine = events.get(pid, []) if pid else []
    fork = next((e["t"] for e in mine if e["ev"] == "fork"), None)
    execute = next((e for e in mine if e["ev"] == "execute"), None)
    row: dict[str, Any] = {"state": ti["state"], "try_number": ti.get("try_number"), "queued": queued,
                           "start": start, "end": end, "pid": pid,
                           "total": (end - previous_end) if end else 0.0}
    if not (queued and end and fork and execute):
        row["incomplete"] = True
        return row
    ppid = next(e["ppid"] for e in mine if e["ev"] == "fork")
    calls = [e for e in events.get(ppid, []) if e["ev"] == "http" and fork <= e["t"] <= end + 0.5]
    waited = [c for c in calls if not c["path"].endswith("/heartbeat")]
    imports = [e for e in mine if e["ev"] == "import"]
    x0, x1 = execute["t"], execute["t"] + execute["dur"]

    def inside(items: list[dict[str, Any]]) -> float:
        return sum(e["dur"] for e in items if x0 <= e["t"] < x1)

    import_s, api_s = sum(e["dur"] for e in imports), sum(c["dur"] for c in waited)
    operator = execute["dur"] - inside(imports) - inside(waited)
    runner = (end - fork) - operator - import_s - api_s
    row.update(scheduling=queued - previous_end, pickup=fork - queued, runner=runner, imports=import_s, api=api_s,
               operator=operator, execute=execute["dur"], api_calls=len(waited),
               heartbeats=len(calls) - len(waited),
               heavy_imports=sorted({e["name"].split(".")[0] for e in imports if e["heavy"]}),
               heavy_import_s=sum(e["dur"] for e in imports if e["heavy"]),
               api_paths=_call_kinds(waited))
    return row


def _task_pid(ti: dict[str, Any], events: dict[int, list[dict[str, Any]]]) -> int | None:
    for pid, items in events.items():
        if any(e["ev"] == "execute" and e["task_id"] == ti["task_id"] and e.get("run_id") == ti["dag_run_id"]
               for e in items):
            return pid
    return None


_ID = re.compile(r"/[0-9a-f]{8}-[0-9a-f-]{27,}|/(?:scheduled|manual|asset_triggered)__[^/]+")


def _call_kinds(calls: list[dict[str, Any]]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for call in calls:
        parts = _ID.sub("", call["path"]).removeprefix("/execution/").split("/")
        kind = f"{call['method']} {'/'.join(parts[:2])}"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def scheduler_log_facts(logs: list[Path]) -> dict[str, Any]:
    """What the stack's logs say about the preload (our line in the scheduler or the Celery worker)."""
    text = "\n".join(log.read_text(errors="replace") for log in logs if log.exists())
    found = re.findall(r"airflow-mlops: preloaded (\d+) modules in ([0-9.]+) s", text)
    return {"preloaded_modules": int(found[-1][0]), "preload_s": float(found[-1][1])} if found else {}


def reset_mlflow(pristine: Path, live: Path) -> None:
    shutil.rmtree(live, ignore_errors=True)
    shutil.copytree(pristine, live)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- rounds, summary, report ------------------------------------------------------------------------
def variant_name(executor: str, preload: bool) -> str:
    return f"{executor}, preload {'on' if preload else 'off'}"


def run_rounds(work: Path, args: Any, spawn: Any, child_env: Any, dag_id: str) -> dict[str, Any]:
    """Per stack variant (preload off / on): start `up`, then `--repeat` rounds of script + scheduler run
    (order alternating), each scheduler run on a fresh copy of the pristine MLflow DB; stop the stack."""
    pristine = work / "pristine"
    variants: dict[str, Any] = {}
    executor = "CeleryExecutor" if args.executor == "celery" else "LocalExecutor"
    for preload in {"off": [False], "on": [True], "both": [False, True]}[args.preload]:
        name, slug = variant_name(executor, preload), f"{args.executor}-preload-{'on' if preload else 'off'}"
        live, probe, log = work / "mlflow" / f"live-{slug}", work / "probe" / slug, work / "logs" / f"up-{slug}.log"
        probe.mkdir(parents=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        reset_mlflow(pristine, live)
        env = stack_env(child_env(work, live), probe, preload)
        rounds: list[dict[str, Any]] = []
        stack = celery_stack(env, work, dag_id, preload) if args.executor == "celery" else \
            up_stack(env, work, log, dag_id)
        with stack as (client, ready_s):
            print(f"  {name}: stack healthy, {dag_id} parsed and unpaused in {ready_s:.0f} s (not timed)",
                  file=sys.stderr, flush=True)
            for rnd in range(args.repeat):
                pair: dict[str, Any] = {}
                for method in ("script", "scheduler") if rnd % 2 == 0 else ("scheduler", "script"):
                    tag = f"{slug}-round{rnd}-{method}"
                    if method == "script":
                        mlflow_dir = work / "mlflow" / tag
                        shutil.copytree(pristine, mlflow_dir)
                        pair[method] = spawn("script", work, tag, args, mlflow_dir)
                    else:
                        reset_mlflow(pristine, live)
                        pair[method] = run_once(client, probe, dag_id)
                        pair[method]["outcome"] = spawn("outcome", work, tag, args, live)["outcome"]
                    print(f"  {name} round {rnd} {method}: {pair[method]['wall_s']:.2f} s", file=sys.stderr,
                          flush=True)
                rounds.append(pair)
            logs = [log] if args.executor == "local" else sorted((work / "home" / "stack-logs").glob("*.log"))
            facts = {"ready_s": ready_s, "load": _load(), **scheduler_log_facts(logs)}
        variants[name] = {"preload": preload, "rounds": rounds, "facts": facts}
    return variants


def _load() -> str:
    from _feature_data import load_note

    return str(load_note())


def check(variants: dict[str, Any]) -> list[str]:
    """Every run succeeded without a retry, was fully probed, ran alone, and promoted the same model."""
    problems: list[str] = []
    seen: dict[str, tuple[Any, ...]] = {}
    for name, variant in variants.items():
        for i, pair in enumerate(variant["rounds"]):
            problems += [f"{name} round {i}: {problem}" for problem in _pair_problems(pair)]
            for method, run in pair.items():
                out = run["outcome"]
                seen[f"{name} round {i} {method}"] = (out["training_set_sha256"], out["roc_auc"], out["eval_roc_auc"])
        if variant["preload"] and not variant["facts"].get("preloaded_modules"):
            problems.append(f"{name}: the stack's logs have no preload line")
    if len(set(seen.values())) != 1 or None in next(iter(seen.values())):
        problems.append("runs disagree on (training-set sha256, roc_auc, eval.roc_auc): " + json.dumps(seen))
    return problems


def _pair_problems(pair: dict[str, Any]) -> list[str]:
    sched, script, problems = pair["scheduler"], pair["script"], []
    tasks = sched["tasks"]
    bad = {t: d["state"] for t, d in tasks.items() if d["state"] != "success"}
    if sched["state"] != "success" or bad or script["state"] != "success":
        problems.append(f"run {sched['state']}, tasks {bad}, script {script['state']}")
    if any(d.get("incomplete") for d in tasks.values()):
        problems.append(f"probe events missing for {[t for t, d in tasks.items() if d.get('incomplete')]}")
    retried = [t for t, d in tasks.items() if (d.get("try_number") or 1) > 1]
    if retried:
        problems.append(f"retried tasks {retried} (a failed try: the wall is not comparable)")
    if sched["other_runs"]:
        problems.append(f"other runs of the DAG happened: {sched['other_runs']}")
    if script["preloaded_heavy"]:
        problems.append(f"script imported {script['preloaded_heavy']} before its timer")
    return problems


def _med(values: list[float]) -> float:
    import statistics

    return statistics.median(values) if values else float("nan")


def summarize(variants: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, variant in variants.items():
        rounds = variant["rounds"]
        scheds, scripts = [p["scheduler"] for p in rounds], [p["script"] for p in rounds]
        ratios = [p["scheduler"]["wall_s"] / p["script"]["wall_s"] for p in rounds]
        task_ids = list(scheds[0]["tasks"])
        tasks = {t: {part: _med([r["tasks"][t].get(part, 0.0) for r in scheds]) for part in ("total", *PARTS)}
                 for t in task_ids}
        for t in task_ids:
            first = scheds[0]["tasks"][t]
            tasks[t].update(heavy_import_s=_med([r["tasks"][t].get("heavy_import_s", 0.0) for r in scheds]),
                            api_calls=first.get("api_calls"), heartbeats=first.get("heartbeats"),
                            heavy_imports=first.get("heavy_imports"), api_paths=first.get("api_paths"),
                            script_s=_med([s["steps"][t] for s in scripts]) if t in scripts[0]["steps"] else None)
        out[name] = {"scheduler_wall_s": _med([r["wall_s"] for r in scheds]), "all_scheduler_wall_s":
                     [r["wall_s"] for r in scheds], "script_wall_s": _med([s["wall_s"] for s in scripts]),
                     "all_script_wall_s": [s["wall_s"] for s in scripts], "ratio": _med(ratios), "all_ratios": ratios,
                     "after_last_task_s": _med([r["after_last_task_s"] for r in scheds]), "tasks": tasks,
                     "facts": variant["facts"]}
    return out


def report(summary: dict[str, Any]) -> None:
    print("| stack | scheduler run wall s (median) | all runs | plain script wall s (same rounds) | "
          "ratio scheduler/script (per round) | stack ready s | preload |\n|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        f = s["facts"]
        preload = f"{f['preloaded_modules']} modules, {f['preload_s']:.1f} s" if f.get("preloaded_modules") else "-"
        print(f"| {name} | {s['scheduler_wall_s']:.2f} | {', '.join(f'{x:.2f}' for x in s['all_scheduler_wall_s'])} "
              f"| {s['script_wall_s']:.2f} ({', '.join(f'{x:.2f}' for x in s['all_script_wall_s'])}) | "
              f"**{s['ratio']:.2f}x** ({', '.join(f'{x:.2f}x' for x in s['all_ratios'])}) | {f['ready_s']:.0f} | "
              f"{preload} |")
    for name, s in summary.items():
        print(f"\n{name}: each task's time from the previous task's end (the trigger, for the first), medians:\n")
        print("| task | total s | scheduling | pickup | task runner | imports (heavy) | API calls s (count) | "
              "operator | script step s |\n|---|---|---|---|---|---|---|---|---|")
        for task_id, t in s["tasks"].items():
            script = f"{t['script_s']:.2f}" if t["script_s"] is not None else "-"
            print(f"| {task_id} | {t['total']:.2f} | {t['scheduling']:.2f} | {t['pickup']:.2f} | {t['runner']:.2f} | "
                  f"{t['imports']:.2f} ({t['heavy_import_s']:.2f}) | {t['api']:.2f} ({t['api_calls']}) | "
                  f"{t['operator']:.2f} | {script} |")
        print(f"| run end after the last task | {s['after_last_task_s']:.2f} | | | | | | | |")
        heavy = "; ".join(f"{t}: {', '.join(d['heavy_imports']) or 'none'}" for t, d in s["tasks"].items())
        print(f"\nHeavy libraries imported by each task process (round 0): {heavy}")
        calls = "; ".join(f"{t}: {', '.join(f'{k} x{n}' for k, n in (d['api_paths'] or {}).items())}"
                          for t, d in s["tasks"].items())
        print(f"Execution API calls the task waited on (round 0): {calls}")
        print(f"Machine load at the end of this stack's rounds: {s['facts']['load']}")
