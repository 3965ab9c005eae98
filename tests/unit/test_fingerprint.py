"""The training fingerprint, the spec hash, the repeat reason and the append-only champion history tags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_mlops.core import audit, lineage
from airflow_mlops.core.spec import parse_spec, spec_sha256

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[2]
SPEC_FILE = PROJECT / "include" / "models" / "ride_completion.yaml"
ESTIMATOR = {"estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "params": {"max_iter": 150,
             "learning_rate": 0.1}, "preprocessing": {"impute": "median", "scale": False},
             "split": {"method": "time", "test_size": 0.2}, "seed": 7, "label": "completed",
             "timestamp_column": "event_timestamp", "exclude_columns": ["driver_id"]}
BASE: dict[str, Any] = {"training_set_sha256": "a" * 64, "spec_sha256": "b" * 64, "git_commit": "c" * 40,
                        "estimator": ESTIMATOR}


def test_fingerprint_is_a_stable_sha256_of_its_four_inputs() -> None:
    fingerprint = lineage.training_fingerprint(**BASE)
    assert fingerprint is not None and len(fingerprint) == 64 and int(fingerprint, 16) >= 0
    assert lineage.training_fingerprint(**BASE) == fingerprint
    # key order of the params and a "sha256:" prefix / upper case on the training-set hash do not matter
    reordered = {**ESTIMATOR, "params": {"learning_rate": 0.1, "max_iter": 150}}
    assert lineage.training_fingerprint(**{**BASE, "estimator": reordered}) == fingerprint
    assert lineage.training_fingerprint(**{**BASE, "training_set_sha256": "sha256:" + "a" * 64}) == fingerprint


@pytest.mark.parametrize("change", [
    {"training_set_sha256": "d" * 64},
    {"spec_sha256": "e" * 64},
    {"spec_sha256": None},
    {"git_commit": "f" * 40},
    {"estimator": {**ESTIMATOR, "params": {"max_iter": 151, "learning_rate": 0.1}}},
    {"estimator": {**ESTIMATOR, "estimator": "sklearn.linear_model.LogisticRegression"}},
    {"estimator": {**ESTIMATOR, "seed": 8}},
    {"estimator": {**ESTIMATOR, "split": {"method": "random", "test_size": 0.2}}},
])
def test_any_changed_input_changes_the_fingerprint(change: dict[str, Any]) -> None:
    assert lineage.training_fingerprint(**{**BASE, **change}) != lineage.training_fingerprint(**BASE)


@pytest.mark.parametrize("missing", ["training_set_sha256", "git_commit"])
def test_no_fingerprint_without_the_data_hash_or_the_commit(missing: str) -> None:
    assert lineage.training_fingerprint(**{**BASE, missing: None}) is None
    assert lineage.training_fingerprint(**{**BASE, missing: ""}) is None


def test_spec_hash_ignores_yaml_formatting_but_not_content() -> None:
    text = SPEC_FILE.read_text()
    original = spec_sha256(parse_spec(text, str(SPEC_FILE)))
    assert len(original) == 64
    # comments, blank lines, key order, flow vs block style and the file's location are not content
    data = json.loads(json.dumps(yaml.safe_load(text)))
    reordered = "# another comment\n\n" + "\n".join(
        f"{key}: {json.dumps(data[key])}" for key in reversed(list(data)))
    assert spec_sha256(parse_spec(reordered, "/elsewhere/ride_completion.yaml")) == original
    # an explicit default equals the implicit one (the parsed spec is hashed, defaults filled in)
    assert "retrain_on_features" not in text
    explicit = text.replace("  seed: 7\n", "  seed: 7\n  retrain_on_features: true\n")
    assert spec_sha256(parse_spec(explicit, str(SPEC_FILE))) == original
    changed = text.replace("max_iter: 150", "max_iter: 151")
    assert changed != text and spec_sha256(parse_spec(changed, str(SPEC_FILE))) != original


def test_repeat_reason_only_for_a_repeat_result() -> None:
    repeat = {"name": "m", "version": "3", "repeat": True, "fingerprint": "f" * 64, "reason": "m v3 has it"}
    assert lineage.repeat_reason(repeat) == "m v3 has it"
    assert lineage.repeat_reason(json.dumps(repeat)) == "m v3 has it"
    assert "f" * 64 in (lineage.repeat_reason({**repeat, "reason": ""}) or "")
    for value in (None, "null", "", "not json", {"version": "3", "repeat": False}, {"version": "3"}):
        assert lineage.repeat_reason(value) is None, value


def _event(seq: int, action: str, version: str, previous: str | None, actor: str, reason: str) -> audit.AuditEvent:
    return audit.AuditEvent(action=action, version=version, previous=previous, actor=actor, trigger="manual",
                            dag_id="d", run_id=f"r{seq}", at=f"2026-10-0{seq}T00:00:00+00:00", reason=reason,
                            seq=seq)


def test_a_move_appends_history_and_keeps_the_first_promotion() -> None:
    first = audit.version_move_tags(_event(1, "promote", "3", None, "alice", "beats nothing"), {})
    assert first["3"][audit.TAG_PROMOTED_BY] == "alice" and first["3"][audit.TAG_PREVIOUS_CHAMPION] == "none"
    assert set(first) == {"3"}
    rollback = audit.version_move_tags(_event(3, "rollback", "3", "2", "bob", "v2 misroutes"), first["3"])
    assert audit.TAG_PROMOTED_AT not in rollback["3"] and audit.TAG_PROMOTED_BY not in rollback["3"]
    entry = json.loads(rollback["3"][audit.champion_history_tag(3)])
    assert (entry["role"], entry["action"], entry["actor"], entry["other"], entry["reason"]) == (
        "champion", "rollback", "bob", "2", "v2 misroutes")
    demoted = json.loads(rollback["2"][audit.champion_history_tag(3)])
    assert (demoted["role"], demoted["other"]) == ("demoted", "3")
    assert rollback["2"][audit.TAG_DEMOTED_AT] == "2026-10-03T00:00:00+00:00"
    # keys never collide across moves: one per audit seq, zero-padded so they sort
    assert audit.champion_history_tag(1) < audit.champion_history_tag(3) < audit.champion_history_tag(10)


def test_a_training_set_s_attributes_are_never_model_inputs_whoever_wrote_the_request() -> None:
    """The snapshot's lineage lists its evaluation-only columns; the request excludes them even when its own
    exclude_columns (a hand-written `train-job` request) forgot them, and they join the fitted-model config."""
    from airflow_mlops.jobs.training import TrainingRequest, estimator_config

    record = {"path": "/sets/a.parquet", "sha256": "ab" * 32, "attributes": ["region", "driver_id"]}
    request = TrainingRequest.from_dict({"model_name": "m", "training_set": record, "estimator": "x.Y",
                                         "label": "completed", "exclude_columns": ["driver_id"]})
    assert request.exclude_columns == ["driver_id", "region"]
    assert estimator_config(request)["exclude_columns"] == ["driver_id", "region"]
    plain = TrainingRequest(model_name="m", training_set={"path": "/sets/a.parquet", "sha256": "ab" * 32},
                            estimator="x.Y", label="completed", exclude_columns=["driver_id"])
    assert plain.exclude_columns == ["driver_id"], "no attributes: the request is what it was before the field"
    assert TrainingRequest.from_json(request.to_json()) == request, "the logged request round-trips (reproduce)"
