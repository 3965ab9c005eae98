"""A small client for Airflow 3's public REST API (/api/v2), authenticated like a user would be.

Token: `POST /auth/token` with {"username", "password"} (simple auth manager) returns
{"access_token"}; every request then carries `Authorization: Bearer <token>`. The token expires
after `[api_auth] jwt_expiration_time` (600 s by default), so a 401 triggers one fresh login.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class AirflowApiError(AssertionError):
    """A REST call answered with an unexpected status; the message names the call and the answer."""


class AirflowClient:
    """Token-authenticated calls for the things e2e tests do: unpause, trigger, wait, inspect."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def login(self) -> str:
        response = self._http.post("/auth/token", json=self._credentials)
        if response.status_code != 201:
            raise AirflowApiError(f"POST /auth/token -> {response.status_code}: {response.text[:500]}")
        self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        """One call under /api/v2; retries once with a fresh token on 401; returns the JSON body."""
        for attempt in range(2):
            token = self._token or self.login()
            response = self._http.request(method, f"/api/v2{path}", headers={"Authorization": f"Bearer {token}"},
                                          **kwargs)
            if response.status_code == 401 and attempt == 0:
                self._token = None
                continue
            break
        if response.status_code != expect:
            raise AirflowApiError(f"{method} /api/v2{path} -> {response.status_code} (expected {expect}): "
                                  f"{response.text[:1000]}")
        return response.json() if response.content else None

    # --- DAGs and runs -------------------------------------------------------------------------

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self.request("GET", f"/dags/{dag_id}")

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def unpause(self, dag_id: str) -> dict[str, Any]:
        return self.set_paused(dag_id, False)

    def trigger(self, dag_id: str, logical_date: datetime | None = None, conf: dict[str, Any] | None = None,
                note: str | None = None) -> dict[str, Any]:
        """Create a manual run; `logical_date` must be sent (null is allowed) in Airflow 3."""
        body: dict[str, Any] = {"logical_date": logical_date.isoformat() if logical_date else None,
                                "conf": conf or {}}
        if note:
            body["note"] = note
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def trigger_due_run(self, dag_id: str) -> dict[str, Any]:
        """Trigger the run the schedule has due now (its logical date), so unpausing adds no second run.

        The scheduler does not create a scheduled run for a logical date that already has a run; it
        moves `next_dagrun` on instead (airflow/jobs/scheduler_job_runner.py `_create_dag_runs`).
        """
        dag = self.dag(dag_id)
        due = dag["next_dagrun_logical_date"]
        if due is None or parse_time(dag["next_dagrun_run_after"]) > datetime.now(UTC):
            return self.trigger(dag_id)
        return self.trigger(dag_id, logical_date=parse_time(due))

    def unpause_without_catchup(self, dag_id: str, timeout: float = 60) -> str | None:
        """Unpause so that only asset events and manual triggers start runs, not the catch-up run.

        With catchup=False a cron schedule always has its latest *past* point due, so unpausing
        creates a scheduled run at once (airflow/timetables/trigger.py `next_dagrun_info`), and
        every re-parse recomputes that point from the last scheduled run, ignoring manual ones
        (airflow/dag_processing/collection.py `_get_latest_runs_stmt`). The scheduler creates no
        scheduled run for a logical date that already has a run (airflow/jobs/scheduler_job_runner.py
        `_create_dag_runs`): a placeholder run at that date, failed before the DAG is unpaused so it
        never starts, holds the slot. It must stay; returns its run id (None if nothing was due).
        """
        dag = self.dag(dag_id)
        due = dag["next_dagrun_logical_date"]
        if due is None or parse_time(dag["next_dagrun_run_after"]) > datetime.now(UTC):
            self.unpause(dag_id)
            return None
        placeholder = self.trigger(dag_id, logical_date=parse_time(due),
                                   note="e2e placeholder: holds the catch-up slot, never runs")
        self.set_run_state(dag_id, placeholder["dag_run_id"], "failed")
        self.unpause(dag_id)
        wait_for(lambda: self.dag(dag_id)["next_dagrun_logical_date"] != due, timeout,
                 f"the scheduler to skip {dag_id}'s catch-up run at {due}")
        return str(placeholder["dag_run_id"])

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> dict[str, Any]:
        return self.request("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": state})

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def dag_runs(self, dag_id: str, run_type: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"order_by": "id", "limit": 100}
        if run_type:
            params["run_type"] = run_type
        return self.request("GET", f"/dags/{dag_id}/dagRuns", params=params)["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def asset_events(self, asset_name: str) -> list[dict[str, Any]]:
        """Events of one asset, oldest first (`name_pattern` is a substring match, so filter exactly)."""
        events = self.request("GET", "/assets/events",
                              params={"name_pattern": asset_name, "order_by": "timestamp", "limit": 100})
        return [e for e in events["asset_events"] if e.get("name") == asset_name]

    def import_errors(self) -> list[dict[str, Any]]:
        return self.request("GET", "/importErrors")["import_errors"]

    # --- waiting -------------------------------------------------------------------------------

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float,
                     on_poll: Callable[[], None] | None = None) -> dict[str, Any]:
        """Poll until the run is success or failed; returns the run (does not judge the state)."""
        run = wait_for(lambda: _if_terminal(self.dag_run(dag_id, run_id)), timeout,
                       f"run {dag_id}/{run_id} to finish", on_poll=on_poll)
        return run

    def wait_for_run_of_type(self, dag_id: str, run_type: str, timeout: float,
                             on_poll: Callable[[], None] | None = None) -> dict[str, Any]:
        """Poll until the first run of `run_type` exists and has finished."""
        def first_finished() -> dict[str, Any] | None:
            runs = self.dag_runs(dag_id, run_type=run_type)
            return _if_terminal(runs[0]) if runs else None

        return wait_for(first_finished, timeout, f"a {run_type} run of {dag_id} to finish", on_poll=on_poll)


def _if_terminal(run: dict[str, Any]) -> dict[str, Any] | None:
    return run if run["state"] in TERMINAL_RUN_STATES else None


def wait_for(probe: Callable[[], Any], timeout: float, what: str, interval: float = 1.0,
             on_poll: Callable[[], None] | None = None) -> Any:
    """Call `probe` until it returns something truthy; `on_poll` may raise to abort early."""
    deadline = time.monotonic() + timeout
    while True:
        if on_poll is not None:
            on_poll()
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def holds_for(probe: Callable[[], bool], seconds: float, what: str, interval: float = 0.5,
              on_poll: Callable[[], None] | None = None) -> None:
    """A negative check: `probe` stays true for `seconds`, checked every `interval`; fails at the first false.

    Absence can only be observed over a window: a slower machine makes the window cover fewer polls of
    the thing watched (a weaker check), never a false failure."""
    deadline = time.monotonic() + seconds
    while True:
        if on_poll is not None:
            on_poll()
        assert probe(), f"no longer true after {seconds - (deadline - time.monotonic()):.1f}s: {what}"
        if time.monotonic() > deadline:
            return
        time.sleep(interval)


def parse_time(value: str) -> datetime:
    """Airflow's ISO timestamps ('...Z' or '+00:00') as aware datetimes."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
