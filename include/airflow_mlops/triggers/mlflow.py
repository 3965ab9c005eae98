"""MLflowModelAliasTrigger: the deferrable half of `MLflowModelAliasSensor`, plus the check both halves run.

`check_alias()` is the one check: it reads where `alias` of a registered model points
(`ModelRegistry.alias_version`, i.e. `get_model_version_by_alias`: `search_model_versions` returns
empty aliases in MLflow 3) and decides whether the wait is over. The sensor's `poke`, this trigger's
`run` and the sensor's `execute_complete` all go through it, so they cannot disagree.

MlflowClient calls block (SQL store or REST): the trigger runs them with `asyncio.to_thread`, so the
triggerer's event loop keeps serving its other triggers. mlflow is imported inside functions only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.boundary import TriggerBoundary
from airflow_mlops.exceptions import MLOpsError

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AliasState:
    """Where an alias points now and whether that ends the wait."""

    model: str
    alias: str
    version: str | None
    done: bool
    wanted: str

    def result(self) -> dict[str, Any]:
        """The sensor's XCom: {model, alias, version}."""
        return {"model": self.model, "alias": self.alias, "version": self.version}

    def describe(self) -> str:
        where = f"version {self.version}" if self.version is not None else "no version (alias not set)"
        verdict = "done" if self.done else "still waiting"
        return f"{self.model}@{self.alias} points at {where}; waiting for {self.wanted}: {verdict}"


def wanted_text(from_version: str | int | None, version: str | int | None) -> str:
    if version not in (None, ""):
        return f"version {version}"
    if from_version not in (None, ""):
        return f"any version other than {from_version}"
    return "any version"


def decide(current: str | None, from_version: str | int | None, version: str | int | None) -> bool:
    """The rule: `version` given -> current == version; else current set and != from_version."""
    if current is None:
        return False
    if version not in (None, ""):
        return current == str(version)
    return from_version in (None, "") or current != str(from_version)


def check_alias(client: MlflowClient, model_name: str, alias: str, *, from_version: str | int | None = None,
                version: str | int | None = None) -> AliasState:
    """Read the alias once (a missing model or alias is "not set", not an error) and decide."""
    from airflow_mlops.hooks.mlflow_registry import ModelRegistry

    current = ModelRegistry(client, model_name).alias_version(alias)
    return AliasState(model=model_name, alias=alias, version=current,
                      done=decide(current, from_version, version), wanted=wanted_text(from_version, version))


def seconds_left(deadline: str | None) -> float | None:
    if not deadline:
        return None
    end = datetime.fromisoformat(deadline)
    end = end.replace(tzinfo=UTC) if end.tzinfo is None else end
    return (end - datetime.now(UTC)) / timedelta(seconds=1)


class MLflowModelAliasTrigger(TriggerBoundary, BaseTrigger):
    """Poll the registry until `alias` of `model_name` satisfies the wait, or `deadline` passes; one event.

    Event payloads: `{"status": "success", "model", "alias", "version", "message"}`,
    `{"status": "timeout", ..., "message"}` at the deadline (version = where the alias points then), or
    `{"status": "error", "message"}` when the registry cannot be read (unreachable store, bad URI).

    :param from_version: wait until the alias points at any other version (ignored when `version` is set).
    :param version: wait until the alias points at exactly this version.
    :param deadline: ISO time after which the wait ends with a timeout event; None waits forever.
    """

    def __init__(self, *, model_name: str, alias: str = "champion", from_version: str | None = None,
                 version: str | None = None, mlflow_conn_id: str = "mlflow_default", poll_interval: float = 30.0,
                 deadline: str | None = None, **kwargs: Any) -> None:
        # Airflow's BaseTrigger.__init__(**kwargs) is unannotated; mypy's untyped_calls_exclude does not reach super()
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.model_name = model_name
        self.alias = alias
        self.from_version = None if from_version in (None, "") else str(from_version)
        self.version = None if version in (None, "") else str(version)
        self.mlflow_conn_id = mlflow_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self._client: MlflowClient | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"model_name": self.model_name, "alias": self.alias, "from_version": self.from_version,
             "version": self.version, "mlflow_conn_id": self.mlflow_conn_id, "poll_interval": self.poll_interval,
             "deadline": self.deadline},
        )

    def _check(self) -> AliasState:
        """Blocking (MlflowClient): runs in a worker thread. The client is built once per trigger."""
        if self._client is None:
            from airflow_mlops.hooks.mlflow import MLflowHook

            self._client = MLflowHook(self.mlflow_conn_id).get_conn()
        return check_alias(self._client, self.model_name, self.alias, from_version=self.from_version,
                           version=self.version)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from mlflow.exceptions import MlflowException

        while True:
            try:
                state = await asyncio.to_thread(self._check)
            except (MlflowException, MLOpsError, OSError) as err:
                yield TriggerEvent({"status": "error", "message": f"reading {self.model_name}@{self.alias}: {err}"})
                return
            if state.done:
                yield TriggerEvent({"status": "success", **state.result(), "message": state.describe()})
                return
            left = seconds_left(self.deadline)
            if left is not None and left <= 0:
                yield TriggerEvent({"status": "timeout", **state.result(),
                                    "message": f"deadline {self.deadline} passed: {state.describe()}"})
                return
            wait = self.poll_interval if left is None else min(self.poll_interval, left)
            self.log.info("%s; next check in %.1fs", state.describe(), wait)
            await asyncio.sleep(wait)
