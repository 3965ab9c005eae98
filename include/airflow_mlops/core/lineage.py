"""Lineage records: which data, code and Airflow run produced a model.

Plain Python (no Airflow, no MLflow import): the operators turn these dicts into MLflow run and
model-version tags. Every tag key starts with `airflow_mlops.` so ours never clash with MLflow's
`mlflow.*` system tags and can be searched with one prefix.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_mlops.exceptions import TrainingSetError

log = logging.getLogger(__name__)

TAG_PREFIX = "airflow_mlops."
TAG_TRAINING_SET_SHA256 = f"{TAG_PREFIX}training_set.sha256"
TAG_TRAINING_SET_PATH = f"{TAG_PREFIX}training_set.path"
TAG_TRAINING_SET_ROWS = f"{TAG_PREFIX}training_set.rows"
TAG_TRAINING_SET_START = f"{TAG_PREFIX}training_set.start"
TAG_TRAINING_SET_END = f"{TAG_PREFIX}training_set.end"
TAG_FEATURE_SERVICE = f"{TAG_PREFIX}feature_service"
TAG_FEATURE_VIEWS = f"{TAG_PREFIX}feature_views"
TAG_TRAINING_SET_ATTRIBUTES = f"{TAG_PREFIX}training_set.attributes"  # evaluation-only columns (JSON list)
TAG_GIT_COMMIT = f"{TAG_PREFIX}git_commit"
TAG_DAG_ID = f"{TAG_PREFIX}airflow.dag_id"
TAG_RUN_ID = f"{TAG_PREFIX}airflow.run_id"
TAG_TASK_ID = f"{TAG_PREFIX}airflow.task_id"
TAG_TRY_NUMBER = f"{TAG_PREFIX}airflow.try_number"
TAG_LOGICAL_DATE = f"{TAG_PREFIX}airflow.logical_date"
TAG_SOURCE_RUN_ID = f"{TAG_PREFIX}source_run_id"
TAG_MODEL_NAME = f"{TAG_PREFIX}model_name"
# The run's and version's task (binary | multiclass | regression; absent on versions trained before tasks existed:
# binary) and, for classifiers, the class labels of the probability columns in order (JSON list): what serving reads.
TAG_TASK = f"{TAG_PREFIX}task"
TAG_CLASSES = f"{TAG_PREFIX}classes"
# What a training run is a function of (see training_fingerprint): equal fingerprints = the same model again.
TAG_SPEC_SHA256 = f"{TAG_PREFIX}spec_sha256"
TAG_FINGERPRINT = f"{TAG_PREFIX}fingerprint"
# On a training run whose fingerprint an existing version already has: that version (nothing registered).
TAG_REPEAT_OF = f"{TAG_PREFIX}repeat_of"
# On a model version from its creation until the register task has moved the alias (then deleted): a version
# that keeps it was left by a register task that died (registry outage) and never finished; it is no repeat twin.
TAG_REGISTRATION = f"{TAG_PREFIX}registration"
REGISTRATION_PENDING = "pending"
FINGERPRINT_VERSION = 1  # bump when the fingerprint's inputs change, so old and new never compare equal

# The GX validation of the training set (the spec's `validation.suite`), as the training-set task recorded it
# in the lineage's `validation`: a plain MLflow client reads the gate's verdict on the version without
# downloading artifacts. The result id is the result's key under MLOPS_HOME/reports/validation
# (`<dataset>/<batch id>/result.json`; the batch id is the snapshot's content id). "Failed expectations"
# counts the failed rules: GX expectations plus our contract rules (timestamps, leakage).
TAG_VALIDATION_RESULT_ID = f"{TAG_PREFIX}validation.result_id"
TAG_VALIDATION_SUCCESS = f"{TAG_PREFIX}validation.success"
TAG_VALIDATION_FAILED = f"{TAG_PREFIX}validation.failed_expectations"
TAG_VALIDATION_SUITE = f"{TAG_PREFIX}validation.suite"
VALIDATION_TAGS = (TAG_VALIDATION_RESULT_ID, TAG_VALIDATION_SUCCESS, TAG_VALIDATION_FAILED, TAG_VALIDATION_SUITE)

# Tags copied from a training run onto the model version it becomes (data lineage travels along).
TRAINING_TAGS = (
    TAG_TRAINING_SET_SHA256,
    TAG_TRAINING_SET_PATH,
    TAG_TRAINING_SET_ROWS,
    TAG_TRAINING_SET_START,
    TAG_TRAINING_SET_END,
    TAG_FEATURE_SERVICE,
    TAG_FEATURE_VIEWS,
    TAG_GIT_COMMIT,
    TAG_SPEC_SHA256,
    TAG_FINGERPRINT,
    TAG_TASK,
    TAG_CLASSES,
    *VALIDATION_TAGS,
)

# Why a version was trained ("retrained because..."): written on the version by the register task from
# the retrain gate's result (operators/retraining.py). The registered model keeps the last retrain start.
TAG_RETRAIN_REASON = f"{TAG_PREFIX}retrain.reason"
TAG_RETRAIN_TRIGGER = f"{TAG_PREFIX}retrain.trigger"
TAG_RETRAIN_EVENTS = f"{TAG_PREFIX}retrain.events"
TAG_RETRAIN_LAST_STARTED = f"{TAG_PREFIX}retrain.last_started"

# MLflow rejects tag values over 8000 characters (mlflow/utils/validation.py MAX_TAG_VAL_LENGTH);
# keep a margin and point to the full lineage artifact instead of failing the run.
MAX_TAG_VALUE = 5000
_SHA_CHUNK = 1 << 20


def git_commit(project_dir: Path | str) -> str | None:
    """The commit checked out in `project_dir`, read from .git files (no git binary, no network).

    Returns None when there is no repository (e.g. a wheel install in a container image) or HEAD
    points at a branch without commits yet.
    """
    git_dir = _git_dir(Path(project_dir))
    if git_dir is None:
        return None
    head = _read(git_dir / "HEAD")
    if head is None:
        return None
    if not head.startswith("ref:"):
        return head or None
    ref = head.removeprefix("ref:").strip()
    common = _common_dir(git_dir)
    return _read(git_dir / ref) or _read(common / ref) or _packed_ref(common, ref)


def _git_dir(project_dir: Path) -> Path | None:
    dot_git = project_dir / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():  # worktrees and submodules: ".git" is a file "gitdir: <path>"
        text = _read(dot_git) or ""
        if text.startswith("gitdir:"):
            target = Path(text.removeprefix("gitdir:").strip())
            return target if target.is_absolute() else (project_dir / target).resolve()
    return None


def _common_dir(git_dir: Path) -> Path:
    """Linked worktrees keep branch refs in the main repository's git dir ("commondir")."""
    common = _read(git_dir / "commondir")
    if not common:
        return git_dir
    path = Path(common)
    return path if path.is_absolute() else (git_dir / path).resolve()


