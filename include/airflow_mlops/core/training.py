"""Training core: build a scikit-learn pipeline from a spec, split, fit and score it.

Pure functions, no Airflow or MLflow: the training operator reads the snapshot, calls `train()`
and logs the result. Errors name the spec field to fix (`training.estimator`, `training.params`,
`training.preprocessing.impute`, `training.split.method`, ...). numpy/pandas/sklearn are imported
inside functions so importing this module stays cheap for DAG parsing.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.metrics import DECISION_THRESHOLD, compute_metrics, per_class_recall, plain_labels
from airflow_mlops.exceptions import TrainingFailed

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from airflow_mlops.core.search import SearchOutcome

__all__ = ["DECISION_THRESHOLD", "TrainResult", "build_pipeline", "compute_metrics", "holdout", "make_estimator",
           "predict", "train"]

log = logging.getLogger(__name__)

IMPUTE_STRATEGIES = ("median", "mean", "most_frequent", "none")
SPLIT_METHODS = ("time", "random")
DEFAULT_PREPROCESSING: dict[str, Any] = {"impute": "median", "scale": False}
DEFAULT_SPLIT: dict[str, Any] = {"method": "time", "test_size": 0.2}
EXAMPLE = "sklearn.ensemble.HistGradientBoostingClassifier"
EXAMPLES = {"binary": EXAMPLE, "multiclass": EXAMPLE, "regression": "sklearn.ensemble.HistGradientBoostingRegressor"}
# What a task's estimator must be, as scikit-learn's estimator tags say it (`estimator_type`).
ESTIMATOR_TYPE = {"binary": "classifier", "multiclass": "classifier", "regression": "regressor"}
# The training-set profile (per feature: min, max, median, missing) logged with every run; serving reads it
# through the run tag for `serving.validate_ranges` (min/max) and `/predict?explain=true` (median: the baseline).
FEATURE_PROFILE_ARTIFACT = "training/feature_profile.json"
TAG_FEATURE_PROFILE = "airflow_mlops.feature_profile"


@dataclass
class TrainResult:
    """A fitted pipeline, its validation metrics and what it was trained on."""

    pipeline: Pipeline
    metrics: dict[str, float]
    feature_columns: list[str]
    train_rows: int
    validation_rows: int
    fit_seconds: float
    total_seconds: float
    split: dict[str, Any] = field(default_factory=dict)
    sample: pd.DataFrame | None = None  # a few feature rows, own dtypes: MLflow signature and input example
    feature_profile: dict[str, Any] = field(default_factory=dict)  # see feature_profile()
    params: dict[str, Any] = field(default_factory=dict)  # the estimator arguments fitted: training.params + searched
    search: SearchOutcome | None = None  # training.search's candidates, when the spec asks for a search
    task: str = "binary"
    classes: list[Any] | None = None  # a classifier's labels in its probability columns' order (`classes_`)
    per_class_recall: dict[str, float | None] | None = None  # multiclass: recall of each class on validation
    # (features, labels) of the validation rows as the estimator got them: the training job explains the version
    # on them (core/explanations.py); not part of summary()
    held_out: tuple[pd.DataFrame, pd.Series] | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-able description (no pipeline, no data) for logs and artifacts."""
        return {
            "metrics": self.metrics,
            "feature_columns": self.feature_columns,
            "train_rows": self.train_rows,
            "validation_rows": self.validation_rows,
            "fit_seconds": round(self.fit_seconds, 4),
            "total_seconds": round(self.total_seconds, 4),
            "split": self.split,
            "params": self.params,
            **({"search": self.search.summary()} if self.search else {}),
            **({"task": self.task} if self.task != "binary" else {}),
            **({"classes": self.classes} if self.task == "multiclass" else {}),
            **({"per_class_recall": self.per_class_recall} if self.per_class_recall is not None else {}),
        }


