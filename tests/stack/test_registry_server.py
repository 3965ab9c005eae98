"""The whole registry story against a real `mlflow server` whose backend store is PostgreSQL.

train -> evaluate -> register -> model card -> promote, a not-better retrain, cleared tasks, rollback,
a concurrent promotion and a stopped server. Operators run through execute() with the context Airflow
would give them and reach the server only through the `mlflow_default` connection (an http URI), so
artifacts travel through the server's proxy (`mlflow-artifacts:/`).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import AirflowSkipException

from airflow_mlops.core import audit, lease
from airflow_mlops.dags.assets import champion_asset
from airflow_mlops.exceptions import PromotionConflict, RegistryError, StoreUnavailable
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.hooks.mlflow_registry import ModelRegistry
from airflow_mlops.operators.evaluation import EvaluateModelOperator
from airflow_mlops.operators.model_card import TAG_MODEL_CARD, MLflowModelCardOperator
from airflow_mlops.operators.promotion import MLflowPromoteModelOperator, MLflowRollbackModelOperator
from airflow_mlops.operators.registry import MLflowRegisterModelOperator
from airflow_mlops.operators.training import SklearnTrainModelOperator
from support.connects import connect_attempts
from support.mlflow_server import MLflowServer
from support.registry_dump import registry_dump
from support.training_sets import demo_as_of_join, write_training_set

pytestmark = pytest.mark.stack

MODEL = "ride_completion_server"
SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "include/models/ride_completion.yaml").read_text())
EVALUATION = {**SPEC["evaluation"], "thresholds": {"roc_auc": {"min": 0.55}}, "bootstrap_samples": 200}
MODEL_INFO = {k: SPEC[k] for k in ("description", "owner", "intended_use", "limitations", "tags")}
HGB = "sklearn.ensemble.HistGradientBoostingClassifier"
SPLIT = {"method": "time", "test_size": 0.2}


@pytest.fixture
def server(mlflow_server: MLflowServer, mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> MLflowServer:
    """The operators' default connection points at the server; nothing else tells MLflow where to go."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_server.url}))
    return mlflow_server


@pytest.fixture
def record(server: MLflowServer, small_demo: Any, mlops_home: Path) -> dict[str, Any]:
    """A point-in-time training set like the Feast task writes, plus its lineage dict."""
    frame = demo_as_of_join(small_demo)
    return write_training_set(frame, mlops_home / "training_sets" / "ride_completion.parquet",
                              feature_service="ride_completion_v1",
                              feature_views={"driver_hourly_stats": ["conv_rate"]}, columns=list(frame.columns))


def context(run_id: str, task_id: str, user: str | None = "alice", model: str = MODEL) -> dict[str, Any]:
    dag_id = f"{model}__train"
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, try_number=1, run_id=run_id)
    dag_run = SimpleNamespace(dag_id=dag_id, run_id=run_id, run_type="manual", triggering_user_name=user)
    return {"ti": ti, "dag_run": dag_run, "run_id": run_id, "logical_date": None,
            "outlet_events": defaultdict(SimpleNamespace), "triggering_asset_events": {}}


def train(record: dict[str, Any], run_id: str, model: str = MODEL, spec_sha256: str | None = None) -> dict[str, Any]:
    return SklearnTrainModelOperator(
        task_id="train", model_name=model, training_set=record, estimator=HGB,
        params={"max_iter": 15, "max_leaf_nodes": 8}, split=SPLIT, seed=7, label="completed",
        exclude_columns=["driver_id"], spec_sha256=spec_sha256,
    ).execute(context(run_id, "train", model=model))


def evaluate(record: dict[str, Any], trained: dict[str, Any], run_id: str) -> dict[str, Any]:
    return EvaluateModelOperator(
        task_id="evaluate", model_name=MODEL, training_set=record, challenger=trained, evaluation=EVALUATION,
        label="completed", split=SPLIT, seed=7,
    ).execute(context(run_id, "evaluate"))


def register(trained: dict[str, Any], evaluation: dict[str, Any] | None, run_id: str,
             model: str = MODEL) -> dict[str, Any]:
    return MLflowRegisterModelOperator(
        task_id="register", model_name=model, run_id=trained["run_id"], model_uri=trained["model_uri"],
        evaluation=evaluation, description=SPEC["description"],
    ).execute(context(run_id, "register", model=model))


