"""serving/loaded.py check_signature: a version's MLflow signature is checked against the fitted model at
load (real models saved with mlflow.sklearn.save_model; no registry needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.serving.loaded import ModelLoadError, check_signature

pytestmark = pytest.mark.unit

COLUMNS = ["trip_distance_km", "pickup_hour", "is_airport"]


@pytest.fixture(scope="module")
def fitted() -> tuple[Any, pd.DataFrame]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"trip_distance_km": rng.uniform(1, 30, 60), "pickup_hour": rng.integers(0, 24, 60),
                      "is_airport": rng.integers(0, 2, 60).astype(bool)})
    from sklearn.linear_model import LogisticRegression  # here, not at the top: collection stays fast

    return LogisticRegression().fit(x, x["trip_distance_km"] > 10), x


def saved(tmp_path: Path, model: Any, signature: Any) -> str:
    import mlflow.sklearn

    path = tmp_path / "model"
    mlflow.sklearn.save_model(model, str(path), signature=signature, serialization_format="cloudpickle",
                              pip_requirements=["scikit-learn"])
    return str(path)


def test_an_inferred_signature_with_int_and_bool_columns_is_served(tmp_path: Path, fitted: Any) -> None:
    from mlflow.models import infer_signature

    model, x = fitted
    check_signature("rides", "3", saved(tmp_path, model, infer_signature(x, model.predict(x))), model)


def test_a_version_without_a_signature_is_served_on_its_fitted_columns(tmp_path: Path, fitted: Any) -> None:
    model, _ = fitted
    check_signature("rides", "3", saved(tmp_path, model, None), model)


def test_signature_columns_that_differ_from_the_fitted_ones_are_named(tmp_path: Path, fitted: Any) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    model, _ = fitted
    signature = ModelSignature(inputs=Schema([ColSpec("double", "trip_distance_km"), ColSpec("long", "pickup_hour"),
                                              ColSpec("double", "surge")]))
    with pytest.raises(ModelLoadError) as err:
        check_signature("rides", "3", saved(tmp_path, model, signature), model)
    assert "rides v3 cannot serve" in str(err.value)
    assert "only in the signature ['surge'], only in the model ['is_airport']" in str(err.value)


def test_a_string_input_column_is_refused_at_load(tmp_path: Path, fitted: Any) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    model, _ = fitted
    signature = ModelSignature(inputs=Schema([ColSpec("double", "trip_distance_km"), ColSpec("string", "pickup_hour"),
                                              ColSpec("boolean", "is_airport")]))
    with pytest.raises(ModelLoadError, match=r"non-numeric input columns \{'pickup_hour': 'string'\}"):
        check_signature("rides", "3", saved(tmp_path, model, signature), model)


def test_a_tensor_signature_is_refused_at_load(tmp_path: Path, fitted: Any) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    model, _ = fitted
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float64"), (-1, 3))]))
    with pytest.raises(ModelLoadError, match="tensor-based"):
        check_signature("rides", "3", saved(tmp_path, model, signature), model)
