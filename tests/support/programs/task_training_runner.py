"""The program of tests/integration/test_task_training.py: the regression and multiclass training DAGs, end to end.

Run in a child process (`support.dag_runs.run_script`, with the program's text) on the checked-out session demo
state (support/demo_state.py: 5 days of demo data landed, features materialized, ride_completion v1 champion).
`task_training_runner.py <tests dir> <work dir>`:

1. regression, the shipped example: `ride_duration__train` (v1, champion), then again from a copy of the specs
   whose ride_duration has fewer boosting iterations (a new spec hash: v2, compared with the v1 champion);
2. multiclass, the test spec tests/support/task_specs/ride_tier.yaml: its label table `ride_tiers` (a tier per
   demo ride, from the request and the driver's rating as of the request) is landed into the offline store, then
   `ride_tier__train` runs twice the same way (v1 champion; v2 with another `smoothing`);
3. `reproduce` of both v1s.

It prints one `RESULT <json>` line: per run its task states, the challenger's evaluation report, the registry
(versions with their tags, aliases), each v1's MLflow signature and pyfunc predict_fn, and the reproductions.
"""

# ruff: noqa: E402 - sys.path gets the tests dir first: the multiclass spec's estimator lives in support/
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

TESTS, WORK = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(TESTS))

import numpy as np
import pandas as pd
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

from airflow_mlops import config
from airflow_mlops.core.offline import land_batch
from airflow_mlops.dags import build_dags
from airflow_mlops.hooks.feast import FeastHook
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.jobs.reproduce import reproduce

TASK_SPECS = TESTS / "support" / "task_specs"


def run(model: str) -> dict[str, Any]:
    started = time.monotonic()
    dag_run = build_dags()[f"{model}__train"].test()
    seconds = round(time.monotonic() - started, 1)
    with create_session() as session:
        tasks = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                     .where(TaskInstance.run_id == dag_run.run_id)).all())
    return {"state": str(dag_run.state), "tasks": {t: str(s) for t, s in tasks.items()},
            "report": report(model, dag_run.run_id), "seconds": seconds}


def report(model: str, run_id: str) -> dict[str, Any] | None:
    client = MLflowHook().get_conn()
    experiment = client.get_experiment_by_name(model)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`airflow_mlops.airflow.run_id` = '{run_id}'")
    if not runs:
        return None
    local = client.download_artifacts(runs[0].info.run_id, "evaluation/report.json", str(WORK))
    found: dict[str, Any] = json.loads(Path(local).read_text())
    html = Path(client.download_artifacts(runs[0].info.run_id, "evaluation/report.html", str(WORK))).read_text()
    found["html_headings"] = [h for h in ("ROC curves", "Predicted vs actual", "Residuals", "Confusion matrix",
                                          "Per-class recall") if f"<h2>{h}</h2>" in html]
    run_id = runs[0].info.run_id
    found["importance"] = _json_artifact(client, run_id, "explanations/global_importance.json")
    card = _json_artifact(client, run_id, "model_card/model_card.json")
    found["card_explanations"] = card.get("explanations") if card else None
    return found


def _json_artifact(client: Any, run_id: str, path: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(Path(client.download_artifacts(run_id, path, str(WORK))).read_text()))
    except Exception:  # noqa: BLE001 - not logged: the test asserts on None
        return None


def registry(model: str) -> dict[str, Any]:
    import mlflow

    client = MLflowHook().get_conn()
    versions = {str(v.version): dict(v.tags) for v in client.search_model_versions(f"name = '{model}'")}
    aliases: dict[str, str | None] = {}
    for alias in ("champion", "challenger"):
        try:
            aliases[alias] = str(client.get_model_version_by_alias(model, alias).version)
        except Exception:  # noqa: BLE001 - no such alias: the test expects None
            aliases[alias] = None
    with MLflowHook().activated():
        info = mlflow.models.get_model_info(f"models:/{model}/1")
    signature = info.signature.to_dict() if info.signature else None
    return {"versions": versions, "aliases": aliases, "signature": signature,
            "predict_fn": info.flavors["python_function"].get("predict_fn"),
            "metadata": info.metadata}