def promote(version: str, evaluation: dict[str, Any], run_id: str, model: str = MODEL) -> dict[str, Any]:
    return MLflowPromoteModelOperator(
        task_id="promote", model_name=model, version=version, evaluation=evaluation, outlets=[champion_asset(model)],
    ).execute(context(run_id, "promote", model=model))


def rollback(target: str, run_id: str) -> dict[str, Any]:
    return MLflowRollbackModelOperator(
        task_id="rollback", model_name=MODEL, target=target, reason="v2 misroutes airport rides",
    ).execute(context(run_id, "rollback", user="bob"))


def registry(model: str = MODEL) -> ModelRegistry:
    return ModelRegistry(MLflowHook().get_conn(), model)


def aliases(model: str = MODEL) -> tuple[str | None, str | None]:
    return registry(model).alias_version("champion"), registry(model).alias_version("challenger")


def actions(model: str = MODEL) -> list[tuple[str, str]]:
    return [(event.action, event.version) for event in registry(model).history()]


def download_text(run_id: str, path: str, tmp_path: Path) -> str:
    return Path(MLflowHook().get_conn().download_artifacts(run_id, path, str(tmp_path))).read_text()


def first_champion(record: dict[str, Any], tmp_path: Path, server: MLflowServer) -> dict[str, Any]:
    """Step 1: the full chain on an empty registry makes v1 champion, with its card and report."""
    trained = train(record, "manual__1")
    evaluation = evaluate(record, trained, "manual__1")
    assert evaluation["promote"] is True and evaluation["champion_version"] is None, evaluation
    assert evaluation["report_uri"].startswith("mlflow-artifacts:/"), evaluation["report_uri"]
    registered = register(trained, evaluation, "manual__1")
    assert (registered["version"], registered["created"]) == ("1", True)
    card = MLflowModelCardOperator(
        task_id="model_card", model_name=MODEL, registered=registered, training_set=record, model_info=MODEL_INFO
    ).execute(context("manual__1", "model_card"))
    assert card["html_uri"].startswith("mlflow-artifacts:/")
    ctx = context("manual__1", "promote")
    promoted = MLflowPromoteModelOperator(task_id="promote", model_name=MODEL, version="1", evaluation=evaluation,
                                          outlets=[champion_asset(MODEL)]).execute(ctx)
    assert (promoted["version"], promoted["previous"], promoted["audit_seq"]) == ("1", None, 1)
    assert ctx["outlet_events"][champion_asset(MODEL)].extra["version"] == "1"
    assert aliases() == ("1", "1")
    [event] = registry().history()
    assert (event.action, event.version, event.actor, event.run_id) == ("promote", "1", "alice", "manual__1")

    version = registry().version("1")
    assert version.tags[TAG_MODEL_CARD] == card["html_uri"] and version.tags[audit.TAG_WAS_CHAMPION] == "true"
    assert version.tags["airflow_mlops.evaluation.verdict"] == "promote"
    assert MODEL in download_text(trained["run_id"], "model_card/model_card.html", tmp_path / "card")
    report = json.loads(download_text(trained["run_id"], "evaluation/report.json", tmp_path / "report"))
    assert report["verdict"]["promote"] is True
    files = {p.name for p in server.artifacts.rglob("*")}  # proxied uploads land in --artifacts-destination
    assert {"model_card.html", "report.html", "report.json", "MLmodel"} <= files
    return {"trained": trained, "evaluation": evaluation, "registered": registered}


