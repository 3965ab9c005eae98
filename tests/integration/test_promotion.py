"""Promotion, rollback and approval decisions against a real SQLite MLflow registry.

Operators run through execute() with the context Airflow would give them; "clear and re-run" is the
same execute() again with the same dag/run/task identity.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from airflow_mlops.core import audit, lease
from airflow_mlops.dags.assets import champion_asset
from airflow_mlops.exceptions import PromotionConflict, RegistryError, StoreUnavailable
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.operators.approval import MLflowApproveModelOperator
from airflow_mlops.operators.promotion import MLflowPromoteModelOperator, MLflowRollbackModelOperator
from airflow_mlops.operators.registry import MLflowRegisterModelOperator

pytestmark = pytest.mark.integration

MODEL = "ride_completion"


def context(run_id: str = "manual__1", task_id: str = "promote", user: str | None = "alice") -> dict[str, Any]:
    dag_id = f"{MODEL}__train"
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, try_number=1, run_id=run_id)
    dag_run = SimpleNamespace(dag_id=dag_id, run_id=run_id, run_type="manual", triggering_user_name=user)
    return {"ti": ti, "dag_run": dag_run, "run_id": run_id, "outlet_events": defaultdict(SimpleNamespace),
            "triggering_asset_events": {}}


@pytest.fixture
def versions(mlops_home: Path, migrated_db: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Three registered versions of a tiny real sklearn model; v3 holds alias challenger."""
    import mlflow
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    (mlops_home / "mlflow").mkdir()
    shutil.copy(migrated_db, mlops_home / "mlflow" / "mlflow.db")
    hook = MLflowHook()
    experiment = hook.experiment_id(MODEL)
    x = np.random.default_rng(1).normal(size=(60, 2))
    y = (x[:, 0] > 0).astype(int)
    made = []
    with hook.activated():
        for seed in range(3):
            with mlflow.start_run(experiment_id=experiment) as run:
                info = mlflow.sklearn.log_model(LogisticRegression(random_state=seed).fit(x, y), name="model",
                                                serialization_format="cloudpickle", pip_requirements=["scikit-learn"])
                mlflow.log_metrics({"roc_auc": 0.8 + seed / 100}, model_id=info.model_id)
            op = MLflowRegisterModelOperator(task_id="register", model_name=MODEL, run_id=run.info.run_id,
                                             model_uri=info.model_uri)
            made.append(op.execute(context(run_id=f"manual__{seed}", task_id="register"))["version"])
    return made