def load_estimator_class(estimator_path: str) -> type:
    """Import `package.module.Class`; TrainingFailed names `training.estimator` when that fails."""
    module_name, _, class_name = estimator_path.rpartition(".")
    if not module_name:
        raise TrainingFailed(f"training.estimator: {estimator_path!r} is not a dotted import path; use e.g. {EXAMPLE}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TrainingFailed(
            f"training.estimator: cannot import module {module_name!r} of {estimator_path!r} ({exc}); "
            f"fix the path or install the package that provides it; e.g. {EXAMPLE}"
        ) from exc
    cls = getattr(module, class_name, None)
    if not inspect.isclass(cls):
        raise TrainingFailed(
            f"training.estimator: {estimator_path!r}: module {module_name!r} has no class {class_name!r}; "
            f"check the spelling, e.g. {EXAMPLE}"
        )
    return cls


def make_estimator(estimator_path: str, params: Mapping[str, Any] | None, seed: int, task: str = "binary") -> Any:
    """The estimator instance, checked to fit the task (a probabilistic classifier, or a regressor), seeded
    when it can be."""
    cls = load_estimator_class(estimator_path)
    params = dict(params or {})
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise TrainingFailed(
            f"training.params: {estimator_path} does not accept {sorted(params)} ({exc}); "
            f"use only constructor arguments of {cls.__name__}"
        ) from exc
    check_estimator_kind(estimator, estimator_path, task, params)
    # An explicit random_state in training.params wins; otherwise the spec seed makes runs repeatable.
    if "random_state" in estimator.get_params(deep=False) and "random_state" not in params:
        estimator.set_params(random_state=seed)
    return estimator


def estimator_type(estimator: Any) -> str | None:
    """"classifier", "regressor", ... as the estimator's scikit-learn tags say; None without tags."""
    from sklearn.utils import get_tags

    try:
        kind: str | None = get_tags(estimator).estimator_type
        return kind
    except AttributeError:  # no __sklearn_tags__: not usable inside a scikit-learn Pipeline (1.6+)
        return None


def check_estimator_kind(estimator: Any, estimator_path: str, task: str, params: Mapping[str, Any] | None = None
                         ) -> None:
    """TrainingFailed naming `training.estimator` and the task unless the estimator can do the task.

    Any class with the scikit-learn estimator API works (LightGBM's and XGBoost's sklearn wrappers, a class
    of one's own): what scikit-learn's Pipeline needs is `fit`, `get_params`/`set_params` and the estimator
    tags (`__sklearn_tags__`, inherited from `sklearn.base.BaseEstimator`) that say what it is."""
    wanted = ESTIMATOR_TYPE[task]
    kind = estimator_type(estimator)
    example = EXAMPLES[task]
    if kind is None:
        raise TrainingFailed(
            f"training.estimator: {estimator_path} has no scikit-learn estimator tags (__sklearn_tags__), which "
            f"scikit-learn's Pipeline needs of every step since 1.6; subclass sklearn.base.BaseEstimator (with "
            f"ClassifierMixin or RegressorMixin), or install a version of its package made for scikit-learn "
            f">= 1.6; e.g. {example}")
    if kind != wanted:
        raise TrainingFailed(
            f"training.estimator: {estimator_path} is a {kind}, but the spec's task is {task}, which needs a "
            f"{wanted}; pick one such as {example}, or fix `task` (or the label contract it was decided from)")
    if wanted == "classifier" and not hasattr(estimator, "predict_proba"):
        raise TrainingFailed(
            f"training.estimator: {estimator_path} has no predict_proba with params {dict(params or {})}; "
            f"{task} metrics (log_loss{', ROC AUC' if task == 'binary' else ''}) and the champion comparison "
            "need probabilities (for SVC set training.params.probability: true)"
        )