def test_train_evaluate_register_card_promote_retrain_clear_and_rollback(
    server: MLflowServer, record: dict[str, Any], tmp_path: Path
) -> None:
    first = first_champion(record, tmp_path, server)

    # Step 2a: the same data, spec, code and params again: a repeat of v1 found through the server's
    # tag-filtered version search (PostgreSQL behind it); nothing is written to the registry.
    before = registry_dump(MLflowHook().get_conn(), MODEL)
    same = train(record, "manual__same")
    repeat = register(same, evaluate(record, same, "manual__same"), "manual__same")
    assert (repeat["repeat"], repeat["version"], repeat["created"]) == (True, "1", False), repeat
    assert MLflowHook().get_conn().get_run(same["run_id"]).data.tags["airflow_mlops.repeat_of"] == "1"
    with pytest.raises(AirflowSkipException, match=f"promotion skipped: {MODEL} v1"):
        MLflowPromoteModelOperator(task_id="promote", model_name=MODEL, version="1", evaluation=first["evaluation"],
                                   registered=repeat).execute(context("manual__same", "promote"))
    assert registry_dump(MLflowHook().get_conn(), MODEL) == before

    # Step 2b: the same data and seed under a changed spec -> a new version; gain 0 -> not promoted; v2 stays
    # challenger.
    retrained = train(record, "manual__2", spec_sha256="2" * 64)
    second = evaluate(record, retrained, "manual__2")
    assert (second["promote"], second["champion_version"], second["gain"]) == (False, "1", 0.0), second
    assert register(retrained, second, "manual__2")["version"] == "2"
    with pytest.raises(AirflowSkipException, match=f"{MODEL} v2 stays challenger"):
        promote("2", second, "manual__2")
    assert aliases() == ("1", "2") and registry().version("2").tags[audit.TAG_DECISION] == "not_promoted"

    # Step 3: clearing step 1's register and promote repeats nothing.
    again = register(first["trained"], first["evaluation"], "manual__1")
    assert (again["version"], again["created"], again["alias_moved"]) == ("1", False, False)
    assert aliases() == ("1", "2"), "a cleared old register task leaves the newer challenger alone"
    assert promote("1", first["evaluation"], "manual__1")["audit_seq"] == 1
    client = MLflowHook().get_conn()
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 2 and actions() == [("promote", "1")]

    # Step 4: rollback to the champion itself is refused; promote v2 by hand, then roll back to v1.
    with pytest.raises(RegistryError, match="already champion"):
        rollback("1", "manual__rb0")
    by_hand = {"promote": True, "champion_version": "1", "summary": "v2 approved by hand", "reasons": []}
    assert promote("2", by_hand, "manual__3")["previous"] == "1"
    assert aliases() == ("2", "2")
    result = rollback("previous", "manual__rb1")
    assert (result["version"], result["previous"], result["action"]) == ("1", "2", "rollback")
    assert aliases()[0] == "1"
    assert actions() == [("promote", "1"), ("promote", "2"), ("rollback", "1")]
    assert registry().history()[-1].actor == "bob"
    assert not lease.claims(registry().tags()), "every lease was released"


def test_concurrent_promotions_of_one_version_let_exactly_one_through(
    server: MLflowServer, record: dict[str, Any]
) -> None:
    model = "ride_completion_server_race"
    registered = register(train(record, "manual__race", model=model), None, "manual__race", model=model)
    evaluation = {"promote": True, "champion_version": None, "summary": "first model", "reasons": []}
    outcomes: dict[str, Any] = {}

    def attempt(run_id: str) -> None:
        try:
            outcomes[run_id] = promote(registered["version"], evaluation, run_id, model=model)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test inspects
            outcomes[run_id] = exc

    threads = [threading.Thread(target=attempt, args=(f"manual__racer{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    wins = [o for o in outcomes.values() if isinstance(o, dict)]
    errors = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(wins) == 1 and len(errors) == 1, outcomes
    assert isinstance(errors[0], PromotionConflict), repr(errors[0])
    assert aliases(model)[0] == "1" and actions(model) == [("promote", "1")]


def test_a_stopped_server_fails_fast_naming_the_url_and_state_survives_a_restart(server: MLflowServer) -> None:
    client = MLflowHook().get_conn()
    client.create_registered_model("server_restart_probe", tags={"kept": "yes"})
    server.stop()
    evaluation = {"promote": True, "champion_version": None, "summary": "s", "reasons": []}
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    with connect_attempts(port) as attempts, pytest.raises(StoreUnavailable) as caught:
        promote("1", evaluation, "manual__down", model="server_restart_probe")
    assert len(attempts) == 1, f"fails at the first refused connect, not after MLflow's HTTP retries: {attempts}"
    assert server.url in str(caught.value) and "MLflow tracking server" in str(caught.value)

    server.start()  # same port, same database: the registry is in PostgreSQL, not in the server
    assert client.get_registered_model("server_restart_probe").tags == {"kept": "yes"}
