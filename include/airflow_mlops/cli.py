"""`airflow-mlops` command: check, doctor, env, init, generate-data, suite, demo, up, train-job, serve."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any


def _cmd_check(args: argparse.Namespace) -> int:
    from airflow_mlops.core.checks import check_project

    problems = check_project(deep=not args.fast)
    for line in problems:
        print(f"ERROR {line}")
    print(f"{len(problems)} problem(s) found" if problems else "specs and feature repo are consistent")
    return 1 if problems else 0


def _cmd_env(_: argparse.Namespace) -> int:
    from airflow_mlops.runtime_env import apply_airflow_env

    for key, value in apply_airflow_env().items():
        print(f"export {key}={value}")
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


def _cmd_serve(args: argparse.Namespace) -> int:
    """Run the online prediction server of one model: FastAPI on uvicorn (docs/serving.md)."""
    import copy

    import uvicorn
    import uvicorn.config

    from airflow_mlops.serving.app import load_spec

    load_spec(args.model)  # fail here, listing the known models, not inside a uvicorn worker
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one-row predictions; see serving/scoring.py one_native_thread
    os.environ["MLOPS_SERVING_MODEL"] = args.model
    if args.version:
        os.environ["MLOPS_SERVING_MODEL_VERSION"] = str(args.version)
    if args.shadow is not None:
        os.environ["MLOPS_SERVING_SHADOW"] = "true" if args.shadow else "false"
    if args.workers > 1:
        print(f"note: {args.workers} workers each load the model and follow its alias on their own; /admin/deploy "
              "and /metrics reach one worker per request. For canaries use --workers 1 and more replicas.",
              file=sys.stderr)
    # Airflow's logging config (loaded on import) sets uvicorn.error to propagate=False: startup, shutdown and
    # error lines would vanish. One access-log line per request would cost more than a prediction: off.
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["uvicorn.error"]["propagate"] = True
    # On SIGTERM uvicorn shuts down gracefully (lifespan: prediction log flushed), then re-raises the signal.
    uvicorn.run("airflow_mlops.serving.app:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="info", log_config=log_config, access_log=False,
                timeout_graceful_shutdown=20)
    return 0


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
    gen.add_argument("--start", default=None, help="UTC date YYYY-MM-DD (default: 2026-10-01)")
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
    up.add_argument("--port", type=int, default=8080)
    up.set_defaults(func=_cmd_up)
    job = sub.add_parser("train-job", help="train and log one model from a JSON request (what a training pod runs)")
    job.add_argument("--request", required=True, help="the request JSON, or @file holding it")
    job.add_argument(
        "--xcom-file",
        default=None,
        help="also write the result JSON here (KubernetesPodOperator: /airflow/xcom/return.json)",
    )
    job.set_defaults(func=_cmd_train_job)
    serve = sub.add_parser("serve", help="run the online prediction server of one model (FastAPI on uvicorn)")
    serve.add_argument("--model", required=True, help="model name: a spec in the models dir")
    serve.add_argument("--version", default=os.environ.get("MLOPS_SERVING_MODEL_VERSION") or None,
                       help="serve this registered version only (default: follow the champion alias)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 inside a container)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--shadow", action=argparse.BooleanOptionalAction, default=None,
                       help="score the 'challenger' alias in shadow, off the request path (default: the spec's "
                            "promotion.shadow)")
    serve.set_defaults(func=_cmd_serve)
    return parser


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
    args = _parser().parse_args(argv)
    # Airflow reads its configuration once, at import: set AIRFLOW_HOME & co. before anything imports it.
    from airflow_mlops.runtime_env import apply_airflow_env

    if args.command == "demo" and not args.verbose:
        # dag.test() echoes every task log line; the demo prints its own progress, so keep warnings only.
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
        warnings.simplefilter("ignore", DeprecationWarning)  # libraries' deprecations are not the user's to fix
    apply_airflow_env()
    from airflow_mlops.exceptions import MLOpsError

    try:
        return int(args.func(args))
    except MLOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
