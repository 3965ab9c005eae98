"""A registry outage between register and promote: every crash point converges on a rerun.

The store is a real SQLite MLflow tracking/registry store with really trained runs; the fault is injected
at the client boundary: `MLflowHook.get_conn` hands the operators a client whose calls go through to the
real store until the fault point, where it raises what MLflow raises when its database is unreachable
(`MlflowException` TEMPORARILY_UNAVAILABLE from `sqlalchemy.exc.OperationalError`; the REST store raises an
`MlflowException` too). From then on every call fails: the connection is gone for the rest of that try,
including the `finally` that would release the promotion lease. A fault point is a registry write and a
phase: "before" (the request never reaches the store) or "after" (it lands, the reply is lost). Together
the points cover every write register and promote make (`test_the_fault_points_are_every_registry_write`),
so every store state a crash can leave is tried.

Right after the fault, before any rerun, the registry must be safe: every version carries its lineage and
evaluation tags, `challenger` points at an evaluated version and `champion` at one whose verdict was
`promote`. The rerun is the same task again (same dag/run/task, next try), as Airflow's retry or "clear"
does; afterwards the registry equals, tag for tag (times and try numbers aside), the one a run without an
outage leaves: one version per MLflow run, one audit entry per champion move, promotion tags complete, no
lease left behind. A whole new DAG run on the same data after a run gave up is covered as well: it
registers its own version when the earlier registration never finished, and is a repeat (nothing new to
promote) when it did.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_mlops.core import audit, lease, lineage
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.operators.promotion import MLflowPromoteModelOperator
from airflow_mlops.operators.registry import MLflowRegisterModelOperator
from airflow_mlops.operators.training import SklearnTrainModelOperator
from support.registry_dump import registry_dump
from support.training_sets import demo_training_set

pytestmark = pytest.mark.integration

MODEL = "ride_completion"
DAG_ID = f"{MODEL}__train"
RUN_1 = "scheduled__2026-10-01T00:00:00+00:00"  # trained and promoted v1 before the outage
RUN_2 = "manual__2026-10-04T00:00:00+00:00"  # the run hit by the outage: v2, evaluated against v1
RUN_3 = "manual__2026-10-05T00:00:00+00:00"  # a new DAG run on the same data as RUN_2 (same fingerprint)
VERDICT = "airflow_mlops.evaluation.verdict"
LINEAGE = (lineage.TAG_TRAINING_SET_SHA256, lineage.TAG_FINGERPRINT, lineage.TAG_SOURCE_RUN_ID,
           lineage.TAG_GIT_COMMIT, lineage.TAG_DAG_ID, lineage.TAG_RUN_ID)
WRITES = frozenset({
    "create_registered_model", "create_model_version", "update_registered_model", "update_model_version",
    "set_registered_model_tag", "delete_registered_model_tag", "set_model_version_tag",
    "delete_model_version_tag", "set_registered_model_alias", "delete_registered_model_alias", "set_tag",
})


def evaluation(champion: str | None, value: float) -> dict[str, Any]:
    return {"promote": True, "champion_version": champion, "primary_metric": "roc_auc", "challenger_value": value,
            "gain": 0.01, "ci": [0.002, 0.02], "reasons": [], "summary": f"beats v{champion}"}


RETRAIN = {"reason": "manual: run by alice", "trigger": "manual", "events": []}


def context(run_id: str, task_id: str, try_number: int = 1) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id=DAG_ID, task_id=task_id, try_number=try_number, run_id=run_id)
    dag_run = SimpleNamespace(dag_id=DAG_ID, run_id=run_id, run_type="manual", triggering_user_name="alice")
    return {"dag": SimpleNamespace(dag_id=DAG_ID), "ti": ti, "dag_run": dag_run, "run_id": run_id,
            "logical_date": None, "outlet_events": defaultdict(SimpleNamespace), "triggering_asset_events": {}}


def register(run: dict[str, Any], airflow_run: str, champion: str | None, try_number: int = 1) -> dict[str, Any]:
    op = MLflowRegisterModelOperator(task_id="register", model_name=MODEL, run_id=run["run_id"],
                                     model_uri=run["model_uri"], retrain=RETRAIN,
                                     evaluation=evaluation(champion, run["metrics"]["roc_auc"]))
    return op.execute(context(airflow_run, "register", try_number))


def promote(registered: dict[str, Any], airflow_run: str, champion: str | None, try_number: int = 1
            ) -> dict[str, Any]:
    op = MLflowPromoteModelOperator(task_id="promote", model_name=MODEL, version=registered["version"],
                                    evaluation=evaluation(champion, 0.8), registered=registered)
    return op.execute(context(airflow_run, "promote", try_number))


# ------------------------------------------------------------------------------------------- the fault
def outage_error(method: str) -> Exception:
    """What MLflow's SQL store raises when its database goes away (mlflow/store/db/utils.py)."""
    import sqlite3

    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    cause = sqlalchemy.exc.OperationalError(f"-- {method}", {}, sqlite3.OperationalError("disk I/O error"))
    error = MlflowException(message=cause, error_code=TEMPORARILY_UNAVAILABLE)
    error.__cause__ = cause
    return error


