"""Training DAG wall time vs the same steps as a plain Python script, on the same data, in the same run.

Setup (not timed): a temporary MLOPS_HOME and AIRFLOW_HOME (`airflow db migrate`), `--days` of seeded
demo data (`demo.write_demo_batches`), one `dag.test()` of `mlops_features` so the offline store,
Feast registry and online store are ready, and one empty, migrated MLflow SQLite DB ("pristine").

Then `--repeat` rounds; in each, both methods run, each in its own fresh process, order alternating
between rounds. Each process gets its own copy of the pristine MLflow DB and its own artifact root
(through an `AIRFLOW_CONN_MLFLOW_DEFAULT` env connection, read by MLflowHook in tasks and script
alike), so neither sees the other's versions or champion; the offline store, Feast registry and
training-set snapshot directory are shared. Timed region: from just before the first step to just
after the last, after `import airflow.sdk` and spec parsing (both methods pay those before the timer;
no heavy library — pandas, sklearn, mlflow, feast, GX, ... — is loaded before it, which is checked).

- dag:    `build_dags()["ride_completion__train"].test()`: build_training_set → train → evaluate →
          register → model_card → promote, tasks in-process as dag.test() runs them. Per-task duration
          and start/end come from the run's TaskInstance rows in the metadata DB (read after timing);
          each operator class's execute() is wrapped in that process (no package change) to time the
          operator's own work, so task duration - execute() is what the task runner adds around it.
- script: the same six steps as plain functions: the calls each operator's `execute()` makes, with
          the same hooks and core functions, minus what only exists because of Airflow (template
          rendering, XCom, task context): `load_entity_df` + `build_training_set(FeastHook().get_store())`
          + the GX gate on the snapshot (`core.gate.check_batch`, as operators/validation.py
          `validate_training_set`); `jobs.training.run_training_job` (the shared training job);
          `core.training.holdout` + `core.evaluation.evaluate` with both models loaded from MLflow
          and the report/tags/metrics logged; `create_model_version` + alias `challenger`;
          `core.model_card` logged to the run; the promotion lease + `champion` alias + audit trail
          (hooks/mlflow_registry.ModelRegistry, as MLflowPromoteModelOperator). The script also makes
          the operators' reads of what an earlier step wrote (the evaluation report and training summary
          for the card), so a step's DAG-minus-script difference is the per-task Airflow overhead.

Reported per method: timed wall seconds (median, all runs), the dag/script ratio per round, process
wall (spawn to exit, incl. interpreter start and imports) and CPU seconds (all threads); per step, the
DAG task's duration, its execute() part and the runner's part next to the script step's time (wall
and CPU), and the part of dag.test() outside any task (before the first, between tasks, after the
last). Airflow's overhead = dag.test() wall - the sum of execute(); on a shared machine it is
steadier than the ratio, since the heavy work itself swings by tens of seconds with the load.

Correctness: every run must promote a champion whose training run has the same training-set sha256,
validation roc_auc and held-out eval.roc_auc (exact equality: same data + seed → identical metrics);
else exit 1. Results are printed as tables, then as JSON.

`--mode scheduler` replaces dag.test() by a real scheduler (benchmarks/_scheduler_mode.py): after the same
setup, per stack variant (`--preload off|on|both`: the scheduler's library preload, plugin/preload.py) the
stack starts (`airflow-mlops up`, LocalExecutor; or `--executor celery`: PostgreSQL + Redis + one Celery
worker), then `--repeat` rounds each run the script and trigger `<model>__train` over REST (order
alternating; a fresh copy of the pristine MLflow DB per run). Each task's time is split into scheduling,
executor pickup, task runner, imports, Execution API calls and the operator itself (timing probe:
benchmarks/_sched_probe/sitecustomize.py on the stack's PYTHONPATH). Ratio = scheduler run (trigger ->
run end) / script, per round.

    .venv/bin/python benchmarks/training_dag.py [--days 30] [--repeat 2] [--keep]
    .venv/bin/python benchmarks/training_dag.py --mode scheduler [--executor local|celery] [--preload both]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
MODEL = "ride_completion"
DAG_ID = f"{MODEL}__train"
STEPS = ("build_training_set", "train", "evaluate", "register", "model_card", "promote")
METHODS = ("dag", "script")
HEAVY = ("pandas", "numpy", "sklearn", "mlflow", "feast", "great_expectations", "pyarrow", "duckdb", "scipy")
FIRST_IMPORT: dict[str, float] = {}  # heavy top-level module -> epoch seconds of its first import


# -- shared by both children ----------------------------------------------------------------------
def heavy_loaded() -> list[str]:
    return sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))


def track_heavy_imports() -> None:
    """Note when each heavy library is first imported, to tell which step pays for it."""

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "import":
            top = str(args[0]).split(".", 1)[0]
            if top in HEAVY and top not in FIRST_IMPORT:
                FIRST_IMPORT[top] = time.time()

    sys.addaudithook(hook)


def imported_in(spans: dict[str, tuple[float, float]]) -> dict[str, str]:
    """{library: step whose [start, end] holds its first import, else "outside steps"}."""
    return {lib: next((step for step, (a, b) in spans.items() if a <= at <= b), "outside steps")
            for lib, at in sorted(FIRST_IMPORT.items(), key=lambda item: item[1])}


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def spec_of(name: str) -> Any:
    from airflow_mlops.core.spec import load_specs

    return next(s for s in load_specs() if s.name == name)


def outcome() -> dict[str, Any]:
    """The champion this process ended with, from its own MLflow DB (read after timing)."""
    from airflow_mlops.core.lineage import TAG_TRAINING_SET_SHA256
    from airflow_mlops.hooks.mlflow import MLflowHook

    hook = MLflowHook()
    client = hook.get_conn()
    champion = client.get_model_version_by_alias(MODEL, "champion")
    run = client.get_run(str(champion.run_id))
    metrics = run.data.metrics
    return {"tracking_uri": hook.tracking_uri, "champion_version": str(champion.version),
            "versions": len(client.search_model_versions(f"name = '{MODEL}'")),
            "training_set_sha256": run.data.tags.get(TAG_TRAINING_SET_SHA256),
            "roc_auc": metrics.get("roc_auc"), "eval_roc_auc": metrics.get("eval.roc_auc")}


def quiet() -> None:
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("airflow_mlops").setLevel(logging.WARNING)


# -- child: setup ---------------------------------------------------------------------------------
def child_setup(days: int, pristine: Path) -> dict[str, Any]:
    import pandas as pd

    from airflow_mlops import demo
    from airflow_mlops.dags import FEATURE_DAG_ID, build_dags
    from airflow_mlops.hooks.mlflow import MLflowHook

    written = demo.write_demo_batches(days=days)
    rows = {name: len(pd.read_parquet(path)) for name, path in written.items()}  # before landing moves them
    run = build_dags()[FEATURE_DAG_ID].test()
    if not str(run.state).endswith("success"):
        raise SystemExit(f"setup: {FEATURE_DAG_ID} ended {run.state}")
    hook = MLflowHook(tracking_uri=f"sqlite:///{pristine / 'mlflow.db'}", artifact_root=str(pristine / "artifacts"))
    hook.get_conn().search_experiments(max_results=1)  # migrates the empty DB once; each run gets a copy
    return {"rows": rows}


# -- child: dag -----------------------------------------------------------------------------------
def child_dag() -> dict[str, Any]:
    import airflow.sdk  # noqa: F401 - before the timer in both methods

    from airflow_mlops.dags import build_dags

    dag = build_dags()[DAG_ID]
    inside = instrument_execute(dag)
    preloaded = heavy_loaded()
    started_at, cpu0, started = time.time(), cpu_seconds(), time.perf_counter()
    dag_run = dag.test()
    wall, cpu, ended_at = time.perf_counter() - started, cpu_seconds() - cpu0, time.time()
    tasks = task_rows(dag_run.run_id)
    spans = {t: (row["start"], row["end"]) for t, row in tasks.items() if row["start"] and row["end"]}
    return {"state": str(dag_run.state), "wall_s": wall, "cpu_s": cpu, "preloaded_heavy": preloaded,
            "steps": {t: row["duration"] for t, row in tasks.items()}, "tasks": tasks,
            "execute": inside, "outside": outside_tasks(tasks, started_at, ended_at),
            "imported_in": imported_in(spans), "outcome": outcome()}


def instrument_execute(dag: Any) -> dict[str, dict[str, float]]:
    """Time each operator's own execute() (wall, process CPU, main-thread CPU) inside its task."""
    inside: dict[str, dict[str, float]] = {}
    for cls in {type(task) for task in dag.tasks}:
        def wrapper(self: Any, *args: Any, _original: Any = cls.execute, **kwargs: Any) -> Any:
            wall, cpu, thread = time.perf_counter(), cpu_seconds(), time.thread_time()
            try:
                return _original(self, *args, **kwargs)
            finally:
                inside[self.task_id] = {"wall_s": time.perf_counter() - wall, "cpu_s": cpu_seconds() - cpu,
                                        "thread_cpu_s": time.thread_time() - thread}
        cls.execute = wrapper
    return inside


