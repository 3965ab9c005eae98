"""MLflowModelAliasSensor: wait until a registered model's alias moves (e.g. a new `champion`).

Poke mode, reschedule mode and the deferrable mode (`MLflowModelAliasTrigger` in the triggerer) all
run `triggers.mlflow.check_alias()`, so they agree on what "moved" means:

- `version` given: done when the alias points at exactly that version;
- else `from_version` given: done when the alias points at any other version;
- else: done as soon as the alias exists.

A missing registered model or alias is "not yet", not an error. On timeout the sensor fails (or
skips with `soft_fail`) with a message naming where the alias points and what it waited for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_mlops.boundary import TaskBoundary
from airflow_mlops.sensors import completed_event, defer_until_deadline
from airflow_mlops.triggers.mlflow import AliasState, MLflowModelAliasTrigger, check_alias, wanted_text

if TYPE_CHECKING:
    from airflow.sdk import Context


class MLflowModelAliasSensor(TaskBoundary, BaseSensorOperator):
    """Wait until `alias` of registered model `model_name` moves.

    XCom: `{model, alias, version}` — the version the alias points at when the wait ended.

    :param model_name: registered model name. (templated)
    :param alias: alias to watch, "champion" by default. (templated)
    :param from_version: wait until the alias points at any version but this one, e.g.
        `"{{ ti.xcom_pull(task_ids='register')['version'] }}"`. (templated)
    :param version: wait until the alias points at exactly this version (wins over from_version). (templated)
    :param mlflow_conn_id: Airflow connection of type "mlflow". (templated)
    :param deferrable: wait in the triggerer (`MLflowModelAliasTrigger`) instead of a worker slot.
    """

    template_fields: Sequence[str] = ("model_name", "alias", "from_version", "version", "mlflow_conn_id")
    ui_color = "#d7ecff"

    def __init__(self, *, model_name: str, alias: str = "champion", from_version: str | int | None = None,
                 version: str | int | None = None, mlflow_conn_id: str = "mlflow_default",
                 deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.alias = alias
        self.from_version = from_version
        self.version = version
        self.mlflow_conn_id = mlflow_conn_id
        self.deferrable = deferrable
        self._last: AliasState | None = None

    def _check(self) -> AliasState:
        from airflow_mlops.hooks.mlflow import MLflowHook

        state = check_alias(MLflowHook(self.mlflow_conn_id).get_conn(), self.model_name, self.alias,
                            from_version=self._text(self.from_version), version=self._text(self.version))
        self._last = state
        self.log.info("%s", state.describe())
        return state

    @staticmethod
    def _text(value: str | int | None) -> str | None:
        # A template that rendered to "" or "None" (an absent XCom) means "not given".
        return None if value is None or str(value).strip() in ("", "None") else str(value).strip()

    def poke(self, context: Context) -> PokeReturnValue:
        state = self._check()
        return PokeReturnValue(is_done=state.done, xcom_value=state.result())

    def execute(self, context: Context) -> Any:
        if self.deferrable:
            return self._execute_deferrable()
        try:
            return super().execute(context)
        except AirflowSensorTimeout as err:
            raise AirflowSensorTimeout(self._timeout_message()) from err

    def _execute_deferrable(self) -> dict[str, Any]:
        state = self._check()
        if state.done:  # no trip through the triggerer when there is nothing to wait for
            return state.result()
        defer_until_deadline(self, lambda deadline: MLflowModelAliasTrigger(
            model_name=self.model_name, alias=self.alias, from_version=self._text(self.from_version),
            version=self._text(self.version), mlflow_conn_id=self.mlflow_conn_id,
            poll_interval=self.poke_interval, deadline=deadline,
        ))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume from the trigger: success returns {model, alias, version}; timeout fails (or skips)."""
        event = completed_event(self, event, done="success", timed_out="timeout",
                                timeout_prefix=self._timeout_prefix())
        return {"model": event["model"], "alias": event["alias"], "version": event["version"]}

    def _timeout_prefix(self) -> str:
        wanted = wanted_text(self._text(self.from_version), self._text(self.version))
        return f"{self.model_name}@{self.alias} did not reach {wanted} within {self.timeout:.0f}s: "

    def _timeout_message(self) -> str:
        last = self._last.describe() if self._last is not None else "no registry check completed"
        return f"{self._timeout_prefix()}{last}"
