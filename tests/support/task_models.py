"""Small models of each task on generated data, registered the way the training DAG registers a version.

Stand-in for the training side of issue 19 until it trains multiclass and regression models itself:
`fit` trains a real sklearn Pipeline (imputer, scaler, estimator) on `frame(task, ...)`, `register`
logs it as jobs/training.py logs a model (mlflow.sklearn, cloudpickle, signature inferred from a sample
and the pyfunc's output, input example, pyfunc_predict_fn: predict_proba for classifiers, predict for
regressors) and registers a version with the agreed tags `airflow_mlops.task` and (classifiers)
`airflow_mlops.classes` (the estimator's classes_ order, JSON). Swap `fit`/`register` for the real
training job once it handles every task.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from airflow_mlops.core.predictions import TAG_CLASSES, TAG_TASK

# The demo's model input columns (request-time and online features of ride_completion_v1).
DEMO_COLUMNS = ("trip_distance_km", "surge_multiplier", "pickup_hour", "conv_rate", "acc_rate", "avg_daily_trips",
                "rating")
MULTICLASS = ("long", "medium", "short")  # text classes: V2 answers them as BYTES


def features(rows: int, seed: int, columns: tuple[str, ...] = DEMO_COLUMNS, shift: float = 0.0) -> pd.DataFrame:
    """Numeric features; `shift` moves the first two columns (drift)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 1.0, size=(rows, len(columns)))
    data[:, :2] += shift
    return pd.DataFrame(data, columns=list(columns))


def target(task: str, x: pd.DataFrame, seed: int, flip: bool = False) -> pd.Series:
    """The label of each row: a noisy function of the first two columns (`flip`: another rule)."""
    rng = np.random.default_rng(seed + 1)
    first, second = x.iloc[:, 0].to_numpy(), x.iloc[:, 1].to_numpy()
    signal = (second - first if flip else first + 0.5 * second) + rng.normal(0.0, 0.3, len(x))
    if task == "binary":
        return pd.Series((signal > 0).astype(int), name="label")
    if task == "multiclass":
        cuts = np.digitize(signal, [-0.5, 0.5])
        return pd.Series(np.asarray(MULTICLASS, dtype=object)[cuts], name="label")
    return pd.Series(10.0 + 3.0 * signal, name="label")


def fit(task: str, rows: int = 400, seed: int = 5, columns: tuple[str, ...] = DEMO_COLUMNS) -> Any:
    """A fitted Pipeline of `task` on generated rows (fitted on a DataFrame: feature_names_in_ is set)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x = features(rows, seed, columns)
    estimator = Ridge() if task == "regression" else LogisticRegression(max_iter=500)
    steps = [("impute", SimpleImputer()), ("scale", StandardScaler()), ("model", estimator)]
    return Pipeline(steps).fit(x, target(task, x, seed))


def register(model: Any, name: str, task: str, *, alias: str | None = "champion",
             tags: dict[str, str] | None = None, metrics: dict[str, float] | None = None) -> str:
    """Log `model` as the training job does and register it as a new version of `name` in the MLflow stores of
    MLOPS_HOME (core.mlflow_store, as the serving app and the operators find them); returns the version."""
    import mlflow
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    from airflow_mlops.core.mlflow_store import MLflowStore

    sample = features(5, 99, tuple(model.feature_names_in_))
    out = model.predict(sample) if task == "regression" else model.predict_proba(sample)
    store = MLflowStore()
    with store.activated() as client:  # create_model_version resolves the logged model through the global URI
        with mlflow.start_run(experiment_id=store.experiment_id(name)) as run:
            info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                            signature=infer_signature(sample, out), input_example=sample,
                                            pyfunc_predict_fn="predict" if task == "regression" else "predict_proba",
                                            pip_requirements=["scikit-learn"])
            mlflow.log_dict({"feature_columns": list(model.feature_names_in_)}, "training/summary.json")
            if metrics:
                mlflow.log_metrics(metrics)
        try:
            client.create_registered_model(name)
        except MlflowException:
            pass  # already registered: this is another version
        version_tags = {TAG_TASK: task, **tags_of(model, task), **(tags or {})}
        version = client.create_model_version(name, info.model_uri, run.info.run_id, tags=version_tags).version
        if alias:
            client.set_registered_model_alias(name, alias, version)
    return str(version)


def tags_of(model: Any, task: str) -> dict[str, str]:
    if task == "regression":
        return {}
    return {TAG_CLASSES: json.dumps([c.item() if hasattr(c, "item") else c for c in model.classes_])}