@dataclass
class Fault:
    """The registry connection dies at the first call of `method` whose arguments `match`."""

    name: str
    step: str  # "register" | "promote"
    method: str
    phase: str  # "before": the request never arrives; "after": it lands, the reply is lost
    match: Callable[[tuple[Any, ...]], bool] = lambda args: True
    fired: bool = field(default=False, init=False)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list, init=False)

    @property
    def id(self) -> str:
        return f"{self.step}: {self.name}"

    def hits(self, method: str, args: tuple[Any, ...]) -> bool:
        return method == self.method and self.match(args)


class FlakyClient:
    """A real MlflowClient whose connection dies at `fault` and stays dead."""

    def __init__(self, client: Any, fault: Fault) -> None:
        self._client = client
        self._fault = fault

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        fault = self._fault

        def call(*args: Any, **kwargs: Any) -> Any:
            fault.calls.append((name, args))
            if fault.fired:
                raise outage_error(name)
            hit = fault.hits(name, args)
            if hit and fault.phase == "before":
                fault.fired = True
                raise outage_error(name)
            result = attr(*args, **kwargs)
            if hit:
                fault.fired = True
                raise outage_error(name)
            return result

        return call


@pytest.fixture
def inject(monkeypatch: pytest.MonkeyPatch) -> Callable[[Fault | None], None]:
    """inject(fault) makes every hook hand out a FlakyClient; inject(None) restores the connection."""
    real = MLflowHook.get_conn

    def install(fault: Fault | None) -> None:
        if fault is None:
            monkeypatch.setattr(MLflowHook, "get_conn", real)
        else:
            monkeypatch.setattr(MLflowHook, "get_conn", lambda self: FlakyClient(real(self), fault))

    return install


def key_is(*keys: str) -> Callable[[tuple[Any, ...]], bool]:
    """set/delete_*_tag(name, [version,] key, ...): the tag key is one of `keys` (prefixes end with '.')."""
    def match(args: tuple[Any, ...]) -> bool:
        found = [a for a in args[1:3] if isinstance(a, str) and a.startswith("airflow_mlops.")]
        return bool(found) and any(found[0] == k or (k.endswith(".") and found[0].startswith(k)) for k in keys)
    return match


def version_tag(version: str, key: str) -> Callable[[tuple[Any, ...]], bool]:
    return lambda args: str(args[1]) == version and key_is(key)(args)


def alias_is(alias: str) -> Callable[[tuple[Any, ...]], bool]:
    return lambda args: args[1] == alias


HISTORY = audit.CHAMPION_HISTORY_PREFIX
# The promotion's version tags in the order they are written: v2 (new champion), then v1 (demoted).
MOVE_TAGS = [("2", audit.TAG_WAS_CHAMPION), ("2", HISTORY), ("2", audit.TAG_PROMOTED_BY),
             ("2", audit.TAG_PROMOTION_REASON), ("2", audit.TAG_PREVIOUS_CHAMPION), ("2", audit.TAG_PROMOTED_AT),
             ("1", audit.TAG_DEMOTED_AT), ("1", HISTORY)]