def build_pipeline(
    estimator_path: str,
    params: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    seed: int = 7,
    task: str = "binary",
) -> Pipeline:
    """impute (unless "none") -> optional StandardScaler -> estimator, as one sklearn Pipeline."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    prep = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    unknown = sorted(set(prep) - set(DEFAULT_PREPROCESSING))
    if unknown:
        raise TrainingFailed(
            f"training.preprocessing: unknown keys {unknown}; allowed: {sorted(DEFAULT_PREPROCESSING)}"
        )
    impute = prep["impute"]
    if impute not in IMPUTE_STRATEGIES:
        raise TrainingFailed(f"training.preprocessing.impute: got {impute!r}; allowed: {list(IMPUTE_STRATEGIES)}")
    steps: list[tuple[str, Any]] = []
    if impute != "none":
        # keep_empty_features: a column that is all-missing in one window must not change the
        # model's input width (serving always sends every feature column).
        steps.append(("impute", SimpleImputer(strategy=impute, keep_empty_features=True)))
    if prep["scale"]:
        steps.append(("scale", StandardScaler()))
    steps.append(("estimator", make_estimator(estimator_path, params, seed, task)))
    return Pipeline(steps)


def feature_columns(frame: pd.DataFrame, exclude: Iterable[str] = ()) -> list[str]:
    """Numeric columns in frame order, minus `exclude` (entity keys, timestamp, label)."""
    import pandas as pd

    skip = set(exclude)
    columns = [c for c in frame.columns if c not in skip]
    numeric = [
        c for c in columns if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]
    numeric += [c for c in columns if pd.api.types.is_bool_dtype(frame[c])]
    ignored = [c for c in columns if c not in numeric]
    if ignored:
        log.info("Ignoring non-numeric columns %s (only numeric features are used)", ignored)
    ordered = [c for c in columns if c in numeric]
    if not ordered:
        raise TrainingFailed(
            f"training set has no numeric feature columns after excluding {sorted(skip)}; columns were "
            f"{list(frame.columns)}; check features.feature_service and entity_df.request_features"
        )
    return ordered


def split(
    frame: pd.DataFrame,
    method: str = "time",
    test_size: float = 0.2,
    timestamp_column: str = "event_timestamp",
    seed: int = 7,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation). "time": the newest `test_size` share by timestamp is validation, rows
    sharing the cut-off timestamp all go to validation (no same-instant leakage); "random": seeded."""
    import numpy as np

    if method not in SPLIT_METHODS:
        raise TrainingFailed(f"training.split.method: got {method!r}; allowed: {list(SPLIT_METHODS)}")
    if not 0.0 < float(test_size) < 1.0:
        raise TrainingFailed(f"training.split.test_size: got {test_size!r}; must be between 0 and 1, e.g. 0.2")
    if method == "random":
        order = np.random.default_rng(seed).permutation(len(frame))
        cut = len(frame) - int(round(len(frame) * test_size))
        return frame.iloc[np.sort(order[:cut])], frame.iloc[np.sort(order[cut:])]
    if timestamp_column not in frame.columns:
        raise TrainingFailed(
            f"features.entity_df.timestamp_column: {timestamp_column!r} is not a column of the training set "
            f"{list(frame.columns)}; a time split needs it (or set training.split.method: random)"
        )
    ordered = frame.sort_values(timestamp_column, kind="mergesort")
    position = min(len(ordered) - 1, max(0, len(ordered) - int(round(len(ordered) * test_size))))
    cutoff = ordered[timestamp_column].iloc[position]
    before = ordered[timestamp_column] < cutoff
    return ordered[before], ordered[~before]


def _labelled_rows(frame: pd.DataFrame, label: str, task: str = "binary") -> pd.DataFrame:
    """Rows that have a label, after checking the label fits the task (`check_label`)."""
    if label not in frame.columns:
        raise TrainingFailed(f"features.label: {label!r} is not a column of the training set {list(frame.columns)}")
    values = frame[label]
    check_label(values.dropna(), label, task)
    unlabelled = int(values.isna().sum())
    if unlabelled:
        log.info("Dropping %s rows without a %s label", unlabelled, label)
    return frame[values.notna()]


