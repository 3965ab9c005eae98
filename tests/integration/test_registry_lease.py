"""The registry lease on a real SQLite MLflow store: mutual exclusion whatever the write latency.

Two holders race for one model's lease through clients whose `set_registered_model_tag` is slowed down:
"request" seconds before the write reaches the store, "reply" seconds after it landed. The old protocol
(claim one shared tag, settle 1 s, read it back) let both in when one claim landed more than the settle time
after the other; every schedule here uses a latency of 2 s. Whoever gets in stays inside until the other racer
has read the claims at least once since its own claim landed, so an overlap cannot hide behind timing.
"""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.core import lease
from airflow_mlops.exceptions import PromotionConflict
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.hooks.mlflow_registry import ModelRegistry
from support.slow_client import SlowClient

pytestmark = pytest.mark.integration

MODEL = "ride_completion"
LATENCY = 2.0  # twice the old settle time


@pytest.fixture
def store(mlops_home: Path, migrated_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    (mlops_home / "mlflow").mkdir()
    shutil.copy(migrated_db, mlops_home / "mlflow" / "mlflow.db")
    client().create_registered_model(MODEL)


def client() -> Any:
    return MLflowHook().get_conn()


def lease_tags() -> dict[str, str]:
    return {k: v for k, v in client().get_registered_model(MODEL).tags.items() if k.startswith(lease.TAG_PREFIX)}


SCHEDULES = {
    "both claims slow": ((LATENCY, 0.0), (LATENCY, 0.0)),
    "one claim arrives late": ((0.0, 0.0), (LATENCY, 0.0)),
    "one claim lands early, its reply comes late": ((0.0, LATENCY), (0.0, 0.0)),
    "both replies slow": ((0.0, LATENCY), (0.0, LATENCY)),
}


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=list(SCHEDULES))
def test_two_holders_never_overlap_whatever_the_write_latency(store: None, schedule: Any) -> None:
    clients = [SlowClient(client(), *latency) for latency in schedule]
    inside: list[int] = []
    overlaps: list[list[int]] = []
    entered: list[int] = []
    refused: dict[int, PromotionConflict] = {}
    hung: list[str] = []
    guard = threading.Lock()
    start = threading.Barrier(2, timeout=30)

    def racer(i: int) -> None:
        registry = ModelRegistry(clients[i], MODEL)
        start.wait()
        try:
            with registry.lease(f"{MODEL}__train/manual__racer{i}/promote"):
                with guard:
                    inside.append(i)
                    entered.append(i)
                    if len(inside) > 1:
                        overlaps.append(list(inside))
                # stay until the other racer has seen the claims since its own landed (or gave up)
                if not clients[1 - i].looked.wait(30):
                    hung.append(f"racer {1 - i} never read the claims while racer {i} held the lease")
                with guard:
                    inside.remove(i)
        except PromotionConflict as exc:
            refused[i] = exc
        finally:
            clients[i].looked.set()  # a finished racer has nothing left to look at

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads) and not hung, f"a racer hung: {hung}"
    assert not overlaps, f"both held the lease at once: {overlaps}"
    assert entered and len(entered) + len(refused) == 2, (entered, refused)
    for i, exc in refused.items():
        assert f"manual__racer{1 - i}" in str(exc), f"the refusal names the holder: {exc}"
    assert lease_tags() == {}, "every claim was withdrawn or released"


def test_a_retry_takes_over_the_claim_its_dead_try_left(store: None) -> None:
    key = lease.claim_key(datetime.now(UTC), "0123456789ab")
    client().set_registered_model_tag(MODEL, key, lease.claim_value(f"{MODEL}__train/manual__1/promote/0123456789ab"))
    with ModelRegistry(client(), MODEL).lease(f"{MODEL}__train/manual__1/promote"):
        assert key not in lease_tags()
    assert lease_tags() == {}


def test_a_holder_past_its_ttl_refuses_to_move_the_alias(store: None) -> None:
    from airflow_mlops.core import audit

    registry = ModelRegistry(client(), MODEL)
    with registry.lease(f"{MODEL}__train/manual__1/promote"):
        [mine] = lease.claims(lease_tags())
        client().delete_registered_model_tag(MODEL, mine.key)  # another task judged it abandoned
        event = audit.AuditEvent(action="promote", version="1", previous=None, actor="alice", trigger="manual",
                                 dag_id=None, run_id=None, at=audit.now_iso(), reason="r")
        with pytest.raises(PromotionConflict, match="lost its registry lease"):
            registry.move_champion(event)
    assert registry.alias_version("champion") is None and registry.history() == []