def _packed_ref(git_dir: Path, ref: str) -> str | None:
    for line in (_read(git_dir / "packed-refs") or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == ref and not line.startswith(("#", "^")):
            return parts[0]
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def airflow_context_tags(context: Mapping[str, Any]) -> dict[str, str]:
    """dag_id, run_id, task_id, try_number and logical date (when the run has one) as string tags.

    Tolerates partial contexts (tests, ad-hoc execute calls): missing entries are left out.
    Airflow 3 manual and asset-triggered runs may have no logical date, so it is optional.
    """
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    values = {
        TAG_DAG_ID: getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", None),
        TAG_RUN_ID: context.get("run_id") or getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None),
        TAG_TASK_ID: getattr(ti, "task_id", None) or getattr(context.get("task"), "task_id", None),
        TAG_TRY_NUMBER: getattr(ti, "try_number", None),
        TAG_LOGICAL_DATE: _isoformat(context.get("logical_date")),
    }
    return {key: str(value) for key, value in values.items() if value is not None and value != ""}


def _isoformat(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks so large snapshots stay cheap on memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(_SHA_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def normalize_lineage(value: Any) -> dict[str, Any]:
    """The training-set lineage dict, from a dict or its JSON text (a Jinja-rendered XCom)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise TrainingSetError(
                f"training_set: got text that is not JSON ({exc}); pass the lineage dict returned by the "
                "training-set task (e.g. its XComArg `build_training_set.output`)"
            ) from exc
    if not isinstance(value, Mapping):
        raise TrainingSetError(
            f"training_set: expected the lineage dict of the training-set task, got {type(value).__name__}"
        )
    missing = [key for key in ("path", "sha256") if not value.get(key)]
    if missing:
        raise TrainingSetError(
            f"training_set: lineage lacks {missing}; it needs at least 'path' and 'sha256' "
            f"(got keys {sorted(value)}); pass the dict returned by the training-set task"
        )
    return dict(value)


def verify_snapshot(lineage: Mapping[str, Any]) -> Path:
    """The snapshot path, after checking its bytes still hash to the recorded sha256.

    A training set is immutable once recorded; a changed file means the model would not be
    reproducible from its lineage, so training refuses to start.
    """
    path = Path(str(lineage["path"]))
    expected = str(lineage["sha256"]).lower().removeprefix("sha256:")
    if not path.is_file():
        raise TrainingSetError(
            f"training set snapshot {path} does not exist (lineage sha256 {expected[:12]}...); it was moved or "
            "deleted after the training-set task ran; clear that task to rebuild the snapshot"
        )
    actual = file_sha256(path)
    if actual != expected:
        raise TrainingSetError(
            f"training set snapshot {path} changed after it was recorded: sha256 is {actual[:12]}... but the "
            f"lineage says {expected[:12]}...; snapshots are immutable; clear the training-set task to rebuild it"
        )
    return path


def training_set_tags(lineage: Mapping[str, Any]) -> dict[str, str]:
    """Tags describing the training set: sha256, path, rows, time window, feature service/views, attributes."""
    views, attributes = lineage.get("feature_views"), lineage.get("attributes")
    values = {
        TAG_TRAINING_SET_SHA256: str(lineage["sha256"]).lower().removeprefix("sha256:"),
        TAG_TRAINING_SET_PATH: lineage.get("path"),
        TAG_TRAINING_SET_ROWS: lineage.get("rows"),
        TAG_TRAINING_SET_START: lineage.get("start"),
        TAG_TRAINING_SET_END: lineage.get("end"),
        TAG_FEATURE_SERVICE: lineage.get("feature_service"),
        TAG_FEATURE_VIEWS: json.dumps(views, sort_keys=True, default=str) if views else None,
        TAG_TRAINING_SET_ATTRIBUTES: json.dumps(list(attributes)) if attributes else None,
    }
    return {key: clip_tag(str(value)) for key, value in {**values, **validation_tags(lineage)}.items()
            if value is not None}


def validation_tags(lineage: Mapping[str, Any]) -> dict[str, str]:
    """The training set's GX validation (lineage `validation`) as tags; empty when it was not validated."""
    found = lineage.get("validation")
    if not isinstance(found, Mapping):
        return {}
    values = {
        TAG_VALIDATION_RESULT_ID: found.get("result_id"),
        TAG_VALIDATION_SUCCESS: None if found.get("success") is None else str(bool(found["success"])).lower(),
        TAG_VALIDATION_FAILED: found.get("failed_expectations"),
        TAG_VALIDATION_SUITE: found.get("suite"),
    }
    return {key: str(value) for key, value in values.items() if value is not None}


def clip_tag(value: str) -> str:
    """A tag value MLflow accepts; long values are cut and say where the full text is."""
    if len(value) <= MAX_TAG_VALUE:
        return value
    return value[: MAX_TAG_VALUE - 60] + "... (truncated; see artifact training_set/lineage.json)"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal data gives equal text, hence equal hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def training_fingerprint(
    *, training_set_sha256: str | None, spec_sha256: str | None, git_commit: str | None,
    estimator: Mapping[str, Any],
) -> str | None:
    """sha256 of what a training run is a function of; None when it cannot be known.

    Inputs: the training set's bytes (sha256), the model spec (its content hash; None when the task was
    built without a spec), the code (git commit) and the estimator with its params and the rest of the
    training arguments (`estimator`: import path, params, preprocessing, split, seed, label, timestamp and
    excluded columns). Without a training-set sha256 or a commit there is no fingerprint: the code that
    trained could differ while everything recorded looks equal, so such runs are never called repeats.
    """
    if not training_set_sha256 or not git_commit:
        return None
    payload = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "training_set_sha256": str(training_set_sha256).lower().removeprefix("sha256:"),
        "spec_sha256": spec_sha256 or None,
        "git_commit": git_commit,
        "estimator": dict(estimator),
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def repeat_reason(registered: Any) -> str | None:
    """Why the tasks after `register` have nothing to do, when its result says the run was a repeat.

    `registered` is the register task's result (dict, or its JSON text); None when it is not a repeat.
    """
    if isinstance(registered, str):
        try:
            registered = json.loads(registered)
        except json.JSONDecodeError:
            return None
    if not isinstance(registered, Mapping) or not registered.get("repeat"):
        return None
    return str(registered.get("reason") or (
        f"{registered.get('name')} v{registered.get('version')} already holds this training run's fingerprint "
        f"{registered.get('fingerprint')}; nothing new was registered"))


def retrain_tags(retrain: Any) -> dict[str, str]:
    """Version tags from the retrain gate's result {reason, trigger, events}; empty when there is none.

    The events JSON is size-capped: whole events are dropped from the end (and counted) rather than
    cutting JSON in half, so the tag always parses.
    """
    if not retrain:
        return {}
    data = json.loads(retrain) if isinstance(retrain, str) else dict(retrain)
    tags = {TAG_RETRAIN_REASON: clip_tag(str(data.get("reason") or "")),
            TAG_RETRAIN_TRIGGER: str(data.get("trigger") or "")}
    events = list(data.get("events") or [])
    if events:
        tags[TAG_RETRAIN_EVENTS] = _capped_events(events)
    return {key: value for key, value in tags.items() if value}


def _capped_events(events: list[Any]) -> str:
    for keep in range(len(events), 0, -1):
        dropped = len(events) - keep
        payload: dict[str, Any] = {"events": events[:keep]}
        if dropped:
            payload["dropped"] = dropped  # the full list is in the retrain_gate task's XCom
        text = json.dumps(payload, sort_keys=True, default=str)
        if len(text) <= MAX_TAG_VALUE:
            return text
    return json.dumps({"events": [], "dropped": len(events)})
