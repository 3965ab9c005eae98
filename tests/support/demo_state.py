"""One trained demo state per test session: demo data, the feature DAG and the training DAG, run once.

Several integration modules start from the same place (the shipped specs, 5 days of seeded demo data,
`mlops_features` then `ride_completion__train`: v1 champion) and then write to it (batch runs, more
versions, prediction logs). Building that state costs ~30-60 s; it is built once per session.

MLflow (artifact locations) and Feast (registry, online store) record absolute paths, so the state is
never copied to another path: it is built at one fixed path, a pristine copy is kept beside it, and
`checkout_trained_demo()` puts the pristine files back at that same path before each module that
uses it (modules run one after another; each gets the state exactly as built).

The build runs with the OpenLineage provider's file transport on (events in `<root>/openlineage.jsonl`,
read by tests/integration/test_openlineage.py) and the no-network audit hook (`support/netaudit`,
attempts in `<root>/netaudit.log`): one build checks both, at no extra DAG run. Later runs on the state
get neither (OpenLineage stays off, as it is by default).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.dag_runs import fresh_airflow_env, program, result_of, run_script
from support.open_files import dispose_engines_under, open_on_deleted_files

PROJECT = Path(__file__).resolve().parents[2]
MODEL = "ride_completion"
DEMO_DAYS = 5
BUILD_TIMEOUT_S = 600
OPENLINEAGE_EVENTS = "openlineage.jsonl"
NETAUDIT_LOG = "netaudit.log"

BUILD = program("demo_state_build")


@dataclass(frozen=True)
class TrainedDemo:
    """The checked-out state: where it lives, the env that points at it, and what the build ran."""

    root: Path
    env: dict[str, str]
    built: dict[str, Any]

    @property
    def home(self) -> Path:
        return Path(self.env["MLOPS_HOME"])

    @property
    def openlineage_events(self) -> Path:
        """The OpenLineage events of the build (file transport, one JSON event per line)."""
        return self.root / OPENLINEAGE_EVENTS

    @property
    def netaudit_log(self) -> Path:
        """Outbound network attempts during the build (no file: none)."""
        return self.root / NETAUDIT_LOG

    def run(self, script: str | Path, *args: str, timeout: float) -> tuple[dict[str, Any], str]:
        """Run a DAG script on this state (as run_in_fresh_airflow does on a fresh one)."""
        done = run_script(script, *args, env=self.env, cwd=self.root, timeout=timeout)
        return result_of(done), done.stdout + done.stderr


def _root() -> Path:
    return Path(os.environ.get("MLOPS_TEST_ROOT") or f"/tmp/mlops-tests-{os.getpid()}") / "trained-demo"


def _env(root: Path, migrate: bool) -> dict[str, str]:
    return fresh_airflow_env(root, PROJECT / "dags", migrate=migrate)


def _build_env(root: Path) -> dict[str, str]:
    """The build's env: OpenLineage's file transport (appending, so every task's events stay) and the audit log."""
    transport = {"type": "file", "log_file_path": str(root / OPENLINEAGE_EVENTS), "append": True}
    return {**_env(root, migrate=True), "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
            "MLOPS_NETAUDIT_LOG": str(root / NETAUDIT_LOG)}


@functools.cache
def _pristine() -> tuple[Path, dict[str, Any]]:
    root = _root()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    done = run_script(BUILD, str(DEMO_DAYS), MODEL, env=_build_env(root),
                      cwd=root, timeout=BUILD_TIMEOUT_S)
    built = result_of(done)
    assert built["features"]["state"] == "success" and built["train"]["tasks"]["promote"] == "success", built
    pristine = root.with_name(root.name + ".pristine")
    shutil.rmtree(pristine, ignore_errors=True)
    shutil.copytree(root, pristine, symlinks=True)
    return pristine, built


def checkout_trained_demo() -> TrainedDemo:
    """The trained demo state, exactly as built, at its one fixed path (built on first use)."""
    pristine, built = _pristine()
    root = _root()
    dispose_engines_under(root)
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(pristine, root, symlinks=True)
    stale = open_on_deleted_files(root)
    assert not stale, (
        f"after putting the trained demo state back at {root}, this process still reads the replaced files "
        f"({'; '.join(stale)}): a connection opened by an earlier module outlives its module and would read "
        "that module's state instead of this one. Close it when the module ends (stop the app/thread holding "
        "it), or dispose of it in support/open_files.dispose_engines_under")
    return TrainedDemo(root=root, env=_env(root, migrate=False), built=json.loads(json.dumps(built)))
