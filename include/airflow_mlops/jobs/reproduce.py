"""`airflow-mlops reproduce <model> <version>`: rebuild a registered version from its lineage and prove it.

1. Read what the version's training run recorded: the job request (`training/request.json`: estimator, seed,
   split, preprocessing, label, spec hash, search), the arguments it fitted (`training/summary.json`), the
   training-set lineage (window, feature service, view definitions, sha256) and the code commit.
2. Refuse, naming what changed, when the code commit or the model spec differs from the recorded ones, unless
   `allow_code_drift` (then the current spec's feature settings are used, and the tag says so).
3. Rebuild the training set from the offline store: the recorded window's label rows, the same point-in-time
   join, the same canonical snapshot. A different sha256 is refused with what changed (rows, columns, cells per
   column, feature-view definitions), and the rebuilt snapshot is kept beside the recorded one to compare.
4. Retrain with the recorded estimator, fitted arguments and seed (no search: the search's winner is recorded).
5. Score the version's held-out rows with the registered model and the retrained one: `identical` (bitwise
   equal probabilities), `within_tolerance` (max |diff| <= tolerance, when one is given) or `differs`.
6. Record the outcome on the version as tags `airflow_mlops.reproduced` (the status) and
   `airflow_mlops.reproduced.detail` (JSON), refusals included.

pandas, sklearn, mlflow and feast are imported inside functions only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core import lineage
from airflow_mlops.exceptions import MLOpsError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from airflow_mlops.core.spec import ModelSpec
    from airflow_mlops.hooks.feast import FeastHook
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.jobs.training import TrainingRequest

log = logging.getLogger(__name__)

TAG_REPRODUCED = f"{lineage.TAG_PREFIX}reproduced"
TAG_REPRODUCED_DETAIL = f"{lineage.TAG_PREFIX}reproduced.detail"


class ReproduceRefused(MLOpsError):
    """The version cannot be rebuilt as recorded (missing record, changed code, spec or data)."""

    retry = False


@dataclass
class Reproduction:
    """What `reproduce` found; `status` is identical | within_tolerance | differs | refused."""

    model: str
    version: str
    status: str
    reason: str = ""
    rows: int = 0
    max_abs_diff: float | None = None
    tolerance: float | None = None
    training_set_sha256: str = ""
    recorded_commit: str | None = None
    current_commit: str | None = None
    code_drift: bool = False
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def ok(self) -> bool:
        return self.status in ("identical", "within_tolerance")


@dataclass
class Recorded:
    """The version's training record, read from its run."""

    request: TrainingRequest
    fitted_params: dict[str, Any]
    commit: str | None
    run_id: str


def reproduce(
    model: str, version: str, *, mlflow_hook: MLflowHook, feast_hook: FeastHook, specs_dir: Path | None = None,
    allow_code_drift: bool = False, tolerance: float | None = None,
) -> Reproduction:
    """Rebuild, retrain and compare one version; the outcome is also tagged on the version."""
    client = mlflow_hook.get_conn()
    outcome = Reproduction(model=model, version=str(version), status="refused", tolerance=tolerance)
    try:
        recorded = read_record(client, model, str(version))
        outcome.recorded_commit = recorded.commit
        spec = _check_code(recorded, outcome, specs_dir, allow_code_drift)
        frame = rebuild_training_set(recorded.request, spec, feast_hook)
        outcome.training_set_sha256 = recorded.request.training_set["sha256"]
        _compare(recorded, frame, model, str(version), mlflow_hook, outcome)
    except ReproduceRefused as exc:
        outcome.status, outcome.reason = "refused", str(exc)
    _record(client, outcome)
    return outcome


def read_record(client: MlflowClient, model: str, version: str) -> Recorded:
    from mlflow.exceptions import MlflowException

    from airflow_mlops.jobs.training import REQUEST_ARTIFACT, SUMMARY_ARTIFACT, TrainingRequest

    try:
        model_version = client.get_model_version(model, version)
    except MlflowException:
        known = [str(v.version) for v in client.search_model_versions(f"name = '{model}'")] if "'" not in model else []
        raise ReproduceRefused(f"model {model!r} has no version {version!r} in the registry (versions: "
                               f"{sorted(known, key=int)}); pass a registered model name and version") from None
    run_id = model_version.run_id
    if not run_id:
        raise ReproduceRefused(f"{model} v{version} has no training run (registered from {model_version.source}); "
                               "only versions trained by this project can be reproduced")
    try:
        request = TrainingRequest.from_dict(_artifact_json(client, run_id, REQUEST_ARTIFACT))
        summary = _artifact_json(client, run_id, SUMMARY_ARTIFACT)
    except (MlflowException, OSError) as exc:
        raise ReproduceRefused(
            f"{model} v{version}: its run {run_id} has no {REQUEST_ARTIFACT} ({exc.__class__.__name__}); it was "
            "trained before training runs recorded their request, so its exact training arguments are unknown: "
            "retrain it with this version of airflow-mlops to make it reproducible"
        ) from None
    tags = client.get_run(run_id).data.tags
    fitted = dict(summary.get("params") or request.params)
    return Recorded(request=request, fitted_params=fitted, commit=tags.get(lineage.TAG_GIT_COMMIT), run_id=run_id)


