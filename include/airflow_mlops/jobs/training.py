"""The training job: a recorded training set -> a fitted pipeline logged to MLflow.

One function, `run_training_job`, used by both ways a model is trained:
- in-process by `SklearnTrainModelOperator` (operators/training.py), and
- in a Kubernetes pod by `airflow-mlops train-job --request JSON` (cli.py), started by
  `KubernetesTrainModelOperator` (operators/kubernetes.py).

The request carries the Airflow identity (dag_id, run_id, task_id, try_number) so the MLflow run
gets the same tags and name wherever it runs. pandas, sklearn and mlflow are imported inside
functions only: DAG files import this module through the operators.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from airflow_mlops.core import lineage
from airflow_mlops.exceptions import MLOpsError, TrainingFailed, TrainingSetError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from airflow_mlops.core.training import TrainResult
    from airflow_mlops.hooks.mlflow import MLflowHook

log = logging.getLogger(__name__)

# Explicit choice: MLflow 3's default "skops" format refuses to save tree models such as
# HistGradientBoostingClassifier unless every internal type is listed in skops_trusted_types.
# cloudpickle loads any estimator, and MLflow (3.17) gates loading of every sklearn format,
# skops included, behind MLFLOW_ALLOW_PICKLE_DESERIALIZATION anyway.
SERIALIZATION_FORMAT = "cloudpickle"
# ...so MLflow's warning against it on every save (mlflow.sklearn, WARNING) is dropped while we log.
_CLOUDPICKLE_WARNING = "Saving scikit-learn models in the pickle or cloudpickle format"
MODEL_ARTIFACT = "model"
REQUEST_ARTIFACT = "training/request.json"
SUMMARY_ARTIFACT = "training/summary.json"

_METRIC_KEY = re.compile(r"[\w\-. /]+")  # what MLflow accepts in a metric name

# Request key -> MLflow run tag of the Airflow identity (see core.lineage.airflow_context_tags).
IDENTITY_TAGS = {
    "dag_id": lineage.TAG_DAG_ID,
    "run_id": lineage.TAG_RUN_ID,
    "task_id": lineage.TAG_TASK_ID,
    "try_number": lineage.TAG_TRY_NUMBER,
    "logical_date": lineage.TAG_LOGICAL_DATE,
}


class _DropCloudpickleWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_CLOUDPICKLE_WARNING)


@contextlib.contextmanager
def _cloudpickle_chosen() -> Iterator[None]:
    """While our model is logged, without MLflow's warning about the format we chose on purpose (above)."""
    target = logging.getLogger("mlflow.sklearn")
    dropper = _DropCloudpickleWarning()
    target.addFilter(dropper)
    try:
        yield
    finally:
        target.removeFilter(dropper)


def _default_preprocessing() -> dict[str, Any]:
    return {"impute": "median", "scale": False}


def _default_split() -> dict[str, Any]:
    return {"method": "time", "test_size": 0.2}