def check_label(values: pd.Series, label: str, task: str) -> None:
    """TrainingFailed naming the column, the task and the fix unless the (non-missing) label values fit the task:
    binary 0/1 (True/False); multiclass at least 3 classes of one kind (numbers or text); regression finite
    numbers."""
    present = values.unique().tolist()
    shown = sorted(map(str, present))[:5]
    if task == "binary":
        if not set(present) <= {0, 1}:  # True/False hash as 1/0
            raise TrainingFailed(f"features.label: {label!r} must be binary 0/1 under task binary, found values "
                                 f"{shown}{_other_task_hint(values)}")
    elif task == "multiclass":
        _check_multiclass_label(present, label, shown)
    else:
        _check_regression_label(values, label, shown)


def _check_multiclass_label(present: list[Any], label: str, shown: list[str]) -> None:
    import numbers

    if len(present) < 3:
        raise TrainingFailed(
            f"features.label: {label!r} has {len(present)} distinct value(s) {shown}; task multiclass needs at "
            "least 3 classes (two classes: set task: binary with 0/1 labels)")
    kinds = {"number" if isinstance(v, numbers.Number) and not isinstance(v, bool) else type(v).__name__
             for v in present}
    if len(kinds) > 1:
        raise TrainingFailed(f"features.label: {label!r} mixes label types {sorted(kinds)} ({shown}); "
                             "multiclass labels must all be numbers or all text")


def _check_regression_label(values: pd.Series, label: str, shown: list[str]) -> None:
    import numpy as np
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise TrainingFailed(f"features.label: {label!r} has dtype {values.dtype} ({shown}); task regression "
                             "needs numbers (a class label: set task: multiclass or binary)")
    bad = int((~np.isfinite(values.to_numpy(dtype="float64"))).sum())
    if bad:
        raise TrainingFailed(f"features.label: {label!r} holds {bad} infinite value(s); task regression needs "
                             "finite numbers: fix or drop those rows upstream")


def _other_task_hint(values: pd.Series) -> str:
    """What to set instead, when a binary label obviously is not one."""
    import pandas as pd

    distinct = values.nunique()
    if pd.api.types.is_float_dtype(values) and distinct > 20:
        return f" ({distinct} distinct numbers: set task: regression)"
    if distinct >= 3:
        return f" ({distinct} classes: set task: multiclass)"
    return " (recode the label to 0/1)"


def _fit(pipeline: Pipeline, x: pd.DataFrame, y: pd.Series, estimator_path: str) -> float:
    """Fit and return seconds; parameter errors raised at fit time name `training.params`."""
    from sklearn.utils._param_validation import InvalidParameterError  # stable since sklearn 1.2

    started = time.perf_counter()
    try:
        pipeline.fit(x, y)
    except InvalidParameterError as exc:
        raise TrainingFailed(f"training.params: {estimator_path} rejected its parameters: {exc}") from exc
    except ValueError as exc:
        raise TrainingFailed(
            f"training: fitting {estimator_path} failed on {len(x)} rows: {exc}; "
            "check training.params and training.preprocessing (impute: none cannot handle missing values)"
        ) from exc
    return time.perf_counter() - started


def _check_features_present(x: pd.DataFrame) -> None:
    """A feature missing in every training row carries no signal and usually means a broken join."""
    empty = [c for c in x.columns if x[c].isna().all()]
    if empty:
        raise TrainingFailed(
            f"feature column(s) {empty} are missing (NaN) in all {len(x)} training rows; the feature view "
            "was probably not materialized for this window or its TTL is shorter than the gap to the label "
            "events; check `mlops_features` and the view's ttl, or drop the feature from the service"
        )


def _check_classes(y: pd.Series, part: str, task: str) -> None:
    if task == "regression":
        if y.nunique() < 2:
            raise TrainingFailed(
                f"the {part} set has {len(y)} rows whose label never varies; a regression needs varying values; "
                "widen training.lookback_days or change training.split.test_size")
        return
    if y.nunique() < 2:
        raise TrainingFailed(
            f"the {part} set has only label value(s) {sorted(y.unique().tolist())} in {len(y)} rows; "
            f"{'both classes are' if task == 'binary' else 'at least two classes are'} needed; widen "
            "training.lookback_days or change training.split.test_size"
        )