FAULTS = [
    Fault("before create_model_version", "register", "create_model_version", "before"),
    Fault("create_model_version landed, reply lost", "register", "create_model_version", "after"),
    Fault("before the challenger move", "register", "set_registered_model_alias", "before", alias_is("challenger")),
    Fault("challenger moved, reply lost", "register", "set_registered_model_alias", "after", alias_is("challenger")),
    Fault("pending mark dropped, before the result", "register", "delete_model_version_tag", "after",
          key_is(lineage.TAG_REGISTRATION)),
    Fault("before the lease claim", "promote", "set_registered_model_tag", "before", key_is(lease.TAG_PREFIX)),
    Fault("lease claimed, reply lost", "promote", "set_registered_model_tag", "after", key_is(lease.TAG_PREFIX)),
    Fault("before the champion move", "promote", "set_registered_model_alias", "before", alias_is("champion")),
    Fault("champion moved, before the audit entry", "promote", "set_registered_model_alias", "after",
          alias_is("champion")),
    Fault("audit entry written, before the version tags", "promote", "set_registered_model_tag", "after",
          key_is(audit.AUDIT_TAG_PREFIX)),
    *[Fault(f"v{version} tag {key.removeprefix('airflow_mlops.')}* written, reply lost", "promote",
            "set_model_version_tag", "after", version_tag(version, key)) for version, key in MOVE_TAGS],
    Fault("before the lease release", "promote", "delete_registered_model_tag", "before", key_is(lease.TAG_PREFIX)),
    Fault("lease released, before the result", "promote", "delete_registered_model_tag", "after",
          key_is(lease.TAG_PREFIX)),
]


# ------------------------------------------------------------------------------------------- the world
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, small_demo: Any) -> dict[str, Any]:
    """A registry where v1 (RUN_1) is champion and challenger, plus the trained runs of RUN_2 and RUN_3
    (same training set, params, code: the same fingerprint), and the registry a clean RUN_2 leaves."""
    home = tmp_path_factory.mktemp("outage_home")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
            patch.delenv(name, raising=False)
        patch.setenv("MLOPS_HOME", str(home))
        training_set = demo_training_set(small_demo, home / "training_sets")
        runs = {run: train(training_set, run, max_iter) for run, max_iter in
                ((RUN_1, 200), (RUN_2, 300), (RUN_3, 300))}
        client = MLflowHook().get_conn()
        fingerprints = [client.get_run(runs[r]["run_id"]).data.tags.get(lineage.TAG_FINGERPRINT) for r in runs]
        assert fingerprints[1] == fingerprints[2] != fingerprints[0] and fingerprints[0], "needs a git checkout"
        promote(register(runs[RUN_1], RUN_1, None), RUN_1, None)
        template = tmp_path_factory.mktemp("outage_template") / "mlflow.db"
        shutil.copy(home / "mlflow" / "mlflow.db", template)
        clean = clean_run(runs)
        reference = {"dump": normalized(registry_dump(client, MODEL)), **clean}
    return {"db": template, "runs": runs, "reference": reference}


def train(training_set: dict[str, Any], airflow_run: str, max_iter: int) -> dict[str, Any]:
    op = SklearnTrainModelOperator(
        task_id="train", model_name=MODEL, training_set=training_set,
        estimator="sklearn.linear_model.LogisticRegression", params={"max_iter": max_iter},
        preprocessing={"impute": "median", "scale": True}, split={"method": "time", "test_size": 0.2}, seed=7,
        label="completed", exclude_columns=["driver_id"])
    return op.execute(context(airflow_run, "train"))


def clean_run(runs: dict[str, Any]) -> dict[str, Any]:
    """RUN_2's register and promote without an outage, recording the registry writes they make."""
    recorder = Fault("none", "", "", "after", lambda args: False)
    real = MLflowHook.get_conn
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MLflowHook, "get_conn", lambda self: FlakyClient(real(self), recorder))
        registered = register(runs[RUN_2], RUN_2, "1")
        writes = {"register": [c for c in recorder.calls if c[0] in WRITES]}
        recorder.calls.clear()
        promoted = promote(registered, RUN_2, "1")
        writes["promote"] = [c for c in recorder.calls if c[0] in WRITES]
    return {"registered": registered, "promoted": promoted, "writes": writes}