@dataclass(frozen=True)
class TrainingRequest:
    """Everything one training run needs, as JSON-able values (the `train-job --request` payload).

    :param training_set: the lineage dict of the training-set task, logged as recorded.
    :param exclude_columns: columns never used as model inputs (entity keys); the training set's `attributes`
        (evaluation-only columns, `features.entity_df.attributes`) are always added to them.
    :param airflow: Airflow identity {dag_id, run_id, task_id, try_number, logical_date}; empty
        for an ad-hoc run (then no orphaned runs are looked for).
    :param git_commit: commit of the project that asked for the run; None = read it from the
        project checkout where the job runs (absent in a container image).
    :param snapshot: where to read the snapshot, relative to MLOPS_HOME (a pod mounts the state
        volume elsewhere than the worker); None = the lineage's own path.
    :param spec_sha256: content hash of the model spec the task was built from (`core.spec.spec_sha256`);
        part of the training fingerprint. None when the task was built without a spec.
    :param search: the resolved `training.search` (`ModelSpec.search_config()`); None = fit `params` as given.
    :param task: the spec's task (binary | multiclass | regression); a request written before tasks existed is binary.
    :param primary_metric: the spec's `evaluation.primary_metric`, the scorer of the permutation importance logged
        with the run (core/explanations.py); None = the task's default primary metric.
    :param explanations: the spec's `evaluation.explanations` ({method, max_rows, repeats}); None = permutation
        importance with core/explanations.py's defaults.
    """

    model_name: str
    training_set: dict[str, Any]
    estimator: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=_default_preprocessing)
    split: dict[str, Any] = field(default_factory=_default_split)
    seed: int = 7
    timestamp_column: str = "event_timestamp"
    exclude_columns: list[str] = field(default_factory=list)
    airflow: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    snapshot: str | None = None
    spec_sha256: str | None = None
    search: dict[str, Any] | None = None
    task: str = "binary"
    primary_metric: str | None = None
    explanations: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # The training set's evaluation-only attributes (features.entity_df.attributes) are never model inputs,
        # whoever wrote the request: the snapshot's own lineage says which columns they are.
        attributes = [str(c) for c in self.training_set.get("attributes") or []]
        if attributes:
            object.__setattr__(self, "exclude_columns", list(dict.fromkeys([*self.exclude_columns, *attributes])))

    def to_json(self) -> str:
        # default=str: lineage start/end may be datetimes when the lineage was passed in-process
        return json.dumps(asdict(self), sort_keys=True, default=str, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> TrainingRequest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MLOpsError(
                f"training request: not valid JSON ({exc}); pass the JSON object built by "
                "KubernetesTrainModelOperator, or @path/to/request.json"
            ) from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> TrainingRequest:
        """Validate keys and shapes; an error names the key, the rule and the keys allowed."""
        if not isinstance(data, Mapping):
            raise MLOpsError(f"training request: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        required = {"model_name", "training_set", "estimator", "label"}
        unknown, missing = sorted(set(data) - known), sorted(required - set(data))
        if unknown or missing:
            raise MLOpsError(
                f"training request: unknown keys {unknown}, missing keys {missing}; "
                f"allowed keys are {sorted(known)} ({sorted(required)} required)"
            )
        for key in ("params", "preprocessing", "split", "airflow", "search"):
            if data.get(key) is not None and not isinstance(data[key], Mapping):
                raise MLOpsError(f"training request: {key} must be an object, got {data[key]!r}")
        values = dict(data)
        values["training_set"] = lineage.normalize_lineage(data["training_set"])
        values["airflow"] = {str(k): str(v) for k, v in dict(data.get("airflow") or {}).items()}
        values["exclude_columns"] = [str(c) for c in data.get("exclude_columns") or []]
        return cls(**values)

    @property
    def run_name(self) -> str:
        run_id, try_number = self.airflow.get("run_id"), self.airflow.get("try_number")
        if not run_id:
            return f"{self.model_name}-adhoc"
        return f"{self.model_name}-{run_id}" + (f"-try{try_number}" if try_number else "")


def airflow_identity(context: Mapping[str, Any]) -> dict[str, str]:
    """{dag_id, run_id, task_id, try_number, logical_date} of a task context (missing ones left out)."""
    tags = lineage.airflow_context_tags(context)
    return {key: tags[tag] for key, tag in IDENTITY_TAGS.items() if tag in tags}


def relative_snapshot(path: str | Path, home: Path) -> str:
    """The snapshot path relative to MLOPS_HOME `home`, as a pod resolves it under its own mount.

    Raises TrainingSetError when the snapshot lies outside MLOPS_HOME: a pod sees only the state volume.
    """
    target = Path(path)
    resolved = target.resolve() if target.is_absolute() else (home / target).resolve()
    try:
        return PurePosixPath(resolved.relative_to(home.resolve())).as_posix()
    except ValueError:
        raise TrainingSetError(
            f"training set snapshot {path} is outside MLOPS_HOME ({home}); a training pod sees only the state "
            "volume mounted as its MLOPS_HOME (spec training.compute.kubernetes.state_volume_claim); write "
            "training sets under MLOPS_HOME (the default) or point MLOPS_HOME at the shared volume"
        ) from None


def run_training_job(request: TrainingRequest, hook: MLflowHook) -> dict[str, Any]:
    """Train and log one model; returns {"run_id", "model_uri", "metrics", "experiment_id"}.

    The run lands in the MLflow experiment named `model_name`, with params, validation metrics,
    lineage tags, the lineage JSON as an artifact and the model (signature, input example, pinned
    pip requirements). A failed run ends FAILED; runs an earlier killed try left RUNNING end KILLED.
    """
    import pandas as pd

    from airflow_mlops.core import training

    record = request.training_set
    _check_explainer(request)  # a spec asking for SHAP where it is not installed fails before anything is written
    hook.check_backend()  # fail in seconds, before spending minutes on training
    frame = pd.read_parquet(_verified_snapshot(request))
    log.info(
        "Training %s on %s rows x %s columns from %s", request.estimator, len(frame), frame.shape[1], record["path"]
    )
    result = training.train(
        frame,
        label=request.label,
        estimator=request.estimator,
        params=request.params,
        preprocessing=request.preprocessing,
        split_config=request.split,
        seed=request.seed,
        timestamp_column=request.timestamp_column,
        exclude=request.exclude_columns,
        search=request.search,
        task=request.task,
    )
    log.info("Validation metrics (%s rows): %s", result.validation_rows, result.metrics)
    explanation = explain_version(request, result)
    experiment_id = hook.experiment_id(request.model_name)
    tags = run_tags(request)
    with hook.activated() as client, _cloudpickle_chosen():
        end_orphaned_runs(client, experiment_id, tags)
        run_id, model_uri = _log_run(request, experiment_id, tags, result, explanation)
    log.info("Logged run %s with model %s in experiment %s", run_id, model_uri, experiment_id)
    return {"run_id": run_id, "model_uri": model_uri, "metrics": result.metrics, "experiment_id": experiment_id}


def explain_version(request: TrainingRequest, result: TrainResult) -> dict[str, Any] | None:
    """Permutation importance of the fitted pipeline on (a seeded sample of) its held-out rows, with the seconds it
    took under "seconds"; None, with a warning, when it cannot be computed: a version is never lost to its
    explanation (the model page and card then say it has none)."""
    import time

    from airflow_mlops.core.explanations import held_out_importance
    from airflow_mlops.core.tasks import DEFAULT_PRIMARY

    if result.held_out is None:
        return None
    metric = request.primary_metric or DEFAULT_PRIMARY[request.task]
    started = time.perf_counter()
    try:
        found = held_out_importance(result.pipeline, *result.held_out, metric=metric, seed=request.seed,
                                    **(request.explanations or {}))
    except Exception as exc:  # noqa: BLE001 - an explanation failure must not fail the training run
        log.warning("No global importance for this version (%s: %s); it is trained and logged without one",
                    type(exc).__name__, exc)
        return None
    seconds = time.perf_counter() - started
    top = ", ".join(f"{f['feature']} {f['importance']:.4g}" for f in found["features"][:3])
    log.info("Permutation importance (%s, %s of %s held-out rows) in %.2fs; top: %s", found["scoring"],
             found["rows"], found["held_out_rows"], seconds, top)
    return {**found, "seconds": seconds}


def _check_explainer(request: TrainingRequest) -> None:
    import importlib.util

    method = (request.explanations or {}).get("method", "permutation")
    if method == "shap" and importlib.util.find_spec("shap") is None:
        raise TrainingFailed(
            f"{request.model_name}: evaluation.explanations.method is 'shap', but the `shap` package is not "
            "installed where training runs; `pip install shap` in that environment (worker or training image), "
            "or set method: permutation")


def _verified_snapshot(request: TrainingRequest) -> Path:
    if request.snapshot is None:
        return lineage.verify_snapshot(request.training_set)
    from airflow_mlops import config

    home = config.mlops_home()
    path = home / request.snapshot
    if not path.is_file():
        raise TrainingSetError(
            f"training set snapshot {request.snapshot} not found under MLOPS_HOME={home} (recorded at "
            f"{request.training_set['path']}); mount the volume the training-set task wrote to as MLOPS_HOME "
            "(spec training.compute.kubernetes.state_volume_claim)"
        )
    return lineage.verify_snapshot({**request.training_set, "path": str(path)})


def run_tags(request: TrainingRequest) -> dict[str, str]:
    """Model name, training-set lineage, Airflow identity, git commit, spec hash and fingerprint as run tags."""
    from airflow_mlops import config

    tags = {lineage.TAG_MODEL_NAME: request.model_name, lineage.TAG_TASK: request.task,
            **lineage.training_set_tags(request.training_set)}
    tags.update({IDENTITY_TAGS[key]: value for key, value in request.airflow.items() if key in IDENTITY_TAGS})
    commit = request.git_commit or lineage.git_commit(config.project_dir())
    if commit:
        tags[lineage.TAG_GIT_COMMIT] = commit
    if request.spec_sha256:
        tags[lineage.TAG_SPEC_SHA256] = request.spec_sha256
    fingerprint = lineage.training_fingerprint(
        training_set_sha256=request.training_set.get("sha256"), spec_sha256=request.spec_sha256,
        git_commit=commit, estimator=estimator_config(request),
    )
    if fingerprint:
        tags[lineage.TAG_FINGERPRINT] = fingerprint
    else:
        log.warning("No training fingerprint (no git commit of the project found): the register task will "
                    "register this run as a new version even if an identical one exists")
    return tags


def estimator_config(request: TrainingRequest) -> dict[str, Any]:
    """The estimator, its params and every other argument that changes the fitted model (fingerprint input).

    `search` joins only when set and `task` only when not binary, so a run without them keeps the fingerprint it
    always had."""
    config = {
        "estimator": request.estimator,
        "params": request.params,
        "preprocessing": request.preprocessing,
        "split": request.split,
        "seed": request.seed,
        "label": request.label,
        "timestamp_column": request.timestamp_column,
        "exclude_columns": sorted(request.exclude_columns),
    }
    if request.search:
        config["search"] = request.search
    if request.task != "binary":
        config["task"] = request.task
    return config


def end_orphaned_runs(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> None:
    """A try killed without cleanup (OOM, SIGKILL) leaves its run RUNNING; mark it KILLED."""
    keys = (lineage.TAG_DAG_ID, lineage.TAG_RUN_ID, lineage.TAG_TASK_ID)
    if not all(tags.get(key) for key in keys) or any("'" in tags[key] for key in keys):
        return  # no Airflow identity to match on (ad-hoc execute) or unquotable value
    clauses = [f"tags.`{key}` = '{tags[key]}'" for key in keys]
    filter_string = " and ".join([*clauses, "attributes.status = 'RUNNING'"])
    for run in client.search_runs([experiment_id], filter_string=filter_string, max_results=50):
        log.warning("Ending run %s left RUNNING by an earlier try as KILLED", run.info.run_id)
        client.set_terminated(run.info.run_id, status="KILLED")


def flat_params(request: TrainingRequest, result: TrainResult) -> dict[str, Any]:
    flat: dict[str, Any] = {
        "estimator": request.estimator,
        "seed": request.seed,
        "label": request.label,
        "task": request.task,
        "n_features": len(result.feature_columns),
    }
    # the arguments fitted: training.params plus, with a search, the best candidate's
    flat.update({f"params.{key}": value for key, value in result.params.items()})
    if request.search and result.search:
        flat.update({"search.method": result.search.method, "search.metric": result.search.metric,
                     "search.cv": result.search.cv, "search.folds": result.search.folds,
                     "search.evaluated": len(result.search.candidates), "search.planned": result.search.planned,
                     "search.stopped_by_budget": result.search.stopped_by_budget})
    flat.update({f"preprocessing.{key}": value for key, value in request.preprocessing.items()})
    flat.update({f"split.{key}": value for key, value in result.split.items()})
    return flat


def _log_run(
    request: TrainingRequest, experiment_id: str, tags: dict[str, str], result: TrainResult,
    explanation: dict[str, Any] | None = None,
) -> tuple[str, str]:
    import mlflow
    import mlflow.sklearn

    from airflow_mlops.core.training import FEATURE_PROFILE_ARTIFACT, TAG_FEATURE_PROFILE, model_requirements

    sample = result.sample
    # The context manager ends the run FAILED on any exception (incl. Airflow timeouts).
    with mlflow.start_run(experiment_id=experiment_id, run_name=request.run_name, tags=tags) as run, \
            warnings.catch_warnings():
        # MLflow hints that `long` columns cannot take missing values: the signature follows the training set's
        # types on purpose (int64 frames pass mlflow.pyfunc), and docs/serving.md says what a null there does
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
        signature, predict_fn = model_signature(result)  # infers the input schema: inside the filter above
        mlflow.log_params(flat_params(request, result))
        info = mlflow.sklearn.log_model(
            result.pipeline,
            name=MODEL_ARTIFACT,
            serialization_format=SERIALIZATION_FORMAT,
            signature=signature,
            input_example=sample,
            pyfunc_predict_fn=predict_fn,
            pip_requirements=model_requirements(request.estimator),
            metadata={"feature_columns": result.feature_columns, "label": request.label, "task": result.task,
                      **({"classes": result.classes} if result.classes is not None else {})},
        )
        if result.classes is not None:  # the probability columns' labels, in order (serving reads them)
            mlflow.set_tag(lineage.TAG_CLASSES, json.dumps(result.classes))
        timings = {
            "fit_seconds": result.fit_seconds,
            "train_rows": result.train_rows,
            "validation_rows": result.validation_rows,
        }
        mlflow.log_metrics({**result.metrics, **timings}, model_id=info.model_id)
        mlflow.log_dict(json.loads(json.dumps(dict(request.training_set), default=str)), "training_set/lineage.json")
        mlflow.log_dict(result.summary(), SUMMARY_ARTIFACT)
        # the request as the job got it: `airflow-mlops reproduce` retrains a version from it (jobs/reproduce.py)
        mlflow.log_dict(json.loads(request.to_json()), REQUEST_ARTIFACT)
        if result.search:
            _log_candidates(request, experiment_id, run.info.run_id, result)
        if result.feature_profile:  # serving.validate_ranges refuses inputs far outside it
            mlflow.log_dict(result.feature_profile, FEATURE_PROFILE_ARTIFACT)
            mlflow.set_tag(TAG_FEATURE_PROFILE, FEATURE_PROFILE_ARTIFACT)
        if explanation:
            _log_explanation(explanation)
    return run.info.run_id, info.model_uri


def _log_explanation(explanation: Mapping[str, Any]) -> None:
    """The global importance as a JSON artifact (found through a run tag: the model page and card read it), its
    cost as a metric, and each feature's importance as a metric `importance.<feature>` (compared across runs)."""
    import mlflow

    from airflow_mlops.core.explanations import IMPORTANCE_ARTIFACT, TAG_IMPORTANCE

    seconds = explanation.get("seconds")
    mlflow.log_dict({k: v for k, v in explanation.items() if k != "seconds"}, IMPORTANCE_ARTIFACT)
    mlflow.set_tag(TAG_IMPORTANCE, IMPORTANCE_ARTIFACT)
    metrics = {f"importance.{f['feature']}": f["importance"] for f in explanation["features"]
               if _METRIC_KEY.fullmatch(str(f["feature"]))}  # a name MLflow refuses as a key: in the artifact only
    mlflow.log_metrics({**metrics, **({"explain_seconds": seconds} if seconds is not None else {})})


def model_signature(result: TrainResult) -> tuple[Any, str]:
    """The logged model's MLflow signature and pyfunc predict_fn, per task (what `mlflow models serve`, mlflow.pyfunc
    and the serving app's /invocations answer for the version):

    - binary: `predict_proba`, output a float64 tensor (-1, 2): [[p0, p1], ...] (as before tasks existed);
    - multiclass: `predict_proba`, output one double column per class, named by the class label, in the order of
      the estimator's `classes_` (also the run/version tag `airflow_mlops.classes`); the predicted class is the
      column with the highest probability;
    - regression: `predict`, output a float64 tensor (-1,): the predicted values.
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    sample, pipeline = result.sample, result.pipeline
    if result.task == "regression":
        return infer_signature(sample, pipeline.predict(sample).astype("float64")), "predict"
    if result.task == "multiclass":
        outputs = Schema([ColSpec("double", str(label)) for label in result.classes or []])
        return ModelSignature(inputs=infer_signature(sample).inputs, outputs=outputs), "predict_proba"
    return infer_signature(sample, pipeline.predict_proba(sample)), "predict_proba"


def _log_candidates(request: TrainingRequest, experiment_id: str, parent_run_id: str, result: TrainResult) -> None:
    """Every search candidate as a FINISHED child run of the training run: its params and CV score.

    Child runs carry the model-name tag and MLflow's parent tag but no Airflow identity, so nothing that looks
    up a task's run (orphan clean-up, register) can take a candidate for the training run.
    """
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from airflow_mlops.core.search import metric_value

    outcome = result.search
    assert outcome is not None
    metric = outcome.metric
    for index, candidate in enumerate(outcome.candidates, start=1):
        tags = {MLFLOW_PARENT_RUN_ID: parent_run_id, lineage.TAG_MODEL_NAME: request.model_name,
                "airflow_mlops.search.candidate": str(index)}
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{request.run_name}-candidate-{index}",
                              nested=True, tags=tags):
            mlflow.log_params({**{f"params.{k}": v for k, v in candidate.params.items()},
                               "estimator": request.estimator, "search.method": outcome.method})
            fold_values = [metric_value(score, metric) for score in candidate.fold_scores]
            mlflow.log_metrics({
                f"cv_{metric}_mean": metric_value(candidate.mean_score, metric),
                f"cv_{metric}_std": candidate.std_score,
                "cv_rank": candidate.rank,
                "cv_fit_seconds": candidate.fit_seconds,
                **{f"cv_{metric}_fold{i}": value for i, value in enumerate(fold_values)},
            })