def task_rows(run_id: str) -> dict[str, dict[str, Any]]:
    """Per task: state, duration and start/end as epoch seconds (fine in a benchmark, never in a task)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(TaskInstance.task_id, TaskInstance.state, TaskInstance.start_date, TaskInstance.end_date,
                   TaskInstance.duration).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id)
    with create_session() as session:
        rows = session.execute(query).all()
    return {task_id: {"state": str(state), "start": start.timestamp() if start else None,
                      "end": end.timestamp() if end else None, "duration": float(duration or 0.0)}
            for task_id, state, start, end, duration in rows}


def outside_tasks(tasks: dict[str, dict[str, Any]], started_at: float, ended_at: float) -> dict[str, float]:
    """dag.test() time spent outside every task: before the first, in the gaps, after the last."""
    spans = sorted((t["start"], t["end"]) for t in tasks.values() if t["start"] and t["end"])
    if not spans:
        return {"before first task": ended_at - started_at, "between tasks": 0.0, "after last task": 0.0}
    gaps = sum(max(0.0, nxt[0] - prev[1]) for prev, nxt in zip(spans, spans[1:], strict=False))
    return {"before first task": spans[0][0] - started_at, "between tasks": gaps,
            "after last task": ended_at - spans[-1][1]}


# -- child: script --------------------------------------------------------------------------------
def child_script() -> dict[str, Any]:
    import logging

    import airflow.sdk  # noqa: F401 - before the timer in both methods

    spec = spec_of(MODEL)
    preloaded = heavy_loaded()
    log = logging.getLogger("benchmark.training_dag")
    steps: dict[str, float] = {}
    step_cpu: dict[str, float] = {}
    spans: dict[str, tuple[float, float]] = {}

    def timed(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        began, began_at, cpu = time.perf_counter(), time.time(), cpu_seconds()
        try:
            return fn(*args)
        finally:
            steps[name], spans[name] = time.perf_counter() - began, (began_at, time.time())
            step_cpu[name] = cpu_seconds() - cpu

    cpu0, started = cpu_seconds(), time.perf_counter()
    lineage = timed("build_training_set", step_build_training_set, spec, log)
    trained = timed("train", step_train, spec, lineage)
    evaluation = timed("evaluate", step_evaluate, spec, lineage, trained)
    registered = timed("register", step_register, spec, trained, evaluation)
    timed("model_card", step_model_card, spec, registered, lineage)
    timed("promote", step_promote, spec, registered, evaluation)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    return {"state": "success", "wall_s": wall, "cpu_s": cpu, "preloaded_heavy": preloaded, "steps": steps,
            "step_cpu": step_cpu, "imported_in": imported_in(spans), "outcome": outcome()}


def step_build_training_set(spec: Any, log: Any) -> dict[str, Any]:
    """FeastBuildTrainingSetOperator.execute, then its GX gate (validate_training_set)."""
    from airflow_mlops.config import paths
    from airflow_mlops.core.feature_repo import feast_output_to_log
    from airflow_mlops.core.training_set import build_training_set, load_entity_df
    from airflow_mlops.hooks.feast import FeastHook

    feats, home = spec.features, paths()
    ts, keys = feats.entity_df.timestamp_column, list(feats.entity_keys)
    request = list(feats.entity_df.request_features)
    entity_df = load_entity_df(home.dataset_dir(feats.entity_df.dataset), ts, int(spec.training.lookback_days),
                               [*keys, ts, feats.label, *request])
    store = FeastHook().get_store()
    with feast_output_to_log(log):
        lineage = build_training_set(store, feature_service=feats.feature_service, entity_df=entity_df,
                                     entity_keys=keys, timestamp_column=ts, label=feats.label,
                                     request_features=request, out_dir=home.training_sets_dir / spec.name)
    if spec.validation.suite:
        lineage = validate_training_set(lineage, spec.validation.suite, spec.validation.mode, [feats.label])
    return lineage


def validate_training_set(lineage: dict[str, Any], suite: str, mode: str, labels: list[str]) -> dict[str, Any]:
    from airflow_mlops.core.gate import Gate, batch_message, check_batch
    from airflow_mlops.exceptions import DataValidationFailed
    from airflow_mlops.hooks.gx import GXHook

    hook = GXHook()
    gate = Gate.from_state_dir(label_columns=labels, context=hook.get_conn())
    entry = check_batch(Path(str(lineage["path"])), hook.load_suite(suite) or {}, gate, mode=mode or None,
                        with_lineage=True)
    if not entry["success"] and entry["mode"] != "warn":
        raise DataValidationFailed(batch_message(entry))
    compact = {k: entry[k] for k in ("suite", "success", "mode", "failure_count")}
    return {**lineage, "validation": {**compact, "report": entry["report"]["url"]}}


def step_train(spec: Any, lineage: dict[str, Any]) -> dict[str, Any]:
    """SklearnTrainModelOperator.execute: the shared training job, with no Airflow identity."""
    from airflow_mlops import config
    from airflow_mlops.core.lineage import git_commit, normalize_lineage
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.jobs.training import TrainingRequest, run_training_job

    t, feats = spec.training, spec.features
    request = TrainingRequest(
        model_name=spec.name, training_set=normalize_lineage(lineage), estimator=t.estimator, label=feats.label,
        params=dict(t.params), preprocessing=t.preprocessing.model_dump(), split=t.split.model_dump(), seed=t.seed,
        timestamp_column=feats.entity_df.timestamp_column, exclude_columns=list(feats.entity_keys),
        git_commit=git_commit(config.project_dir()),
    )
    return run_training_job(request, MLflowHook())


def step_evaluate(spec: Any, lineage: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    """EvaluateModelOperator.execute: held-out rows, both models scored, report + verdict logged."""
    import pandas as pd

    from airflow_mlops.core import training
    from airflow_mlops.core.lineage import verify_snapshot
    from airflow_mlops.exceptions import ModelBelowThreshold
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.hooks.mlflow_registry import CHAMPION, ModelRegistry

    label, ts = spec.features.label, spec.features.entity_df.timestamp_column
    frame = pd.read_parquet(verify_snapshot(lineage))
    rows = training.holdout(frame, label=label, split_config=spec.training.split.model_dump(),
                            seed=spec.training.seed, timestamp_column=ts)
    hook = MLflowHook()
    hook.check_backend()
    with hook.activated() as client:
        champion = ModelRegistry(client, spec.name).alias_version(CHAMPION)
        result = judge(spec, rows, trained["model_uri"], champion)
        report_uri = log_evaluation(client, trained["run_id"], result, spec.name)
    if not result["verdict"]["passed_thresholds"]:
        raise ModelBelowThreshold("; ".join(result["verdict"]["reasons"]) + f". Full report: {report_uri}")
    return {**result, "report_uri": report_uri, "champion_version": champion}


def score(model_uri: str, rows: Any) -> Any:
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(model_uri)
    return model.predict_proba(rows[list(model.feature_names_in_)].astype("float64"))[:, 1]


def judge(spec: Any, rows: Any, challenger_uri: str, champion: str | None) -> dict[str, Any]:
    from airflow_mlops.core.evaluation import evaluate

    cfg, seed = spec.evaluation.model_dump(mode="json"), spec.training.seed
    y_true = rows[spec.features.label].astype("int64").to_numpy()
    champion_proba = score(f"models:/{spec.name}/{champion}", rows) if champion else None
    result = evaluate(
        y_true, score(challenger_uri, rows), champion_proba,
        metrics=list(cfg.get("metrics") or []), primary_metric=cfg.get("primary_metric", "roc_auc"),
        thresholds=cfg.get("thresholds") or {}, rule=cfg.get("rule", "improvement"),
        min_improvement=float(cfg.get("min_improvement", 0.0)), max_regression=float(cfg.get("max_regression", 0.0)),
        confidence=float(cfg.get("confidence", 0.95)), bootstrap_samples=int(cfg.get("bootstrap_samples", 500)),
        seed=seed, slices=list(cfg.get("slices") or []), slice_frame=rows.reset_index(drop=True),
        min_slice_rows=int(cfg.get("min_slice_rows", 50)), champion_version=champion,
    )
    return {**result.to_dict(), "summary": result.summary()}


def log_evaluation(client: Any, run_id: str, result: dict[str, Any], name: str) -> str:
    import time as clock

    from mlflow.entities import Metric

    from airflow_mlops.core.evaluation_report import render_html

    verdict = result["verdict"]
    client.log_dict(run_id, result, "evaluation/report.json")
    client.log_text(run_id, render_html(result, title=f"{name}: challenger evaluation"), "evaluation/report.html")
    label = "promote" if verdict["promote"] else ("below_threshold" if not verdict["passed_thresholds"] else "hold")
    client.set_tag(run_id, "airflow_mlops.evaluation.verdict", label)
    client.set_tag(run_id, "airflow_mlops.evaluation.champion_version",
                   (result.get("champion") or {}).get("version") or "none")
    metrics = {f"eval.{k}": v for k, v in result["challenger"]["metrics"].items() if v is not None}
    metrics.update({f"eval.{k}": v for k, v in (result.get("comparison") or {}).items()
                    if k in ("gain", "ci_low", "ci_high") and v is not None})
    stamp = int(clock.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()])
    return f"{client.get_run(run_id).info.artifact_uri}/evaluation/report.html"


def step_register(spec: Any, trained: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """MLflowRegisterModelOperator.execute: registered model, version with lineage tags, alias challenger."""
    from mlflow.exceptions import MlflowException

    from airflow_mlops.core import lineage
    from airflow_mlops.hooks.mlflow import MLflowHook

    name, run_id, uri = spec.name, trained["run_id"], trained["model_uri"]
    hook = MLflowHook()
    hook.check_backend()
    with hook.activated() as client:
        model_id = uri.removeprefix("models:/") if uri.startswith("models:/m-") else None
        if model_id and client.get_logged_model(model_id).source_run_id != run_id:
            raise RuntimeError(f"{uri} was not logged by run {run_id}")
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name, tags={f"{lineage.TAG_PREFIX}managed_by": "airflow-mlops"},
                                           description=spec.description or None)
        if client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
            raise RuntimeError("a fresh MLflow DB cannot already hold this run's version")
        run_tags = client.get_run(run_id).data.tags
        tags = {k: run_tags[k] for k in lineage.TRAINING_TAGS if k in run_tags}
        version = client.create_model_version(name, uri, run_id=run_id,
                                              tags={**tags, lineage.TAG_SOURCE_RUN_ID: run_id}, model_id=model_id)
        for key, value in evaluation_tags(evaluation).items():
            client.set_model_version_tag(name, version.version, key, value)
        client.set_registered_model_alias(name, "challenger", version.version)
    if str(client.get_model_version_by_alias(name, "challenger").version) != str(version.version):
        raise RuntimeError("alias challenger moved under us")
    return {"name": name, "version": str(version.version), "run_id": run_id}


def evaluation_tags(evaluation: dict[str, Any]) -> dict[str, str]:
    primary, verdict = evaluation["primary_metric"], evaluation["verdict"]
    comparison = evaluation.get("comparison") or {}
    tags = {"verdict": "promote" if verdict["promote"] else "hold",
            "champion_version": str(evaluation.get("champion_version") or "none"), "primary_metric": primary,
            "value": str(evaluation["challenger"]["metrics"].get(primary)), "gain": str(comparison.get("gain")),
            "ci": json.dumps([comparison.get("ci_low"), comparison.get("ci_high")] if comparison else None),
            "report": evaluation["report_uri"], "reasons": "; ".join(verdict["reasons"])[:4000]}
    return {f"airflow_mlops.evaluation.{k}": v for k, v in tags.items() if v}


def step_model_card(spec: Any, registered: dict[str, Any], lineage: dict[str, Any]) -> dict[str, Any]:
    """MLflowModelCardOperator.execute: card from the recorded evidence, logged and linked."""
    from airflow_mlops.core import model_card
    from airflow_mlops.hooks.mlflow import MLflowHook

    version, run_id = registered["version"], registered["run_id"]
    info = {"name": spec.name, "description": spec.description, "owner": spec.owner,
            "intended_use": spec.intended_use, "limitations": spec.limitations, "tags": list(spec.tags)}
    hook = MLflowHook()
    hook.check_backend()
    with hook.activated() as client:
        evaluation = artifact_json(client, run_id, "evaluation/report.json") or {}
        card = model_card.build_model_card(model=info, version=version, run_id=run_id, lineage=lineage,
                                           evaluation=evaluation, training=training_facts(client, run_id))
        client.log_dict(run_id, card, "model_card/model_card.json")
        client.log_text(run_id, model_card.render_markdown(card), "model_card/model_card.md")
        client.log_text(run_id, model_card.render_html(card), "model_card/model_card.html")
        base = f"{client.get_run(run_id).info.artifact_uri}/model_card"
        client.set_model_version_tag(spec.name, version, "airflow_mlops.model_card", f"{base}/model_card.html")
        promote = (evaluation.get("verdict") or {}).get("promote")
        client.update_model_version(spec.name, version, description=f"{spec.description} Promote: {promote}.")
    return {"version": version, "uri": f"{base}/model_card.md"}


def artifact_json(client: Any, run_id: str, path: str) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except OSError:
            return None
        return dict(json.loads(Path(local).read_text(encoding="utf-8")))


def training_facts(client: Any, run_id: str) -> dict[str, Any]:
    params = dict(client.get_run(run_id).data.params)
    summary = artifact_json(client, run_id, "training/summary.json") or {}

    def prefixed(prefix: str) -> dict[str, Any]:
        return {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}

    return {"estimator": params.get("estimator"), "params": prefixed("params."),
            "preprocessing": prefixed("preprocessing."), "split": summary.get("split") or prefixed("split."),
            "seed": params.get("seed"), "feature_columns": summary.get("feature_columns"),
            "train_rows": summary.get("train_rows"), "validation_rows": summary.get("validation_rows")}


def step_promote(spec: Any, registered: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """MLflowPromoteModelOperator.execute: under the registry lease, re-check, move `champion`, audit."""
    from airflow_mlops.core import audit
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.hooks.mlflow_registry import CHALLENGER, CHAMPION, ModelRegistry

    target = registered["version"]
    if not evaluation["verdict"]["promote"]:
        raise RuntimeError(f"a first model on a fresh registry must be promoted: {evaluation['verdict']}")
    hook = MLflowHook()
    hook.check_backend()
    with hook.activated() as client:
        registry = ModelRegistry(client, spec.name)
        registry.history()
        with registry.lease("benchmark/script/promote"):
            current = registry.alias_version(CHAMPION)
            if registry.alias_version(CHALLENGER) != target or current != evaluation["champion_version"]:
                raise RuntimeError("registry moved since the evaluation")
            event = registry.move_champion(audit.AuditEvent(
                action="promote", version=target, previous=current, actor="benchmark-script", trigger="manual",
                dag_id=None, run_id=None, at=audit.now_iso(), reason=evaluation["summary"]))
        version = registry.version(event.version)
        metrics = dict(client.get_run(str(version.run_id)).data.metrics)
    return {"version": event.version, "metrics": metrics}


def child(method: str, result_file: Path, days: int, pristine: Path | None) -> None:
    track_heavy_imports()
    quiet()
    if method == "setup":
        assert pristine is not None
        result = child_setup(days, pristine)
    elif method == "outcome":  # the champion a real-scheduler run left in its MLflow DB
        result = {"outcome": outcome()}
    else:
        result = child_dag() if method == "dag" else child_script()
    result_file.write_text(json.dumps(result, default=str))


# -- orchestration --------------------------------------------------------------------------------
def child_env(work: Path, mlflow_dir: Path | None = None) -> dict[str, str]:
    """The integration test's environment (tests/integration/test_training_dag.py) plus an MLflow DB per run."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW_", "AIRFLOW__", "MLOPS_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY"))}
    env.update(AIRFLOW_HOME=str(work / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT / "dags"), MLOPS_HOME=str(work / "home"), PYTHONHASHSEED="0")
    if mlflow_dir is not None:
        env["AIRFLOW_CONN_MLFLOW_DEFAULT"] = json.dumps({
            "conn_type": "mlflow", "host": f"sqlite:///{mlflow_dir / 'mlflow.db'}",
            "extra": {"artifact_root": str(mlflow_dir / "artifacts")}})
    return env