def _check_seen(y_train: pd.Series, y_valid: pd.Series) -> None:
    """Every validation class was seen in training: the model has no probability column for another one."""
    unseen = sorted(set(y_valid.unique().tolist()) - set(y_train.unique().tolist()), key=str)
    if unseen:
        raise TrainingFailed(
            f"classes {[str(c) for c in unseen]} occur in the validation rows ({int(y_valid.isin(unseen).sum())} "
            "rows) but never in the training rows, so the model cannot predict them; widen "
            "training.lookback_days (the class is new), or use training.split.method: random"
        )


def _labels(part: pd.DataFrame, label: str, task: str) -> pd.Series:
    """The label column as the estimator gets it: int 0/1, the classes as they are, or float64 values."""
    if task == "binary":
        return part[label].astype("int64")
    if task == "regression":
        return part[label].astype("float64")
    return part[label]


def predict(pipeline: Any, x: pd.DataFrame, task: str) -> np.ndarray:
    """What the task's metrics take (core.metrics): positive-class probabilities (binary), the probability matrix
    in `classes_` order (multiclass), predicted values (regression)."""
    import numpy as np

    if task == "binary":
        return np.asarray(pipeline.predict_proba(x))[:, 1]
    if task == "multiclass":
        return np.asarray(pipeline.predict_proba(x), dtype=float)
    return np.asarray(pipeline.predict(x), dtype=float)


def train(
    frame: pd.DataFrame,
    *,
    label: str,
    estimator: str,
    params: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    split_config: Mapping[str, Any] | None = None,
    seed: int = 7,
    timestamp_column: str = "event_timestamp",
    exclude: Iterable[str] = (),
    search: Mapping[str, Any] | None = None,
    task: str = "binary",
) -> TrainResult:
    """Split, (search,) fit, score on the validation part. Same frame + seed -> same metrics.

    `search` is a resolved `ModelSpec.search_config()`: its candidates are cross-validated on the training part
    only, and the best one's arguments join `params` for the final fit (see core/search.py).
    """
    started = time.perf_counter()
    pipeline = build_pipeline(estimator, params, preprocessing, seed, task)
    labelled = _labelled_rows(frame, label, task)
    columns = feature_columns(labelled, {label, timestamp_column, *exclude})
    cfg = {**DEFAULT_SPLIT, **(split_config or {})}
    train_part, valid_part = split(labelled, cfg["method"], cfg["test_size"], timestamp_column, seed)
    # float64 everywhere: one numeric type in the MLflow signature, so serving may send ints,
    # floats or nulls for any feature without schema-enforcement errors.
    x_train, x_valid = (part[columns].astype("float64") for part in (train_part, valid_part))
    y_train, y_valid = (_labels(part, label, task) for part in (train_part, valid_part))
    _check_classes(y_train, "training", task)
    _check_classes(y_valid, "validation", task)
    if task == "multiclass":
        _check_seen(y_train, y_valid)
    _check_features_present(x_train)
    fitted_params = dict(params or {})
    outcome = None
    if search:
        outcome = _search(pipeline, train_part, x_train, y_train, search, seed, estimator, timestamp_column, task)
        fitted_params.update(outcome.best_params)
        pipeline = build_pipeline(estimator, fitted_params, preprocessing, seed, task)
    fit_seconds = _fit(pipeline, x_train, y_train, estimator)
    scored = predict(pipeline, x_valid, task)
    classes = plain_labels(pipeline.classes_) if task != "regression" else None
    return TrainResult(
        pipeline=pipeline,
        metrics=compute_metrics(y_valid, scored, task=task, classes=classes),
        feature_columns=columns,
        train_rows=len(x_train),
        validation_rows=len(x_valid),
        fit_seconds=fit_seconds,
        total_seconds=time.perf_counter() - started,
        split={**cfg, **_split_bounds(valid_part, cfg["method"], timestamp_column)},
        # the training set's own column types (int64 stays long): the MLflow signature then takes the rows a
        # user has, as `mlflow.pyfunc` and `mlflow models serve` enforce it
        sample=train_part[columns].head(5).reset_index(drop=True),
        feature_profile=feature_profile(labelled, columns),  # the whole training set: both parts of the split
        params=fitted_params,
        search=outcome,
        task=task,
        classes=classes,
        per_class_recall=per_class_recall(y_valid, scored, classes) if task == "multiclass" and classes else None,
        held_out=(x_valid, y_valid),
    )


