"""The embedded demo: state dir, demo batches, both DAGs end to end, and `airflow standalone`.

Everything runs in this process with `dag.test()` on SQLite (Airflow, MLflow, Feast online store)
and duckdb (Feast offline store) — no server to start. `run_demo_serve` (`airflow-mlops demo
--serve`) then starts the serving app and swaps its champion under load (see its docstring).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow_mlops import config
from airflow_mlops.runtime_env import apply_airflow_env

log = logging.getLogger(__name__)


def _say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def _airflow_cli() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def init_state() -> Path:
    """Check the configured stores answer, create MLOPS_HOME and migrate the Airflow metadata DB (idempotent)."""
    env = apply_airflow_env()
    preflight()
    home = config.paths()
    for folder in (home.home, home.airflow_home, home.mlflow_dir, home.feast_dir, home.offline_dir, home.landing_dir):
        folder.mkdir(parents=True, exist_ok=True)
    _say(f"state dir {home.home} (AIRFLOW_HOME={env['AIRFLOW_HOME']})")
    started = time.monotonic()
    subprocess.run([_airflow_cli(), "db", "migrate"], check=True, env=os.environ.copy(), stdout=subprocess.DEVNULL)
    print(f"    Airflow metadata DB ready in {time.monotonic() - started:.1f}s", flush=True)
    return home.home


def preflight() -> None:
    """Fail in a second, naming each unreachable server and what to start, before any work begins."""
    from airflow_mlops.exceptions import ProfileError
    from airflow_mlops.profile import check_profile

    problems = check_profile()
    if problems:
        raise ProfileError(problems)


def describe_profile() -> list[str]:
    """Which store each component uses, as configured right now (passwords masked)."""
    from airflow_mlops.profile import mask_url

    env = os.environ
    return [
        f"Airflow metadata DB: {mask_url(env.get('AIRFLOW__DATABASE__SQL_ALCHEMY_CONN', 'sqlite (AIRFLOW_HOME)'))}",
        f"MLflow tracking:     {mask_url(config.default_tracking_uri())}",
        f"Feast online store:  {mask_url(config.default_online_store() or 'sqlite (MLOPS_HOME/feast/online.db)')}",
        f"State dir:           {config.paths().home}",
    ]


def demo_end(now: datetime | None = None) -> datetime:
    """Where generated demo data ends by default: the start of the current UTC hour (never in the future)."""
    return (now or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def write_demo_batches(days: int = 30, start: str | None = None, covariate_shift: float = 0.0,
                       concept_shift: float = 0.0, seed: int = 7, label_noise: float = 0.0,
                       end: datetime | None = None) -> dict[str, Path]:
    """Write one raw batch per dataset into MLOPS_HOME/landing/<dataset>/.

    The data covers `days` days from `start` (a UTC date or date-time, reproducible), or else the
    `days` days before `end` (default: the start of the current hour): a demo run today serves
    features that are fresh today. The values depend only on the seed and the knobs, the times on the window.
    """
    from airflow_mlops.core.demo_data import DemoConfig, generate

    first = datetime.fromisoformat(start).replace(tzinfo=UTC) if start else (end or demo_end()) - timedelta(days=days)
    cfg = DemoConfig(start=first, days=days, seed=seed, covariate_shift=covariate_shift, concept_shift=concept_shift,
                     label_noise=label_noise)
    written = {}
    tag = f"{first:%Y%m%d}-{days}d-s{seed}-cov{covariate_shift:g}-con{concept_shift:g}" + (
        f"-noise{label_noise:g}" if label_noise else "")
    for dataset, frame in generate(cfg).items():
        folder = config.paths().landing_dir / dataset
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"batch-{tag}.parquet"
        tmp = target.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(target)  # the landing watcher must never see half a file
        written[dataset] = target
        print(f"    {dataset}: {len(frame):,} rows -> {target}", flush=True)
    return written


def _run_dag(dag_id: str) -> Any:
    from airflow_mlops.dags import build_dags
    from airflow_mlops.headless import run_dag, succeeded

    dag = build_dags()[dag_id]
    _say(f"running DAG {dag_id} ({len(dag.tasks)} tasks)")
    run = run_dag(dag, quiet=os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "").upper() == "WARNING")
    if not succeeded(run):
        raise SystemExit(f"DAG {dag_id} ended {getattr(run, 'state', 'unknown')}; see the task logs above")
    return run


def _summary() -> None:
    from mlflow.exceptions import MlflowException

    from airflow_mlops.core.spec import load_specs
    from airflow_mlops.hooks.mlflow import MLflowHook

    hook = MLflowHook()
    client = hook.get_conn()
    _say("results")
    print(f"    MLflow tracking store: {hook.tracking_uri}")
    print(f"    MLflow UI:             mlflow ui --backend-store-uri {hook.tracking_uri} --port 5000")
    for spec in load_specs():
        for alias in ("champion", "challenger"):
            try:
                version = client.get_model_version_by_alias(spec.name, alias)
            except MlflowException:  # no such alias yet (e.g. the first model was refused)
                print(f"    model {spec.name}: no {alias}")
                continue
            run = client.get_run(str(version.run_id))
            shown = [m for m in spec.evaluation.metrics if m in run.data.metrics]
            metrics = ", ".join(f"{m}={run.data.metrics[m]:.4f}" for m in shown)
            print(f"    model {spec.name} v{version.version} (alias {alias}, run {version.run_id}): {metrics}")
        print(f"    model URI:             models:/{spec.name}@champion")
    home = config.paths()
    print(f"    offline store:         {home.offline_dir}")
    print(f"    Feast registry/online: {home.feast_dir}")
    print(f"    training sets:         {home.training_sets_dir}")


def run_demo(days: int = 30, end: datetime | None = None, models: list[str] | None = None) -> int:
    """Generate data (ending now, or at `end`) and run the feature DAG and the training DAG of every model (or of
    `models`) on the embedded stack."""
    from airflow_mlops.core.spec import load_specs
    from airflow_mlops.dags import FEATURE_DAG_ID, training_dag_id

    init_state()
    _say(f"generating {days} days of seeded demo data into the landing dir")
    write_demo_batches(days=days, end=end)
    _run_dag(FEATURE_DAG_ID)
    for spec in load_specs():
        if models is None or spec.name in models:
            _run_dag(training_dag_id(spec.name))
    _summary()
    return 0


def run_standalone(port: int | None = None) -> int:
    """`airflow standalone` with our env on `port`; SIGTERM/SIGINT stop it and everything it started.

    Everything that follows the port (base URL, Execution API URL) and the parallelism come from
    `runtime_env.standalone_env`; the user's own settings win.
    """
    from airflow_mlops.processes import run_supervised
    from airflow_mlops.runtime_env import port_free, standalone_env, usable_cpus

    env = os.environ.copy()
    env.update(standalone_env(port, env))
    port = int(env["AIRFLOW__API__PORT"])
    if not port_free(port, env["AIRFLOW__API__HOST"]):
        raise SystemExit(f"port {port} on {env['AIRFLOW__API__HOST']} is in use (another `up`?); "
                         "choose another with --port")
    init_state()
    # standalone starts its components as `airflow …` subprocesses found on PATH: use this venv's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    password_file = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    url = env.get("AIRFLOW__API__BASE_URL") or f"http://localhost:{port}/"
    _say(f"starting Airflow on {url} — user 'admin', password in {password_file} "
         "(also printed below by Airflow as 'Password for user')")
    print(f"    parallelism {env.get('AIRFLOW__CORE__PARALLELISM', '(airflow.cfg)')} "
          f"(usable CPUs: {usable_cpus()}), Execution API "
          f"{env.get('AIRFLOW__CORE__EXECUTION_API_SERVER_URL', '(from the base URL)')}; stop with Ctrl-C or SIGTERM",
          flush=True)
    if shutil.which(_airflow_cli()) is None:
        raise SystemExit("airflow is not installed in this environment; run `make install` first")
    # SIGINT is what standalone handles (it then stops its components); the rest of the tree follows.
    return run_supervised([_airflow_cli(), "standalone"], env, stop_signal=signal.SIGINT)


def run_demo_serve(days: int = 30, shift_days: int = 7, port: int = 8000, clients: int = 4) -> int:
    """The demo, then the serving app answering /predict while v2 replaces v1 under load.

    1. `run_demo`: the feature DAG and the served model's training DAG make v1 the champion;
    2. `airflow-mlops serve --model <first spec>` starts (its own process); one /predict is printed;
    3. `clients` threads post /predict for the demo drivers without pause, while `shift_days` more
       days arrive whose rule changed (concept_shift=1: surge matters, distance stops mattering);
       the feature and training DAGs run again, v2 beats v1 on the new held-out rows and becomes
       champion; the server picks it up from the alias, loads and warms it, swaps atomically;
    4. printed: requests, failures (must be 0), versions in the order they answered, switch time.
    Exit status 1 when a request failed or v2 never answered.
    """
    from airflow_mlops.core.demo_data import DRIVER_ID_START, DemoConfig
    from airflow_mlops.core.spec import load_specs
    from airflow_mlops.dags import FEATURE_DAG_ID, training_dag_id
    from airflow_mlops.serving.load import LoadLoop

    end = demo_end()  # v1's data ends shift_days ago; the shifted days then end now
    spec = load_specs()[0]  # the served model (ride_completion): only its training DAG runs here
    run_demo(days=days, end=end - timedelta(days=shift_days), models=[spec.name])
    rows = [{key: driver for key in spec.features.entity_keys} | _request_values(spec.features.entity_df)
            for driver in range(DRIVER_ID_START, DRIVER_ID_START + DemoConfig().drivers)]
    with _serving(spec.name, port) as url:
        _say(f"serving {spec.name} on {url}: POST /predict {json.dumps(rows[0])}")
        print(f"    {_first_answer(url, rows[0])}", flush=True)
        load = LoadLoop(url, rows, clients=clients).start()
        _say(f"load: {clients} client threads posting /predict; meanwhile {shift_days} more days arrive "
             "(concept shift) and the DAGs retrain")
        write_demo_batches(days=shift_days, end=end, concept_shift=1.0)
        _run_dag(FEATURE_DAG_ID)
        _run_dag(training_dag_id(spec.name))
        promoted = time.monotonic()
        champion = _champion_version(spec.name)
        _wait_for_version(load, champion, timeout=spec.serving.poll_seconds + 60)
        time.sleep(1.0)  # keep the load on a moment after the switch
        load.stop()
    return _report_switch(load, champion, promoted)


# Request-time features of the demo's /predict rows (the ride_completion spec's); others get 1.0.
DEMO_REQUEST = {"trip_distance_km": 3.2, "surge_multiplier": 1.25, "pickup_hour": 8}


def _request_values(entity_df: Any) -> dict[str, Any]:
    return {name: DEMO_REQUEST.get(name, 1.0) for name in entity_df.request_features}


@contextmanager
def _serving(model: str, port: int) -> Iterator[str]:
    """`airflow-mlops serve --model <model>` in its own process until the block ends (SIGTERM: log flushed)."""
    import httpx

    url = f"http://127.0.0.1:{port}"
    log_path = config.paths().home / "serve-demo.log"
    command = [str(Path(sys.executable).with_name("airflow-mlops")), "serve", "--model", model, "--port", str(port)]
    with log_path.open("w") as out:
        proc = subprocess.Popen(command, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"the serving app exited with {proc.returncode}; see {log_path}")
                try:
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"the serving app is not ready after 180 s; see {log_path}")
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _first_answer(url: str, row: dict[str, Any]) -> str:
    import httpx

    response = httpx.post(f"{url}/predict", json=row, timeout=10)
    if response.status_code != 200:
        raise SystemExit(f"/predict answered {response.status_code}: {response.text}")
    [answer] = response.json()["predictions"]
    return (f"-> prediction {answer['prediction']:.4f} from v{answer['model_version']} (champion), "
            f"request id {answer['request_id']}")


def _champion_version(model: str) -> str:
    from airflow_mlops.hooks.mlflow import MLflowHook

    return str(MLflowHook().get_conn().get_model_version_by_alias(model, "champion").version)


def _wait_for_version(load: Any, version: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while load.first_answer_of(version) is None and time.monotonic() < deadline:
        time.sleep(0.1)


def _report_switch(load: Any, champion: str, promoted: float) -> int:
    answers = load.snapshot()
    failures = load.failures()
    per_client = load.versions_per_client()
    versions = per_client[0] if all(seen == per_client[0] for seen in per_client) else ["mixed"]
    first_new = load.first_answer_of(champion)
    _say("serving under load")
    print(f"    requests sent:   {len(answers):,}")
    print(f"    failed requests: {len(failures)}" + (f" (first: {failures[0].status} {failures[0].error})"
                                                     if failures else ""))
    for n, seen in enumerate(per_client):
        print(f"    client {n}: versions in the order they answered: {' -> '.join(f'v{v}' for v in seen)}")
    switch = None if first_new is None else first_new - promoted
    if switch is not None:
        print(f"    v{champion} answered {switch:+.1f} s after the training DAG finished (the server re-reads "
              "the champion alias every serving.poll_seconds, then loads and warms v2 before the swap)")
    print(f"SERVE-DEMO requests={len(answers)} failures={len(failures)} versions={','.join(versions)} "
          f"champion={champion} switch_s={'none' if switch is None else f'{switch:.2f}'}", flush=True)
    if failures or first_new is None or len(versions) != 2:
        why = ("requests failed" if failures else f"v{champion} never replaced the first champion" if first_new is None
               else "a client saw the versions flip back and forth")
        print(f"error: {why}", file=sys.stderr)
        return 1
    return 0