def spawn(method: str, work: Path, tag: str, args: argparse.Namespace, mlflow_dir: Path | None = None) -> dict:
    result_file, log_file = work / f"result_{tag}.json", work / "logs" / f"{tag}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", method, "--result-file", str(result_file), "--days", str(args.days),
           "--pristine", str(work / "pristine")]
    started = time.perf_counter()
    with log_file.open("w") as out:
        done = subprocess.run(cmd, env=child_env(work, mlflow_dir), cwd=work, stdout=out, stderr=subprocess.STDOUT,
                              check=False)
    process_s = time.perf_counter() - started
    if done.returncode != 0 or not result_file.exists():
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-60:])
        sys.exit(f"{method} ({tag}) failed with exit code {done.returncode}; log {log_file}:\n{tail}")
    return {**json.loads(result_file.read_text()), "process_s": process_s}


def setup(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], env=child_env(work), cwd=work, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (work / "pristine").mkdir()
    return spawn("setup", work, "setup", args)


def run_rounds(work: Path, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for rnd in range(args.repeat):
        for method in METHODS if rnd % 2 == 0 else METHODS[::-1]:  # alternate who goes first
            mlflow_dir = work / "mlflow" / f"round{rnd}-{method}"
            shutil.copytree(work / "pristine", mlflow_dir)  # fresh, already migrated, nobody's champion
            run = spawn(method, work, f"round{rnd}-{method}", args, mlflow_dir)
            runs[method].append(run)
            print(f"  round {rnd} {method}: {run['wall_s']:.2f} s timed, {run['process_s']:.2f} s process",
                  file=sys.stderr, flush=True)
    return runs


def check(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Every run promoted a champion trained on the same snapshot with identical metrics; problems listed."""
    problems, seen = [], {}
    for method, method_runs in runs.items():
        for i, run in enumerate(method_runs):
            if run["state"] != "success" or any(t["state"] != "success" for t in run.get("tasks", {}).values()):
                problems.append(f"{method} round {i}: state {run['state']}, tasks {run.get('tasks')}")
            if run["preloaded_heavy"]:
                problems.append(f"{method} round {i}: {run['preloaded_heavy']} imported before the timer")
            out = run["outcome"]
            seen[f"{method} round {i}"] = (out["training_set_sha256"], out["roc_auc"], out["eval_roc_auc"])
    if len(set(seen.values())) != 1 or None in next(iter(seen.values())):
        problems.append("runs disagree on (training-set sha256, roc_auc, eval.roc_auc): " + json.dumps(seen))
    uris = [r["outcome"]["tracking_uri"] for rs in runs.values() for r in rs]
    if len(set(uris)) != len(uris):
        problems.append(f"runs shared an MLflow DB: {uris}")
    return problems


def med(values: list[float]) -> float:
    return statistics.median(values)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    dag, script = runs["dag"], runs["script"]
    ratios = [d["wall_s"] / s["wall_s"] for d, s in zip(dag, script, strict=True)]
    methods = {m: {"wall_s": med([r["wall_s"] for r in rs]), "all_wall_s": [r["wall_s"] for r in rs],
                   "process_s": med([r["process_s"] for r in rs]), "cpu_s": med([r["cpu_s"] for r in rs])}
               for m, rs in runs.items()}
    steps = {s: {"dag_s": med([r["steps"][s] for r in dag]),
                 "execute_s": med([r["execute"][s]["wall_s"] for r in dag]),
                 "runner_s": med([r["steps"][s] - r["execute"][s]["wall_s"] for r in dag]),
                 "execute_cpu_s": med([r["execute"][s]["cpu_s"] for r in dag]),
                 "script_s": med([r["steps"][s] for r in script]),
                 "script_cpu_s": med([r["step_cpu"][s] for r in script])} for s in STEPS}
    outside = {k: med([r["outside"][k] for r in dag]) for k in dag[0]["outside"]}
    overhead = [r["wall_s"] - sum(e["wall_s"] for e in r["execute"].values()) for r in dag]
    share = med([o / r["wall_s"] for o, r in zip(overhead, dag, strict=True)])
    work = {"dag": med([sum(e["wall_s"] for e in r["execute"].values()) for r in dag]),
            "script": med([r["wall_s"] for r in script])}
    imports = {m: rs[0]["imported_in"] for m, rs in runs.items()}
    return {"methods": methods, "ratio_dag_over_script": {"median": med(ratios), "all": ratios},
            "steps": steps, "dag_outside_tasks": outside,
            "airflow_overhead_s": {"median": med(overhead), "all": overhead,
                                   "share_of_dag_wall": share},
            "work_s": work, "first_import_round0": imports, "outcome": runs["script"][0]["outcome"]}


def report(summary: dict[str, Any], args: argparse.Namespace, data: dict[str, Any]) -> None:
    from _feature_data import load_note, machine_note

    m, ratio = summary["methods"], summary["ratio_dag_over_script"]
    out = summary["outcome"]
    rows = ", ".join(f"{name} {n:,} rows" for name, n in data["rows"].items())
    print(f"\nMachine: {machine_note()}, {cpu_model()}; demo data {args.days} days ({rows}); "
          f"median of {args.repeat} rounds, each method in a fresh process, order alternating.\n")
    print("| method | timed wall s (median) | all runs, wall s | ratio dag/script (per round) | CPU s | "
          "process wall s (incl. start-up) |\n|---|---|---|---|---|---|")
    for method, label in (("dag", f"dag.test() of {DAG_ID}"), ("script", "plain script, same steps")):
        r = m[method]
        every = ", ".join(f"{x:.2f}" for x in r["all_wall_s"])
        rounds = ", ".join(f"{x:.2f}x" for x in ratio["all"])
        shown = f"{ratio['median']:.2f}x ({rounds})" if method == "dag" else "1.00x (baseline)"
        print(f"| {label} | {r['wall_s']:.2f} | {every} | {shown} | {r['cpu_s']:.1f} | {r['process_s']:.2f} |")
    print("\n| step | DAG task duration s | of which operator execute() s | task runner around execute() s | "
          "script step s | execute() CPU s | script step CPU s |\n|---|---|---|---|---|---|---|")
    for step, s in summary["steps"].items():
        print(f"| {step} | {s['dag_s']:.2f} | {s['execute_s']:.2f} | {s['runner_s']:.2f} | {s['script_s']:.2f} | "
              f"{s['execute_cpu_s']:.1f} | {s['script_cpu_s']:.1f} |")
    for part, seconds in summary["dag_outside_tasks"].items():
        print(f"| dag.test(), {part} | - | - | {seconds:.2f} | - | - | - |")
    over, work = summary["airflow_overhead_s"], summary["work_s"]
    print(f"\nAirflow overhead = dag.test() wall - sum of the operators' execute() = {over['median']:.2f} s median "
          f"({', '.join(f'{x:.2f}' for x in over['all'])}; {over['share_of_dag_wall']:.0%} of the DAG's wall). "
          f"The work itself: sum of execute() {work['dag']:.2f} s in the DAG vs {work['script']:.2f} s as a script "
          f"(medians; step times are medians per step, so columns need not add up to the totals).")
    print("\nStep (or task) in which each heavy library was first imported, round 0:\n")
    for method, where in summary["first_import_round0"].items():
        print(f"- {method}: " + ", ".join(f"{lib} in {step}" for lib, step in where.items()))
    print(f"\nCorrectness: all {2 * args.repeat} runs promoted v{out['champion_version']} trained on snapshot "
          f"sha256 {str(out['training_set_sha256'])[:12]}... with roc_auc {out['roc_auc']!r} (validation) and "
          f"eval.roc_auc {out['eval_roc_auc']!r} (held-out), identical in every run; one MLflow DB per run.")
    print(f"\nMachine load: {args.load_before} at start, {load_note()} at end.")


def scheduler_mode(work: Path, args: argparse.Namespace, data: dict[str, Any]) -> None:
    """`--mode scheduler`: the DAG under `airflow-mlops up` vs the script, same rounds; exit 1 on a problem."""
    import _scheduler_mode as sched

    variants = sched.run_rounds(work, args, spawn, child_env, DAG_ID)
    problems = sched.check(variants)
    summary = sched.summarize(variants)
    rows = ", ".join(f"{name} {n:,} rows" for name, n in data["rows"].items())
    from _feature_data import load_note, machine_note

    print(f"\nMachine: {machine_note()}, {cpu_model()}; demo data {args.days} days ({rows}); {args.repeat} rounds "
          f"per stack, script and scheduler run in each, order alternating.\n")
    sched.report(summary)
    out = next(iter(variants.values()))["rounds"][0]["script"]["outcome"]
    print(f"\nCorrectness: every run promoted v{out['champion_version']} trained on snapshot sha256 "
          f"{str(out['training_set_sha256'])[:12]}... with roc_auc {out['roc_auc']!r} and eval.roc_auc "
          f"{out['eval_roc_auc']!r}, identical in every run.")
    print(f"\nMachine load: {args.load_before} at start, {load_note()} at end.")
    print("\nJSON: " + json.dumps({"finished": datetime.now().isoformat(timespec="seconds"), "mode": "scheduler",
                                   "days": args.days, "repeat": args.repeat, "summary": summary,
                                   "variants": variants, "problems": problems}, default=str))
    if problems:
        print("\nFAILED:\n- " + "\n- ".join(problems), file=sys.stderr)
        sys.exit(1)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30, help="days of demo data (3,500 rides/day)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; each runs both methods once")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, DBs)")
    parser.add_argument("--mode", choices=("dag", "scheduler"), default="dag",
                        help="dag: dag.test() vs the script; scheduler: `airflow-mlops up` (LocalExecutor) vs the "
                             "script, each task broken down (benchmarks/_scheduler_mode.py)")
    parser.add_argument("--executor", choices=("local", "celery"), default="local",
                        help="--mode scheduler: local = `airflow-mlops up`; celery = PostgreSQL + Redis (must be "
                             "running on 127.0.0.1) and one Celery worker")
    parser.add_argument("--preload", choices=("off", "on", "both"), default="both",
                        help="--mode scheduler: the scheduler's library preload ([mlops] preload_libraries); "
                             "both = one stack each, off first")
    parser.add_argument("--child", choices=("setup", "outcome", *METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pristine", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.result_file, args.days, args.pristine)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _feature_data import load_note

    work = Path(tempfile.mkdtemp(prefix="mlops-bench-dag-"))
    args.load_before = load_note()
    try:
        started = time.perf_counter()
        data = setup(work, args)
        print(f"  setup (migrate, {args.days} days of demo data, mlops_features): "
              f"{time.perf_counter() - started:.0f} s, not timed", file=sys.stderr, flush=True)
        if args.mode == "scheduler":
            scheduler_mode(work, args, data)
            return
        runs = run_rounds(work, args)
        problems = check(runs)
        summary = summarize(runs)
        report(summary, args, data)
        print("\nJSON: " + json.dumps({"finished": datetime.now().isoformat(timespec="seconds"), "days": args.days,
                                       "repeat": args.repeat, "summary": summary, "runs": runs,
                                       "problems": problems}, default=str))
        if problems:
            print("\nFAILED:\n- " + "\n- ".join(problems), file=sys.stderr)
            sys.exit(1)
    finally:
        if args.keep:
            print(f"\nkept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