@pytest.fixture
def registry(world: dict[str, Any], mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """This test's own copy of the world's registry (the trained runs' artifacts are shared, read only)."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    (mlops_home / "mlflow").mkdir()
    shutil.copy(world["db"], mlops_home / "mlflow" / "mlflow.db")
    return world


def client() -> Any:
    return MLflowHook().get_conn()


# ------------------------------------------------------------------------------------------- invariants
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?")


def normalized(dump: dict[str, Any]) -> dict[str, Any]:
    """A registry dump without what legitimately differs between two runs: times and try numbers."""
    def tags(values: dict[str, str]) -> dict[str, str]:
        return {k: STAMP.sub("<at>", v) for k, v in values.items() if k != lineage.TAG_TRY_NUMBER}

    versions = {v: {**{k: x for k, x in d.items() if k not in ("created", "updated")}, "tags": tags(d["tags"])}
                for v, d in dump["versions"].items()}
    return {**{k: x for k, x in dump.items() if k != "updated"}, "tags": tags(dump["tags"]), "versions": versions}


def assert_safe(dump: dict[str, Any]) -> None:
    """What must hold at any moment, outage or not."""
    for version, data in dump["versions"].items():
        missing = [key for key in (*LINEAGE, VERDICT) if not data["tags"].get(key)]
        assert not missing, f"v{version} exists without {missing}"
    by_run: dict[str, list[str]] = defaultdict(list)
    for version, data in dump["versions"].items():
        by_run[data["run_id"]].append(version)
    assert all(len(v) == 1 for v in by_run.values()), f"an MLflow run has two versions: {dict(by_run)}"
    aliases = dump["aliases"]
    assert "challenger" in aliases and "champion" in aliases
    assert dump["versions"][aliases["champion"]]["tags"][VERDICT] == "promote", "champion was not recommended"
    keys = [(e.action, e.version, e.dag_id, e.run_id) for e in audit.history(dump["tags"])]
    assert len(keys) == len(set(keys)), f"duplicated audit entries: {keys}"


def assert_converged(world: dict[str, Any], dump: dict[str, Any]) -> None:
    """Safe, and exactly the registry a run without an outage leaves (times and try numbers aside)."""
    assert_safe(dump)
    moves = [e.version for e in audit.history(dump["tags"]) if e.action in audit.ALIAS_MOVES]
    assert moves[-1] == dump["aliases"]["champion"], "the champion move has no audit entry"
    assert not lease.claims(dump["tags"]), f"a lease was left behind: {lease.claims(dump['tags'])}"
    reference = world["reference"]["dump"]
    got = normalized(dump)
    assert got == reference, json.dumps(diff(reference, got), indent=1, sort_keys=True)


def diff(want: Any, got: Any, path: str = "") -> dict[str, Any]:
    if isinstance(want, dict) and isinstance(got, dict):
        out: dict[str, Any] = {}
        for key in sorted(set(want) | set(got)):
            out.update(diff(want.get(key), got.get(key), f"{path}/{key}"))
        return out
    return {} if want == got else {path: {"want": want, "got": got}}


# ------------------------------------------------------------------------------------------- tests
def test_the_fault_points_are_every_registry_write(world: dict[str, Any]) -> None:
    """A crash leaves the store after the k-th write landed, for some k: each k must be some fault point's
    (an "after" point on write k or a "before" point on write k+1). A new write in register or promote
    fails this test until it gets its fault point."""
    for step, writes in world["reference"]["writes"].items():
        covered = set()
        for fault in (f for f in FAULTS if f.step == step):
            first = next((k for k, (method, args) in enumerate(writes) if fault.hits(method, args)), None)
            assert first is not None, f"{step}: fault point {fault.name!r} matches no write of {writes}"
            covered.add(first + 1 if fault.phase == "after" else first)
        missing = [f"after {writes[k - 1][0]}{writes[k - 1][1][1:3]}" if k else "before the first write"
                   for k in range(len(writes) + 1) if k not in covered]
        assert not missing, f"{step}: no fault point leaves the store {missing}"


def crash(fault: Fault, inject: Callable[[Fault | None], None], step: Callable[[], Any]) -> dict[str, Any]:
    """Run `step` with the registry dying at `fault`; the registry it leaves, checked safe."""
    from mlflow.exceptions import MlflowException

    inject(fault)
    with pytest.raises(MlflowException, match="OperationalError"):
        step()
    inject(None)
    assert fault.fired, f"the fault point was never reached: {fault.calls}"
    during = registry_dump(client(), MODEL)
    assert_safe(during)
    return during


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_a_retry_after_the_registry_died_converges(registry: dict[str, Any], fault: Fault,
                                                   inject: Callable[[Fault | None], None]) -> None:
    run = registry["runs"][RUN_2]
    registered = register(run, RUN_2, "1") if fault.step == "promote" else {}
    if fault.step == "register":
        during = crash(replace(fault), inject, lambda: register(run, RUN_2, "1"))
    else:
        during = crash(replace(fault), inject, lambda: promote(registered, RUN_2, "1"))
    if fault.step == "register":
        assert during["aliases"]["champion"] == "1"
        registered = register(run, RUN_2, "1", try_number=2)
        # `created` says whether this try made the version: only when the first died before it landed
        assert registered == {**registry["reference"]["registered"], "created": fault.name.startswith("before c")}
        promoted = promote(registered, RUN_2, "1")
    else:
        promoted = promote(registered, RUN_2, "1", try_number=2)
    assert promoted == registry["reference"]["promoted"]
    assert_converged(registry, registry_dump(client(), MODEL))


GAVE_UP_REGISTERING = [f for f in FAULTS if f.step == "register" and f.phase == "after" and "dropped" not in f.name]


@pytest.mark.parametrize("fault", GAVE_UP_REGISTERING, ids=[f.id for f in GAVE_UP_REGISTERING])
def test_a_new_dag_run_registers_its_own_version_when_the_last_one_gave_up_registering(
        registry: dict[str, Any], fault: Fault, inject: Callable[[Fault | None], None]) -> None:
    """RUN_2's register died after its version landed and was never retried; RUN_3 trains on the same data."""
    runs = registry["runs"]
    crash(replace(fault), inject, lambda: register(runs[RUN_2], RUN_2, "1"))
    registered = register(runs[RUN_3], RUN_3, "1")
    assert (registered["version"], registered["created"], registered["repeat"]) == ("3", True, False), \
        "an unfinished registration is no fingerprint twin"
    promote(registered, RUN_3, "1")
    dump = registry_dump(client(), MODEL)
    assert_safe(dump)
    assert dump["aliases"] == {"champion": "3", "challenger": "3"}
    assert dump["versions"]["2"]["tags"][lineage.TAG_REGISTRATION] == lineage.REGISTRATION_PENDING
    assert lineage.TAG_REGISTRATION not in dump["versions"]["3"]["tags"]
    # Clearing RUN_2's register much later finishes its registration but takes no alias from the newer v3.
    late = register(runs[RUN_2], RUN_2, "1", try_number=2)
    assert (late["version"], late["created"], late["alias_moved"]) == ("2", False, False)
    dump = registry_dump(client(), MODEL)
    assert dump["aliases"] == {"champion": "3", "challenger": "3"}
    assert lineage.TAG_REGISTRATION not in dump["versions"]["2"]["tags"]


GAVE_UP_PROMOTING = [f for f in FAULTS if f.name in (
    "before the champion move", "champion moved, before the audit entry",
    "audit entry written, before the version tags",
)]


@pytest.mark.parametrize("fault", GAVE_UP_PROMOTING, ids=[f.id for f in GAVE_UP_PROMOTING])
def test_a_new_dag_run_after_a_promotion_that_gave_up_is_a_repeat_and_clearing_the_old_task_finishes(
        registry: dict[str, Any], fault: Fault, inject: Callable[[Fault | None], None]) -> None:
    """RUN_2 registered v2 and its promote died; RUN_3 on the same data repeats v2: no new evidence, nothing
    written. The promotion is finished by clearing RUN_2's promote task (its evaluation, its approval)."""
    from airflow.sdk.exceptions import AirflowSkipException

    runs = registry["runs"]
    registered = register(runs[RUN_2], RUN_2, "1")
    during = crash(replace(fault), inject, lambda: promote(registered, RUN_2, "1"))
    again = register(runs[RUN_3], RUN_3, "1")
    assert (again["repeat"], again["version"]) == (True, "2")
    with pytest.raises(AirflowSkipException, match="promotion skipped"):
        promote(again, RUN_3, "1")
    assert registry_dump(client(), MODEL) == during
    assert promote(registered, RUN_2, "1", try_number=2) == registry["reference"]["promoted"]
    assert_converged(registry, registry_dump(client(), MODEL))
