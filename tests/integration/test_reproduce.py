"""`airflow-mlops reproduce` on the trained demo state: v1 rebuilt bitwise, refusals that name what changed.

The command runs as a user runs it (the installed console script, in its own process) against the demo state
(support/demo_state.py: 5 days of demo data, features, v1 champion); each outcome is also read back from the
registry as the version's tags.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient

from airflow_mlops.jobs.reproduce import TAG_REPRODUCED, TAG_REPRODUCED_DETAIL
from support.demo_state import MODEL, PROJECT, TrainedDemo, checkout_trained_demo

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("airflow-mlops"))


@pytest.fixture
def demo() -> TrainedDemo:
    return checkout_trained_demo()  # every test starts from the state as built (one test changes the store)


def reproduce(demo: TrainedDemo, *args: str, **env: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run([CLI, "reproduce", MODEL, *args, "--json"], env={**demo.env, **env}, cwd=demo.root,
                          capture_output=True, text=True, timeout=600, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout + done.stderr
    return done.returncode, json.loads(lines[-1]), done.stderr


def registry(demo: TrainedDemo) -> MlflowClient:
    uri = f"sqlite:///{demo.home / 'mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_v1_is_rebuilt_bitwise_and_the_reproduction_is_tagged(demo: TrainedDemo) -> None:
    code, outcome, _ = reproduce(demo, "1")
    assert (code, outcome["status"], outcome["code_drift"]) == (0, "identical", False), outcome
    assert outcome["rows"] > 100 and outcome["max_abs_diff"] == 0.0
    assert outcome["recorded_commit"] == outcome["current_commit"]
    tags = registry(demo).get_model_version(MODEL, "1").tags
    assert tags[TAG_REPRODUCED] == "identical"
    assert json.loads(tags[TAG_REPRODUCED_DETAIL])["training_set_sha256"] == outcome["training_set_sha256"]


def test_a_changed_offline_store_is_refused_naming_the_column(demo: TrainedDemo) -> None:
    client = registry(demo)
    before = {v.version for v in client.search_model_versions(f"name = '{MODEL}'")}
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    # one label row's request-time feature corrected in place inside the training window
    files = sorted((demo.home / "offline" / "rides").glob("**/*.parquet"))
    assert files, list((demo.home / "offline").iterdir())
    target = files[len(files) // 2]
    frame = pd.read_parquet(target)
    frame.loc[frame.index[0], "trip_distance_km"] = float(frame["trip_distance_km"].iloc[0]) + 1.0
    frame.to_parquet(target, index=False)

    code, outcome, _ = reproduce(demo, "1")
    assert (code, outcome["status"]) == (2, "refused"), outcome
    reason = outcome["reason"]
    assert "the training set rebuilt from the offline store differs from the recorded one" in reason
    assert '"trip_distance_km": 1' in reason, reason  # the column and how many cells changed
    assert client.get_model_version(MODEL, "1").tags[TAG_REPRODUCED] == "refused"
    assert {v.version for v in client.search_model_versions(f"name = '{MODEL}'")} == before
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion


def test_code_drift_is_refused_unless_allowed(demo: TrainedDemo, tmp_path: Path) -> None:
    # a project directory that is no git checkout: no commit, so it differs from the recorded one
    elsewhere = {"MLOPS_PROJECT_DIR": str(tmp_path), "MLOPS_MODELS_DIR": str(PROJECT / "include" / "models"),
                 "MLOPS_FEATURE_REPO": str(PROJECT / "include" / "feature_repo"),
                 "MLOPS_EXPECTATIONS_DIR": str(PROJECT / "include" / "expectations")}
    code, outcome, _ = reproduce(demo, "1", **elsewhere)
    assert (code, outcome["status"]) == (2, "refused")
    assert "code commit (none: not a git checkout) differs from the recorded" in outcome["reason"]
    assert "--allow-code-drift" in outcome["reason"]
    code, outcome, _ = reproduce(demo, "1", "--allow-code-drift", **elsewhere)
    assert (code, outcome["status"], outcome["code_drift"]) == (0, "identical", True), outcome


def test_a_changed_spec_is_refused_naming_the_file(demo: TrainedDemo, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(PROJECT / "include" / "models", models)
    spec = models / f"{MODEL}.yaml"
    spec.write_text(spec.read_text().replace("bootstrap_samples: 500", "bootstrap_samples: 400"))
    code, outcome, _ = reproduce(demo, "1", MLOPS_MODELS_DIR=str(models))
    assert (code, outcome["status"]) == (2, "refused")
    assert f"model spec {spec} hashes to" in outcome["reason"]


def test_an_unknown_version_is_refused_with_the_versions_there_are(demo: TrainedDemo) -> None:
    code, outcome, _ = reproduce(demo, "99")
    assert (code, outcome["status"]) == (2, "refused")
    assert "has no version '99' in the registry (versions: ['1'])" in outcome["reason"]