def _search(pipeline: Pipeline, train_part: pd.DataFrame, x_train: pd.DataFrame, y_train: pd.Series,
            config: Mapping[str, Any], seed: int, estimator: str, timestamp_column: str, task: str) -> SearchOutcome:
    """Cross-validate the space on the training part (time-ordered for time folds); log the best."""
    from airflow_mlops.core.search import metric_value, run_search

    timestamps = None
    if config["cv"] == "time":
        if timestamp_column not in train_part.columns:
            raise TrainingFailed(f"training.search.cv: time folds need the column {timestamp_column!r}, which the "
                                 f"training set lacks; use training.search.cv: kfold")
        order = train_part[timestamp_column].reset_index(drop=True).sort_values(kind="mergesort").index
        x_train, y_train = x_train.iloc[order], y_train.iloc[order]
        timestamps = train_part[timestamp_column].to_numpy()[order]
    outcome = run_search(pipeline, x_train, y_train, timestamps, config, seed=seed, estimator_path=estimator,
                         task=task)
    log.info("Search (%s, %s folds %s): best %s=%.4f with %s after %s of %s candidates in %.1fs",
             outcome.method, outcome.folds, outcome.cv, outcome.metric,
             metric_value(outcome.best_score, outcome.metric), outcome.best_params, len(outcome.candidates),
             outcome.planned if outcome.planned is not None else "?", outcome.seconds)
    return outcome


def feature_profile(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, Any]:
    """Per feature column of the training set: finite min, max and median (None when it has no finite value)
    and how many values are missing. Small and JSON-able: logged as FEATURE_PROFILE_ARTIFACT. The median is
    the baseline a served prediction is explained against (core/explanations.py `local_attributions`)."""
    import numpy as np

    profile: dict[str, dict[str, Any]] = {}
    for column in columns:
        values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
        finite = values[np.isfinite(values)]
        profile[column] = {"min": float(finite.min()) if finite.size else None,
                           "max": float(finite.max()) if finite.size else None,
                           "median": float(np.median(finite)) if finite.size else None,
                           "missing": int(np.isnan(values).sum())}
    return {"rows": len(frame), "columns": profile}


def _split_bounds(valid_part: pd.DataFrame, method: str, timestamp_column: str) -> dict[str, str]:
    if method != "time" or valid_part.empty:
        return {}
    return {"validation_from": str(valid_part[timestamp_column].min())}


def model_requirements(estimator_path: str) -> list[str]:
    """Pinned pip requirements of a logged model: scikit-learn, cloudpickle and the estimator's
    own distribution. Given explicitly, they spare MLflow's 10-16 s requirement inference."""
    from importlib import metadata

    dists = {"scikit-learn", "cloudpickle"}
    top = estimator_path.split(".", 1)[0]
    if top != "sklearn":
        dists.update(metadata.packages_distributions().get(top, []))
    pinned = []
    for dist in sorted(dists):
        try:
            pinned.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pinned.append(dist)
    return pinned


def holdout(
    frame: pd.DataFrame,
    *,
    label: str,
    split_config: Mapping[str, Any] | None = None,
    seed: int = 7,
    timestamp_column: str = "event_timestamp",
    task: str = "binary",
) -> pd.DataFrame:
    """The labelled validation rows `train()` scored on: the same split of the same snapshot.

    Evaluation scores the challenger AND the champion on exactly these rows, so both are judged
    on data neither was fitted on, taken at the same point in time.
    """
    cfg = {**DEFAULT_SPLIT, **(split_config or {})}
    labelled = _labelled_rows(frame, label, task)
    _, valid_part = split(labelled, cfg["method"], cfg["test_size"], timestamp_column, seed)
    return valid_part