def promote(version: str, champion: str | None, ctx: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    evaluation = {"promote": True, "champion_version": champion, "summary": f"v{version} beats v{champion}",
                  "reasons": []}
    op = MLflowPromoteModelOperator(task_id="promote", model_name=MODEL, version=version, evaluation=evaluation,
                                    outlets=[champion_asset(MODEL)], **kw)
    return op.execute(ctx or context())


def client() -> Any:
    return MLflowHook().get_conn()


def champion() -> str | None:
    from airflow_mlops.hooks.mlflow_registry import ModelRegistry

    return ModelRegistry(client(), MODEL).alias_version("champion")


def history() -> list[audit.AuditEvent]:
    return audit.history(client().get_registered_model(MODEL).tags)


def test_first_promotion_moves_champion_audits_and_annotates_the_asset_event(versions: list[str]) -> None:
    ctx = context()
    result = promote("3", None, ctx)
    assert champion() == "3" and result["previous"] is None and result["audit_seq"] == 1
    [event] = history()
    assert (event.action, event.version, event.actor, event.dag_id, event.run_id) == (
        "promote", "3", "alice", f"{MODEL}__train", "manual__1")
    tags = client().get_model_version(MODEL, "3").tags
    assert tags[audit.TAG_WAS_CHAMPION] == "true" and tags[audit.TAG_PROMOTED_BY] == "alice"
    assert tags[audit.TAG_PREVIOUS_CHAMPION] == "none" and "beats" in tags[audit.TAG_PROMOTION_REASON]
    extra = ctx["outlet_events"][champion_asset(MODEL)].extra
    assert extra["version"] == "3" and extra["metrics"]["roc_auc"] == pytest.approx(0.82)
    assert not lease.claims(client().get_registered_model(MODEL).tags), "lease released"


def test_clearing_and_rerunning_the_promotion_repeats_nothing(versions: list[str]) -> None:
    first = promote("3", None)
    again = promote("3", None)  # same dag/run/task identity: a cleared task
    assert again["audit_seq"] == first["audit_seq"] and len(history()) == 1 and champion() == "3"


def test_promotion_records_the_previous_champion_and_demotes_it(versions: list[str]) -> None:
    promote("3", None)
    client().set_registered_model_alias(MODEL, "challenger", "2")
    result = promote("2", "3", context(run_id="manual__2"))
    assert champion() == "2" and result["previous"] == "3"
    assert audit.TAG_DEMOTED_AT in client().get_model_version(MODEL, "3").tags
    assert [e.version for e in history()] == ["3", "2"]


def test_a_retry_after_a_try_died_between_alias_move_and_audit_completes_the_trail(versions: list[str]) -> None:
    client().set_registered_model_alias(MODEL, "champion", "3")  # the earlier try got this far
    result = promote("3", None)
    assert champion() == "3" and result["previous"] is None
    assert [(e.action, e.version, e.previous) for e in history()] == [("promote", "3", None)]


def test_a_champion_moved_since_evaluation_fails_cleanly(versions: list[str]) -> None:
    promote("3", None)
    client().set_registered_model_alias(MODEL, "challenger", "2")
    with pytest.raises(PromotionConflict, match="champion moved from vNone .* to v3"):
        promote("2", None, context(run_id="manual__stale"))
    assert champion() == "3" and len(history()) == 1


def test_a_challenger_replaced_since_evaluation_is_not_promoted(versions: list[str]) -> None:
    with pytest.raises(PromotionConflict, match="challenger now points at v3, not the evaluated v2"):
        promote("2", None)
    assert champion() is None and history() == []


def test_a_not_better_challenger_is_skipped_with_the_reason_tagged(versions: list[str]) -> None:
    op = MLflowPromoteModelOperator(task_id="promote", model_name=MODEL, version="3",
                                    evaluation={"promote": False, "reasons": ["roc_auc gain +0.0000 is not above 0"]})
    with pytest.raises(AirflowSkipException, match="stays challenger: roc_auc gain"):
        op.execute(context())
    tags = client().get_model_version(MODEL, "3").tags
    assert tags[audit.TAG_DECISION] == "not_promoted" and "gain" in tags[audit.TAG_DECISION_REASON]
    assert champion() is None


# (request, reply) seconds of each racer's registered-model tag writes; the old lease settled 1 s
RACES = {"no latency": ((0, 0), (0, 0)), "both claims take 2 s": ((2, 0), (2, 0)),
         "one claim arrives 2 s late": ((0, 0), (2, 0)), "one reply comes 2 s late": ((0, 2), (0, 0))}


@pytest.mark.parametrize("latency", RACES.values(), ids=list(RACES))
def test_concurrent_promotions_of_the_same_model_let_exactly_one_through(
        versions: list[str], latency: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from support.slow_client import SlowClient

    real = MLflowHook.get_conn
    slow = {f"racer{i}": delays for i, delays in enumerate(latency)}  # other threads: no latency
    monkeypatch.setattr(MLflowHook, "get_conn", lambda self: SlowClient(
        real(self), *slow.get(threading.current_thread().name, (0, 0))))
    outcomes: dict[str, Any] = {}
    start = threading.Barrier(2, timeout=30)

    def attempt(name: str) -> None:
        start.wait()
        try:
            outcomes[name] = promote("3", None, context(run_id=name))
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test inspects
            outcomes[name] = exc

    threads = [threading.Thread(target=attempt, args=(f"manual__racer{i}",), name=f"racer{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    errors = [o for o in outcomes.values() if isinstance(o, Exception)]
    wins = [o for o in outcomes.values() if isinstance(o, dict)]
    assert len(wins) == 1 and len(errors) == 1, outcomes
    assert isinstance(errors[0], PromotionConflict), repr(errors[0])
    assert champion() == "3" and len(history()) == 1
    assert not lease.claims(client().get_registered_model(MODEL).tags), "no claim left behind"


def test_an_abandoned_lease_is_taken_over(versions: list[str]) -> None:
    dead = datetime.now(UTC) - lease.TTL - timedelta(seconds=1)
    key = lease.claim_key(dead, "deadbeef0000")
    client().set_registered_model_tag(MODEL, key, lease.claim_value("other/run/task/x", dead))
    assert promote("3", None)["version"] == "3"
    assert not lease.claims(client().get_registered_model(MODEL).tags), "the abandoned claim was removed"


def test_a_live_lease_of_another_run_blocks_the_promotion(versions: list[str]) -> None:
    key = lease.claim_key(datetime.now(UTC), "cafe00000000")
    client().set_registered_model_tag(MODEL, key, lease.claim_value("other_dag/run/task/x"))
    with pytest.raises(PromotionConflict, match=rf"other_dag/run/task/x.*re-run this task.*{key}"):
        promote("3", None)
    assert champion() is None
    assert [c.key for c in lease.claims(client().get_registered_model(MODEL).tags)] == [key], "ours withdrawn"


def rollback(target: str, reason: str = "v2 misroutes airport rides", run_id: str = "manual__rb") -> dict[str, Any]:
    op = MLflowRollbackModelOperator(task_id="rollback", model_name=MODEL, target=target, reason=reason,
                                     outlets=[champion_asset(MODEL)])
    return op.execute(context(run_id=run_id, task_id="rollback", user="bob"))


def test_rollback_to_previous_restores_the_former_champion(versions: list[str]) -> None:
    promote("3", None)
    client().set_registered_model_alias(MODEL, "challenger", "2")
    promote("2", "3", context(run_id="manual__2"))
    result = rollback("previous")
    assert champion() == "3" and result["previous"] == "2" and result["action"] == "rollback"
    last = history()[-1]
    assert (last.action, last.version, last.actor) == ("rollback", "3", "bob")
    assert last.reason == "v2 misroutes airport rides"
    assert rollback("previous")["audit_seq"] == last.seq, "a cleared rollback task repeats nothing"


@pytest.mark.parametrize(("target", "reason", "message"), [
    ("1", "why not", "v1 was never champion, so rollback refuses it"),
    ("99", "typo", r"has no version '99'; existing versions: \[1, 2, 3\]"),
    ("latest", "bad", "use a version number like 3, or 'previous'"),
    ("previous", "first", "has no previous champion"),
    ("3", "", "needs a reason"),
    ("3", "noop", "already champion"),
])
def test_rollback_refuses_bad_targets_and_moves_nothing(versions: list[str], target: str, reason: str,
                                                        message: str) -> None:
    promote("3", None)
    with pytest.raises(RegistryError, match=message):
        rollback(target, reason)
    assert champion() == "3" and len(history()) == 1


def test_an_unreachable_registry_fails_fast_and_moves_nothing(versions: list[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(StoreUnavailable, match="127.0.0.1:9"):
        promote("3", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert champion() is None


def test_a_rejection_is_recorded_with_who_and_why(versions: list[str]) -> None:
    op = MLflowApproveModelOperator(task_id="approve", model_name=MODEL, version="3")
    event = {"chosen_options": ["Reject"], "params_input": {"reason": "slice night is worse"},
             "responded_by_user": {"id": "carol", "name": "carol"}, "responded_at": datetime.now(UTC)}
    op.execute_complete(context(task_id="approve"), event)
    tags = client().get_model_version(MODEL, "3").tags
    assert (tags[audit.TAG_DECISION], tags[audit.TAG_DECIDED_BY]) == ("rejected", "carol")
    assert tags[audit.TAG_DECISION_REASON] == "slice night is worse"
    [entry] = history()
    assert (entry.action, entry.version, entry.actor) == ("reject", "3", "carol")
    assert champion() is None


def test_rollback_keeps_the_original_promotion_and_appends_the_history(versions: list[str]) -> None:
    promote("3", None)  # v3 promoted by alice (seq 1)
    original = client().get_model_version(MODEL, "3").tags
    client().set_registered_model_alias(MODEL, "challenger", "2")
    promote("2", "3", context(run_id="manual__2", user="carol"))  # seq 2: v3 demoted
    rollback("previous")  # seq 3: back to v3, by bob, with bob's reason
    tags = client().get_model_version(MODEL, "3").tags
    for key in (audit.TAG_PROMOTED_AT, audit.TAG_PROMOTED_BY, audit.TAG_PROMOTION_REASON, audit.TAG_PREVIOUS_CHAMPION):
        assert tags[key] == original[key], f"{key} of the first promotion was overwritten by the rollback"
    assert tags[audit.TAG_PROMOTED_BY] == "alice" and "beats" in tags[audit.TAG_PROMOTION_REASON]
    entries = {key: json.loads(value) for key, value in tags.items()
               if key.startswith(audit.CHAMPION_HISTORY_PREFIX)}
    assert [(e["role"], e["action"], e["actor"], e["other"]) for _, e in sorted(entries.items())] == [
        ("champion", "promote", "alice", None), ("demoted", "promote", "carol", "2"),
        ("champion", "rollback", "bob", "2")]
    assert entries[audit.champion_history_tag(3)]["reason"] == "v2 misroutes airport rides"
    v2 = client().get_model_version(MODEL, "2").tags
    assert v2[audit.TAG_PROMOTED_BY] == "carol" and audit.TAG_DEMOTED_AT in v2
    assert json.loads(v2[audit.champion_history_tag(3)])["role"] == "demoted"
    assert [(e.action, e.version) for e in history()] == [("promote", "3"), ("promote", "2"), ("rollback", "3")]


REPEAT = {"name": MODEL, "version": "3", "run_id": "r-again", "alias": "challenger", "created": False,
          "alias_moved": False, "repeat": True, "fingerprint": "f" * 64,
          "reason": f"{MODEL} v3 (run r-1) was trained from the same training set ...: fingerprint {'f' * 64}"}


def test_a_repeat_skips_card_approval_promotion_and_deploy_and_writes_nothing(versions: list[str]) -> None:
    from airflow_mlops.operators.deployment import DeployModelOperator
    from airflow_mlops.operators.model_card import MLflowModelCardOperator
    from support.registry_dump import registry_dump

    promote("3", None)
    before = registry_dump(client(), MODEL)
    not_better = {"promote": False, "champion_version": "3", "reasons": ["roc_auc gain +0.0000 is not above 0"]}
    tasks = {
        "model card": MLflowModelCardOperator(task_id="model_card", model_name=MODEL, registered=REPEAT,
                                              training_set={"path": "x", "sha256": "0" * 64}, model_info={}),
        # without the repeat this would tag v3 not_promoted (a registry write)
        "promotion": MLflowPromoteModelOperator(task_id="promote", model_name=MODEL, version="3",
                                                evaluation=not_better, registered=REPEAT),
        "approval": MLflowApproveModelOperator(task_id="approve", model_name=MODEL, version="3",
                                               evaluation=not_better, registered=REPEAT),
        "deploy": DeployModelOperator(task_id="deploy", model_name=MODEL, version="3", registered=REPEAT),
    }
    for what, task in tasks.items():
        with pytest.raises(AirflowSkipException) as skipped:
            task.execute(context(run_id="manual__again", task_id=task.task_id))
        message = str(skipped.value)
        assert message.startswith(f"{what} skipped: {MODEL} v3") and "f" * 64 in message, message
    # the register result as JSON text (a Jinja-rendered XCom) is read the same way
    with pytest.raises(AirflowSkipException, match="promotion skipped"):
        MLflowPromoteModelOperator(task_id="promote", model_name=MODEL, version="3", evaluation=not_better,
                                   registered=json.dumps(REPEAT)).execute(context(run_id="manual__again"))
    assert registry_dump(client(), MODEL) == before
