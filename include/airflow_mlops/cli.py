"""`airflow-mlops` command: check, doctor, env, init, generate-data, suite, demo, up, run, train-job, serve."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any


def _cmd_check(args: argparse.Namespace) -> int:
    from airflow_mlops.core.checks import check_project, describe_tasks

    for line in describe_tasks():
        print(f"TASK {line}")
    problems = check_project(deep=not args.fast)
    for line in problems:
        print(f"ERROR {line}")
    print(f"{len(problems)} problem(s) found" if problems else "specs and feature repo are consistent")
    return 1 if problems else 0


def _cmd_env(args: argparse.Namespace) -> int:
    import shlex

    from airflow_mlops import config
    from airflow_mlops.runtime_env import apply_airflow_env

    env = apply_airflow_env()
    home = config.paths().home
    if args.user_mlops_home:
        print(f"# state dir {home} (MLOPS_HOME is set)")
    else:
        print(f"# state dir {home} (default: MLOPS_HOME is not set, so .local/ in the project "
              f"{config.project_dir()}; set MLOPS_HOME to use another)")
    if args.user_airflow_home and os.path.realpath(env["AIRFLOW_HOME"]) != str(config.paths().airflow_home):
        print(f"# AIRFLOW_HOME is set: Airflow's metadata DB and logs are in {env['AIRFLOW_HOME']}, "
              "not in the state dir")
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _cmd_doctor(_: argparse.Namespace) -> int:
    from airflow_mlops.demo import describe_profile, preflight

    for line in describe_profile():
        print(line)
    preflight()
    print("every configured store answers")
    return 0


def _cmd_init(_: argparse.Namespace) -> int:
    from airflow_mlops.demo import init_state

    init_state()
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from airflow_mlops.demo import write_demo_batches

    write_demo_batches(days=args.days, start=args.start, covariate_shift=args.covariate_shift,
                       concept_shift=args.concept_shift, seed=args.seed, label_noise=args.label_noise)
    return 0


def _cmd_suite(args: argparse.Namespace) -> int:
    from airflow_mlops.core.suites import write_reference_suite

    out = write_reference_suite(args.dataset, args.source, out=args.out, keys=args.keys, label=args.label,
                                timestamp_column=args.timestamp_column, unique=args.unique, force=args.force)
    print(f"wrote suite '{args.dataset}' to {out}; review the ranges and rules before relying on it")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from airflow_mlops.demo import run_demo, run_demo_serve

    if args.serve:
        return run_demo_serve(days=args.days, shift_days=args.shift_days, port=args.port, clients=args.clients)
    return run_demo(days=args.days)


def _cmd_up(args: argparse.Namespace) -> int:
    from airflow_mlops.demo import run_standalone

    return run_standalone(port=args.port)


def _cmd_run(args: argparse.Namespace) -> int:
    """Run one DAG with dag.test() on the embedded state: a line per task, the final state, exit 1 on failure."""
    from airflow_mlops.demo import init_state
    from airflow_mlops.headless import find_dag, parse_conf, run_dag, succeeded

    conf = parse_conf(args.conf)
    dag = find_dag(args.dag_id)  # an unknown id fails before the state dir is touched
    init_state()
    if args.retries is not None:
        for task in dag.tasks:
            task.retries = args.retries
    with_conf = f" with conf {json.dumps(conf)}" if conf else ""
    print(f"\n==> running DAG {dag.dag_id} ({len(dag.tasks)} tasks){with_conf}", flush=True)
    run = run_dag(dag, conf=conf, quiet=not args.verbose)
    return 0 if succeeded(run) else 1


def _cmd_train_job(args: argparse.Namespace) -> int:
    """Run the training job of a request: what a KubernetesTrainModelOperator pod executes."""
    import json
    import logging
    from pathlib import Path

    from airflow_mlops import config
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.jobs.training import TrainingRequest, run_training_job

    # stdout carries only the result JSON; progress goes to stderr (the pod log Airflow shows).
    # force=True: importing Airflow (through the hook) installed a root handler that prints to stdout.
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    text = Path(args.request[1:]).read_text(encoding="utf-8") if args.request.startswith("@") else args.request
    request = TrainingRequest.from_json(text)
    # No Airflow connection in a pod: MLFLOW_TRACKING_URI (else SQLite in MLOPS_HOME), MLFLOW_REGISTRY_URI,
    # and MLOPS_MLFLOW_ARTIFACT_ROOT for new experiments of a database store.
    hook = MLflowHook(
        tracking_uri=config.default_tracking_uri(), artifact_root=os.environ.get("MLOPS_MLFLOW_ARTIFACT_ROOT") or None
    )
    payload = json.dumps(run_training_job(request, hook), sort_keys=True)
    if args.xcom_file:
        target = Path(args.xcom_file)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(payload, encoding="utf-8")
        partial.replace(target)  # the xcom sidecar never reads half a file
    print(payload)
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    """Rebuild a registered version from its lineage and compare predictions (jobs/reproduce.py)."""
    import json
    from dataclasses import asdict

    from airflow_mlops.hooks.feast import FeastHook
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.jobs.reproduce import reproduce

    outcome = reproduce(args.model, args.version, mlflow_hook=MLflowHook(), feast_hook=FeastHook(),
                        allow_code_drift=args.allow_code_drift, tolerance=args.tolerance)
    if args.json:
        print(json.dumps(asdict(outcome), sort_keys=True, default=str))
    else:
        diff = "" if outcome.max_abs_diff is None else f", max |diff| {outcome.max_abs_diff:.3g}"
        drift = " (with code drift)" if outcome.code_drift else ""
        print(f"{outcome.model} v{outcome.version}: {outcome.status}{drift} on {outcome.rows} held-out rows{diff}")
        if outcome.reason:
            print(f"  {outcome.reason}", file=sys.stderr)
    return 0 if outcome.ok else (2 if outcome.status == "refused" else 1)


def _cmd_serve(args: argparse.Namespace) -> int:
    """Run the online prediction server of one model: FastAPI on uvicorn (docs/serving.md)."""
    import copy

    import uvicorn
    import uvicorn.config

    from airflow_mlops.serving.app import load_spec
    from airflow_mlops.serving.workers import WORKERS_ENV, metrics_dir

    load_spec(args.model)  # fail here, listing the known models, not inside a uvicorn worker
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one-row predictions; see serving/scoring.py one_native_thread
    os.environ["MLOPS_SERVING_MODEL"] = args.model
    if args.version:
        os.environ["MLOPS_SERVING_MODEL_VERSION"] = str(args.version)
    if args.shadow is not None:
        os.environ["MLOPS_SERVING_SHADOW"] = "true" if args.shadow else "false"
    if args.workers < 1:
        print(f"error: --workers {args.workers}: must be >= 1", file=sys.stderr)
        return 2
    os.environ[WORKERS_ENV] = str(args.workers)  # the app refuses deploys that would split the workers
    # The serving process imports no Airflow (core.store_settings resolves the stores; tests/integration/
    # test_serving_without_airflow.py checks it): uvicorn's logging config below is the only one. One access-log
    # line per request would cost more than a prediction: off.
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["uvicorn.error"]["propagate"] = True
    # On SIGTERM uvicorn shuts down gracefully (lifespan: prediction log flushed), then re-raises the signal;
    # requests get 20 s, and a shutdown still running at 25 s is cut short with its children (processes.py).
    server_config = uvicorn.Config("airflow_mlops.serving.app:app_from_env", factory=True, host=args.host,
                                   port=args.port, workers=args.workers, log_level="info", log_config=log_config,
                                   access_log=False, timeout_graceful_shutdown=20)
    with metrics_dir(args.workers):  # N workers: prometheus_client's multiprocess mode (serving/workers.py)
        return _run_uvicorn(server_config)


def _run_uvicorn(server_config: Any) -> int:
    """uvicorn.run(), with a stop deadline armed by the first SIGTERM/SIGINT (one worker or a supervisor)."""
    import uvicorn

    from airflow_mlops.processes import arm_stop_watchdog
    from airflow_mlops.serving.workers import supervisor_class

    class GuardedServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            arm_stop_watchdog()
            super().handle_exit(sig, frame)

    if server_config.workers > 1:
        supervisor_class(arm_stop_watchdog)(server_config, sockets=[server_config.bind_socket()]).run()
        return 0
    server_config.load_app()  # fail before binding, as uvicorn.run does
    server = GuardedServer(server_config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 3  # uvicorn's STARTUP_FAILURE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow-mlops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate model specs and the Feast repo together; report every problem")
    check.add_argument("--fast", action="store_true", help="spec syntax only: skip importing estimators and Feast")
    check.set_defaults(func=_cmd_check)
    sub.add_parser("env", help="print the environment the project gives Airflow").set_defaults(func=_cmd_env)
    sub.add_parser("doctor", help="show which stores are configured and check each one answers").set_defaults(
        func=_cmd_doctor
    )
    sub.add_parser("init", help="create the state dir and the Airflow metadata DB").set_defaults(func=_cmd_init)
    gen = sub.add_parser("generate-data", help="write seeded demo batches to the landing dir")
    gen.add_argument("--days", type=int, default=30)
    gen.add_argument("--start", default=None, help="UTC date YYYY-MM-DD, for reproducible times (default: the "
                                                   "data ends at the start of the current hour)")
    gen.add_argument("--covariate-shift", type=float, default=0.0, help="0..1: inputs move, the rule holds")
    gen.add_argument("--concept-shift", type=float, default=0.0, help="0..1: the rule itself changes")
    gen.add_argument("--label-noise", type=float, default=0.0,
                     help="0..1: share of labels replaced by coin flips (degraded data)")
    gen.add_argument("--seed", type=int, default=7)
    gen.set_defaults(func=_cmd_generate)
    _add_suite_parser(sub)
    demo = sub.add_parser("demo", help="generate data and run the feature and training DAGs end to end")
    demo.add_argument("--days", type=int, default=30)
    demo.add_argument("--verbose", action="store_true", help="show every Airflow task log line")
    demo.add_argument("--serve", action="store_true",
                      help="then start the serving app and promote a v2 under a /predict load loop")
    demo.add_argument("--shift-days", type=int, default=7, help="with --serve: days of new data that make v2")
    demo.add_argument("--port", type=int, default=8000, help="with --serve: port of the serving app")
    demo.add_argument("--clients", type=int, default=4, help="with --serve: load-loop client threads")
    demo.set_defaults(func=_cmd_demo)
    up = sub.add_parser("up", help="airflow standalone on the embedded state, with our DAGs and plugin")
    up.add_argument("--port", type=int, default=None,
                    help="API/UI port (default: AIRFLOW__API__PORT, else 8080); the base URL and the Execution "
                         "API URL follow it")
    up.set_defaults(func=_cmd_up)
    run = sub.add_parser("run", help="run one DAG now with dag.test() on the embedded state; exit 1 unless it succeeds")
    run.add_argument("dag_id")
    run.add_argument("--conf", default=None, help="the run's conf as a JSON object")
    run.add_argument("--retries", type=int, default=None,
                     help="retries per task for this run (default: the DAG's; 0 fails at the first error)")
    run.add_argument("--verbose", action="store_true", help="show every Airflow task log line")
    run.set_defaults(func=_cmd_run)
    job = sub.add_parser("train-job", help="train and log one model from a JSON request (what a training pod runs)")
    job.add_argument("--request", required=True, help="the request JSON, or @file holding it")
    job.add_argument(
        "--xcom-file",
        default=None,
        help="also write the result JSON here (KubernetesPodOperator: /airflow/xcom/return.json)",
    )
    job.set_defaults(func=_cmd_train_job)
    _add_reproduce_parser(sub)
    serve = sub.add_parser("serve", help="run the online prediction server of one model (FastAPI on uvicorn)")
    serve.add_argument("--model", required=True, help="model name: a spec in the models dir")
    serve.add_argument("--version", default=os.environ.get("MLOPS_SERVING_MODEL_VERSION") or None,
                       help="serve this registered version only (default: follow the champion alias)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 inside a container)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes behind one port (uvicorn's supervisor); each follows the alias, "
                            "/metrics and the prediction log cover them all (docs/serving.md)")
    serve.add_argument("--shadow", action=argparse.BooleanOptionalAction, default=None,
                       help="score the 'challenger' alias in shadow, off the request path (default: the spec's "
                            "promotion.shadow)")
    serve.set_defaults(func=_cmd_serve)
    return parser


def _add_reproduce_parser(sub: Any) -> None:
    rep = sub.add_parser("reproduce", help="rebuild a registered version from its lineage and prove it is the same "
                         "model (exit 0 same, 1 differs, 2 refused)")
    rep.add_argument("model", help="registered model name")
    rep.add_argument("version", help="registered version number")
    rep.add_argument("--allow-code-drift", action="store_true",
                     help="retrain with the current code and spec even if the recorded commit or spec hash differs")
    rep.add_argument("--tolerance", type=float, default=None,
                     help="accept a max absolute probability difference up to this (default: bitwise identical)")
    rep.add_argument("--json", action="store_true", help="print the outcome as JSON")
    rep.set_defaults(func=_cmd_reproduce)


def _add_suite_parser(sub: Any) -> None:
    suite = sub.add_parser("suite", help="profile a trusted batch into a GX suite include/expectations/<dataset>.json")
    suite.add_argument("--dataset", required=True, help="dataset name; the suite is named like it")
    suite.add_argument("--from", dest="source", required=True, help="trusted reference batch (.parquet or .csv)")
    suite.add_argument("--out", default=None, help="suite file (default: <expectations dir>/<dataset>.json)")
    suite.add_argument("--keys", nargs="+", default=None,
                       help="entity key columns (default: the entity keys of the specs that use the dataset)")
    suite.add_argument("--label", default=None, help="label column (default: the spec label of a label dataset)")
    suite.add_argument("--timestamp-column", default=None, help="event time column (default: event_timestamp)")
    suite.add_argument("--unique", nargs="*", default=(), help="columns whose values are unique on their own")
    suite.add_argument("--force", action="store_true", help="overwrite an existing (maybe hand-edited) suite")
    suite.set_defaults(func=_cmd_suite)


def main(argv: Sequence[str] | None = None) -> int:
    from airflow_mlops import privacy

    privacy.disable_telemetry()  # first: some libraries read their switch at import (ARCHITECTURE.md §9)
    args = _parser().parse_args(argv)
    args.user_mlops_home = bool(os.environ.get("MLOPS_HOME"))
    args.user_airflow_home = bool(os.environ.get("AIRFLOW_HOME"))
    # Airflow reads its configuration once, at import: set AIRFLOW_HOME & co. before anything imports it.
    from airflow_mlops.exceptions import MLOpsError
    from airflow_mlops.runtime_env import apply_airflow_env

    try:
        if args.command in ("demo", "run") and not args.verbose:
            # dag.test() echoes every task log line; these commands print their own progress, so keep warnings only.
            os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
            from airflow_mlops.headless import quiet_library_warnings

            quiet_library_warnings()  # libraries' deprecations are not the user's to fix
        apply_airflow_env()
        return int(args.func(args))
    except MLOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if not _serving_install():
            raise
        print(f"error: `airflow-mlops {args.command}` needs the full install (pip install airflow-mlops): this is "
              f"the serving install (airflow-mlops-serving), which runs `airflow-mlops serve` only ({exc})",
              file=sys.stderr)
        return 2


def _serving_install() -> bool:
    """True in the serving distribution (serving/pyproject.toml): it ships no hooks and no Airflow."""
    from importlib.util import find_spec

    return find_spec("airflow") is None and find_spec("airflow_mlops.hooks") is None


if __name__ == "__main__":
    sys.exit(main())