def _artifact_json(client: MlflowClient, run_id: str, path: str) -> Any:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="reproduce_") as tmp:
        return json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text(encoding="utf-8"))


def _check_code(recorded: Recorded, outcome: Reproduction, specs_dir: Path | None,
                allow_code_drift: bool) -> ModelSpec:
    """The recorded commit and spec, or (allow_code_drift) the current spec with the drift noted."""
    from airflow_mlops import config
    from airflow_mlops.core.spec import load_specs, spec_sha256

    current = lineage.git_commit(config.project_dir())
    outcome.current_commit = current
    drift: list[str] = []
    if recorded.commit != current:
        drift.append(f"code commit {current or '(none: not a git checkout)'} differs from the recorded "
                     f"{recorded.commit or '(none recorded)'}")
    specs = {spec.name: spec for spec in load_specs(specs_dir)}
    spec = specs.get(recorded.request.model_name)
    if spec is None:
        folder = specs_dir or config.models_dir()
        raise ReproduceRefused(f"no model spec named {recorded.request.model_name!r} in {folder} (specs: "
                               f"{sorted(specs)}); restore its spec file")
    wanted = recorded.request.spec_sha256
    if wanted and spec_sha256(spec) != wanted:
        drift.append(f"model spec {spec.source_file} hashes to {spec_sha256(spec)[:12]}, the version was trained "
                     f"from {wanted[:12]}")
    if drift and not allow_code_drift:
        where = f"check out {recorded.commit} (git checkout {recorded.commit})" if recorded.commit else \
            "restore the code and spec it was trained with"
        raise ReproduceRefused("; ".join(drift) + f"; {where}, or pass --allow-code-drift to retrain with the "
                               "current code and spec (the result is then recorded as code_drift)")
    outcome.code_drift = bool(drift)
    return spec


def rebuild_training_set(request: TrainingRequest, spec: ModelSpec, feast_hook: FeastHook) -> pd.DataFrame:
    """The recorded window's rows joined again; refused with what changed when the snapshot's sha256 differs."""
    import pandas as pd

    from airflow_mlops import config
    from airflow_mlops.core.feature_repo import feast_output_to_log
    from airflow_mlops.core.training_set import build_training_set, load_entity_df

    record = request.training_set
    if not record.get("start") or not record.get("end"):
        raise ReproduceRefused("the recorded training set has no time window (start/end); it cannot be rebuilt")
    feats = spec.features
    keys, ts_column, label = list(feats.entity_keys), feats.entity_df.timestamp_column, feats.label
    request_features = list(feats.entity_df.request_features)
    attributes = [str(c) for c in record.get("attributes") or []]  # the evaluation-only columns the snapshot held
    home = config.paths()
    entity = load_entity_df(home.dataset_dir(feats.entity_df.dataset), ts_column, spec.training.lookback_days,
                            [*keys, ts_column, label, *request_features, *attributes],
                            window=(record["start"], record["end"]))
    with feast_output_to_log():
        rebuilt = build_training_set(
            feast_hook.get_store(), feature_service=record.get("feature_service") or feats.feature_service,
            entity_df=entity, entity_keys=keys, timestamp_column=ts_column, label=label,
            request_features=request_features, out_dir=home.training_sets_dir / request.model_name,
            attributes=attributes,
        )
    if rebuilt["sha256"] != record["sha256"]:
        raise ReproduceRefused(describe_change(record, rebuilt))
    return pd.read_parquet(rebuilt["path"])