def specs_copy(name: str, sources: list[Path], replace: tuple[str, str] | None = None) -> Path:
    """A models dir with copies of `sources`, one text replaced (a changed spec hash: a new version)."""
    folder = WORK / name
    folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        text = source.read_text()
        if replace is not None and replace[0] in text:
            text = text.replace(*replace)
        (folder / source.name).write_text(text)
    return folder


def land_ride_tiers() -> int:
    """A tier per demo ride (every third one): a score of distance, surge and the driver's rating as of the
    request, cut at its terciles; landed as dataset `ride_tiers` as the feature DAG's land task does."""
    offline = config.paths().offline_dir
    rides = pd.read_parquet(offline / "rides").drop(columns=["date", "completed"], errors="ignore")
    rides = rides.sort_values("event_timestamp").iloc[::3].reset_index(drop=True)
    stats = pd.read_parquet(offline / "driver_hourly_stats", columns=["driver_id", "event_timestamp", "rating"])
    for frame in (rides, stats):
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
        frame["driver_id"] = frame["driver_id"].astype("int64")
    known = pd.merge_asof(rides, stats.sort_values("event_timestamp"), on="event_timestamp", by="driver_id")
    noise = np.random.default_rng(5).normal(0, 0.3, len(known))
    score = (0.3 * known["trip_distance_km"] + 2.0 * (known["surge_multiplier"] - 1.0)
             + 2.5 * (known["rating"].fillna(4.3) - 4.3) + noise).to_numpy()
    cuts = np.quantile(score, [1 / 3, 2 / 3])
    rides["ride_tier"] = np.asarray(["economy", "comfort", "premium"], dtype=object)[np.digitize(score, cuts)]
    batch = WORK / "ride_tiers.parquet"
    rides.to_parquet(batch, index=False)
    return int(land_batch(batch, "ride_tiers", offline_dir=offline)["rows"])


def reproduced(model: str, specs_dir: Path) -> dict[str, Any]:
    started = time.monotonic()
    outcome = reproduce(model, "1", mlflow_hook=MLflowHook(), feast_hook=FeastHook(), specs_dir=specs_dir)
    return {"status": outcome.status, "reason": outcome.reason, "rows": outcome.rows,
            "max_abs_diff": outcome.max_abs_diff, "seconds": round(time.monotonic() - started, 1)}


results: dict[str, Any] = {}
shipped = sorted(config.models_dir().glob("*.yaml"))
results["regression"] = {"first": run("ride_duration")}
os.environ["MLOPS_MODELS_DIR"] = str(specs_copy("models_fewer_iterations", shipped, ("max_iter: 100", "max_iter: 15")))
results["regression"]["second"] = run("ride_duration")
results["regression"]["registry"] = registry("ride_duration")
results["regression"]["reproduced"] = reproduced("ride_duration", config.project_dir() / "include" / "models")

expectations = WORK / "expectations"
shutil.copytree(config.project_dir() / "include" / "expectations", expectations)
shutil.copy(TASK_SPECS / "ride_tier_training.json", expectations)
os.environ["MLOPS_EXPECTATIONS_DIR"] = str(expectations)
results["multiclass"] = {"landed": land_ride_tiers()}
first_specs = specs_copy("tier_models", [TASK_SPECS / "ride_tier.yaml"])
os.environ["MLOPS_MODELS_DIR"] = str(first_specs)
results["multiclass"]["first"] = run("ride_tier")
os.environ["MLOPS_MODELS_DIR"] = str(specs_copy("tier_models_smoother", [TASK_SPECS / "ride_tier.yaml"],
                                                ("smoothing: 0.001", "smoothing: 0.5")))
results["multiclass"]["second"] = run("ride_tier")
results["multiclass"]["registry"] = registry("ride_tier")
results["multiclass"]["reproduced"] = reproduced("ride_tier", first_specs)
print("RESULT " + json.dumps(results, default=str))