def describe_change(recorded: dict[str, Any], rebuilt: dict[str, Any]) -> str:
    """What differs between the recorded training set and the one the offline store gives now."""
    import pandas as pd

    found = [f"rows {recorded.get('rows')} -> {rebuilt['rows']}"] if recorded.get("rows") != rebuilt["rows"] else []
    old_cols, new_cols = list(recorded.get("columns") or []), list(rebuilt["columns"])
    if old_cols and old_cols != new_cols:
        found.append(f"columns only recorded {sorted(set(old_cols) - set(new_cols))}, only now "
                     f"{sorted(set(new_cols) - set(old_cols))}")
    for view, info in (recorded.get("feature_views") or {}).items():
        now = (rebuilt.get("feature_views") or {}).get(view, {})
        if info.get("spec_sha256") and info.get("spec_sha256") != now.get("spec_sha256"):
            found.append(f"feature view {view} definition changed (spec {info.get('spec_sha256')} -> "
                         f"{now.get('spec_sha256')})")
    old_path = Path(str(recorded.get("path", "")))
    if not found and old_path.is_file() and lineage.file_sha256(old_path) == recorded["sha256"]:
        before, after = pd.read_parquet(old_path), pd.read_parquet(rebuilt["path"])
        if before.shape == after.shape and list(before.columns) == list(after.columns):
            changed = {c: int((~((before[c] == after[c]) | (before[c].isna() & after[c].isna()))).sum())
                       for c in before.columns}
            found.append("cells changed per column " + json.dumps({c: n for c, n in changed.items() if n}))
    what = "; ".join(found) or "the same rows and columns with other values (the recorded snapshot is gone)"
    return (f"the training set rebuilt from the offline store differs from the recorded one: sha256 "
            f"{recorded['sha256'][:16]} recorded, {rebuilt['sha256'][:16]} now ({what}); window "
            f"{recorded.get('start')} .. {recorded.get('end')}. The offline store or the feature definitions changed "
            f"since the version was trained; rebuilt snapshot: {rebuilt['path']}")


def _compare(recorded: Recorded, frame: pd.DataFrame, model: str, version: str, mlflow_hook: MLflowHook,
             outcome: Reproduction) -> None:
    import mlflow.sklearn
    import numpy as np

    from airflow_mlops.core import training

    request = recorded.request
    result = training.train(
        frame, label=request.label, estimator=request.estimator, params=recorded.fitted_params,
        preprocessing=request.preprocessing, split_config=request.split, seed=request.seed,
        timestamp_column=request.timestamp_column, exclude=request.exclude_columns, task=request.task,
    )
    rows = training.holdout(frame, label=request.label, split_config=request.split, seed=request.seed,
                            timestamp_column=request.timestamp_column, task=request.task)
    x = rows[result.feature_columns].astype("float64")
    with mlflow_hook.activated():
        registered = mlflow.sklearn.load_model(f"models:/{model}/{version}")
    theirs, ours = (_predictions(pipeline, x, request.task) for pipeline in (registered, result.pipeline))
    outcome.rows = len(x)
    if theirs.shape != ours.shape:
        outcome.status, outcome.reason = "differs", f"prediction shapes differ: {theirs.shape} vs {ours.shape}"
        return
    outcome.max_abs_diff = float(np.nanmax(np.abs(theirs - ours))) if theirs.size else 0.0
    if theirs.tobytes() == ours.tobytes():
        outcome.status = "identical"
    elif outcome.tolerance is not None and outcome.max_abs_diff <= outcome.tolerance:
        outcome.status = "within_tolerance"
    else:
        outcome.status = "differs"
        what = "predicted value" if request.task == "regression" else "probability"
        outcome.reason = (f"max |{what} difference| {outcome.max_abs_diff:.3g} on {len(x)} held-out rows"
                          + (f" exceeds the tolerance {outcome.tolerance}" if outcome.tolerance is not None else
                             "; the estimator is not bitwise deterministic here: pass --tolerance to accept a bound"))


def _predictions(pipeline: Any, x: pd.DataFrame, task: str) -> np.ndarray:
    """What is compared: a classifier's whole probability matrix (every class), a regressor's values."""
    import numpy as np

    values = pipeline.predict(x) if task == "regression" else pipeline.predict_proba(x)
    return np.asarray(values, dtype="float64")


def _record(client: MlflowClient, outcome: Reproduction) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.set_model_version_tag(outcome.model, outcome.version, TAG_REPRODUCED, outcome.status)
        detail = json.dumps(asdict(outcome), sort_keys=True, default=str)
        client.set_model_version_tag(outcome.model, outcome.version, TAG_REPRODUCED_DETAIL, lineage.clip_tag(detail))
    except MlflowException as exc:  # no such version: nothing to tag, the refusal says why
        log.info("not tagging %s v%s: %s", outcome.model, outcome.version, exc)
