"""One loaded model version of the serving app: load from the registry, check, compile, warm up.

`LoadedModel.predict_matrix` is the hot path: a float64 matrix in the model's `feature_columns`
order, answered with the scores of the model's task (`core.predictions.TaskOutput`: P(positive) for a
binary classifier, a row of class probabilities for a multiclass one, the value for a regressor).
When the model is a pipeline sklearn can be replayed exactly with numpy (`fastpath.compile`:
imputer/scaler steps + a binary linear classifier), the matrix goes to that compiled function: no
DataFrame, no per-call input validation (~1 ms of a ~1.2 ms single-row call). The compiled function
is checked against the model's own `predict_proba` at load; any other model gets a DataFrame with
exactly its fitted columns, as before.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_mlops.core.predictions import TaskMismatch, TaskOutput
from airflow_mlops.exceptions import MLOpsError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from airflow_mlops.serving.input_checks import FeatureRanges


class ModelLoadError(MLOpsError):
    """A version cannot serve (missing, unloadable, not of its task, failed warm-up); names version and reason."""

    def __init__(self, message: str, *, model: str | None = None, version: str | None = None,
                 reason: str | None = None) -> None:
        self.model = model
        self.version = version
        self.reason = reason or message
        super().__init__(message)


class MissingFeatures(ValueError):
    """A frame handed to `LoadedModel.scores` lacks some of the model's feature columns."""

    def __init__(self, model: str, version: str, missing: list[str]) -> None:
        self.columns = missing
        super().__init__(f"{model} v{version} needs feature columns {missing}, absent from the request; "
                         "send them (or let the Feast lookup provide them)")


def load_error(name: str, version: str, reason: str, fix: str) -> ModelLoadError:
    return ModelLoadError(f"{name} v{version} cannot serve: {reason}. {fix}", model=name, version=version,
                          reason=reason)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded, warmed-up model version (`fast`: its compiled numpy predictor, if any; `ranges`: the
    allowed feature intervals from its training-set profile, None when the version has no profile; `output`: its
    task and classes, what its scores mean)."""

    name: str
    version: str
    run_id: str | None
    model: Any = field(repr=False, compare=False)
    feature_columns: tuple[str, ...]
    loaded_at: str
    fast: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)
    ranges: FeatureRanges | None = field(default=None, repr=False, compare=False)
    # What `mlflow models serve` would run for this version (/invocations parity, `mlflow_compat`): its pyfunc
    # model (None for a model handed in without its MLflow artifact), the pyfunc's predict_fn, the signature's
    # input column types.
    pyfunc: Any = field(default=None, repr=False, compare=False)
    predict_fn: str = "predict_proba"
    input_types: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    output: TaskOutput = TaskOutput()
    # the training-set medians of its feature profile: what /predict?explain=true measures attributions against
    # (serving/explain.py); None when its run logged no profile with medians
    baseline: Mapping[str, float] | None = field(default=None, repr=False, compare=False)

    @property
    def classes(self) -> tuple[Any, ...]:
        return self.output.classes

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """The task's scores per row (binary: positive-class probability); `frame` may hold extra columns.

        A frame that already has exactly the feature columns, in order, as float64 (see `frame()`)
        goes to the model as is; anything else is selected and cast first (~0.5 ms more per call)."""
        columns = list(self.feature_columns)
        if list(frame.columns) != columns or any(dtype != "float64" for dtype in frame.dtypes):
            if missing := [column for column in columns if column not in frame.columns]:
                raise MissingFeatures(self.name, self.version, missing)
            frame = frame[columns].astype("float64", copy=False)
        return self.output.score(self.model, frame)

    predict_proba = scores  # the name from when every served model was binary

    def predict_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """The task's scores per row of a float64 matrix in `feature_columns` order (NaN = missing)."""
        if self.fast is not None:
            return self.fast(matrix)
        import pandas as pd

        return self.scores(pd.DataFrame(matrix, columns=list(self.feature_columns), copy=False))

    def frame(self, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """The model's input frame (feature columns, float64, None -> NaN) built from dict rows."""
        import numpy as np
        import pandas as pd

        columns = self.feature_columns
        if missing := sorted({column for record in records for column in columns if column not in record}):
            raise MissingFeatures(self.name, self.version, missing)
        try:
            values = np.array([[record[column] for column in columns] for record in records], dtype="float64")
        except (TypeError, ValueError):
            bad = [c for c in columns if not all(_is_number(record[c]) for record in records)]
            raise ValueError(f"{self.name} v{self.version}: feature columns {bad} must be numbers (or null)") from None
        return pd.DataFrame(values.reshape(len(records), len(columns)), columns=list(columns))

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "run_id": self.run_id, "loaded_at": self.loaded_at,
                "compiled": self.fast is not None, "feature_ranges": self.ranges is not None, **self.output.describe()}


class Downloaded(NamedTuple):
    """A registered version as loaded from its MLflow artifact: the sklearn model and its pyfunc model."""

    model: Any
    pyfunc: Any


def prepare(name: str, version: str, run_id: str | None, model: Any, loaded_at: str,
            profile: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None) -> LoadedModel:
    """Check the model can serve, compile it when possible, warm it up (ModelLoadError otherwise).

    `model`: a fitted estimator, or `Downloaded` (then /invocations answers as `mlflow models serve`
    does for it); `profile`: the training-set profile of its run (`input_checks.read_profile`), for
    serving.validate_ranges; `tags`: the registered version's tags (its task and classes, `core.predictions`)."""
    from airflow_mlops.serving import fastpath
    from airflow_mlops.serving.input_checks import FeatureRanges

    pyfunc = None
    if isinstance(model, Downloaded):
        model, pyfunc = model
    columns = feature_columns(name, version, model)
    ranges = FeatureRanges.from_profile(profile, columns) if profile else None
    try:
        output = TaskOutput.of(model, tags)
    except TaskMismatch as exc:
        raise load_error(name, version, str(exc), "Register a model of its task (the training DAG tags it), or fix "
                         "the version's tags") from None
    fast = fastpath.compile_checked(model, columns) if output.task == "binary" else None
    loaded = LoadedModel(name, version, run_id, model, columns, loaded_at, fast, ranges, pyfunc,
                         *_pyfunc_facts(pyfunc), output, baseline=_baseline(profile, columns))
    warm_up(loaded)
    return loaded


def _baseline(profile: Mapping[str, Any] | None, columns: Sequence[str]) -> dict[str, float] | None:
    """The profile's medians of exactly the model's columns (None unless every one has one)."""
    from airflow_mlops.core.explanations import profile_baseline

    medians = profile_baseline(profile)
    if medians is None or any(c not in medians for c in columns):
        return None
    return {c: medians[c] for c in columns}


def _pyfunc_facts(pyfunc: Any) -> tuple[str, dict[str, str]]:
    """(predict_fn, signature column -> type name) of a pyfunc model; our logging's defaults without one."""
    if pyfunc is None:
        return "predict_proba", {}
    flavor = pyfunc.metadata.flavors.get("python_function", {})
    schema = pyfunc.metadata.get_input_schema()
    types = {}
    if schema is not None and schema.has_input_names():
        types = {str(s.name): str(getattr(s.type, "name", s.type)) for s in schema.inputs}
    return str(flavor.get("predict_fn", "predict")), types


def load_sklearn(client: MlflowClient, name: str, version: str) -> Downloaded:
    """mlflow.sklearn.load_model (and mlflow.pyfunc.load_model) of models:/<name>/<version>, through `client`'s stores.

    `mlflow.sklearn.load_model("models:/...")` would resolve the URI through MLflow's process-global
    registry URI; asking the client for the download location keeps injected clients honest.
    """
    import mlflow.artifacts
    import mlflow.pyfunc
    import mlflow.sklearn

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tqdm bars on every (re)load
    source = f"models:/{name}/{version}"
    try:
        source = client.get_model_version_download_uri(name, version)
        with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp,
                                                        tracking_uri=client.tracking_uri)
            model = mlflow.sklearn.load_model(local)
            check_signature(name, version, local, model)
            return Downloaded(model, mlflow.pyfunc.load_model(local))
    except ModelLoadError:
        raise
    except Exception as exc:  # any failure here means "this artifact cannot serve"
        reason = f"artifact {source} cannot be loaded ({first_line(exc)})"
        raise load_error(name, version, reason, "Register a version whose artifacts exist and load with this "
                         "scikit-learn, or check the artifact store") from exc


NUMERIC_TYPES = ("boolean", "integer", "long", "float", "double")  # what the float64 serving path can carry


def check_signature(name: str, version: str, model_dir: str, model: Any) -> None:
    """The version's MLflow signature must name the columns the model was fitted on, all numeric.

    Requests are validated against those columns and cast to float64 (ints and booleans are exact
    there); a signature that disagrees with the fitted model, or asks for strings, tensors or
    objects, is refused at load with the columns named, instead of failing every request.
    A version logged without a signature is served on its fitted columns alone.
    """
    from mlflow.models import Model

    signature = Model.load(model_dir).signature
    if signature is None or signature.inputs is None:
        return
    fix = "Log the model with a signature inferred from its training frame (the training DAG does)"
    if not signature.inputs.has_input_names():
        raise load_error(name, version, "its signature is tensor-based (no column names)", fix)
    fitted = [str(c) for c in getattr(model, "feature_names_in_", ())]
    named = [str(c) for c in signature.inputs.input_names()]
    if fitted and set(named) != set(fitted):
        raise load_error(name, version, f"its signature columns differ from the fitted model's: only in the "
                         f"signature {sorted(set(named) - set(fitted))}, only in the model "
                         f"{sorted(set(fitted) - set(named))}", fix)
    bad = {str(spec.name): str(getattr(spec.type, "name", spec.type)) for spec in signature.inputs.inputs
           if getattr(spec.type, "name", None) not in NUMERIC_TYPES}
    if bad:
        raise load_error(name, version, f"its signature has non-numeric input columns {bad}",
                         f"Serve a model whose inputs are {list(NUMERIC_TYPES)} (encode categories in the pipeline)")


def _is_number(value: Any) -> bool:
    try:
        float(value if value is not None else 0.0)
    except (TypeError, ValueError):
        return False
    return True


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def feature_columns(name: str, version: str, model: Any) -> tuple[str, ...]:
    if not callable(getattr(model, "predict_proba", None)) and not callable(getattr(model, "predict", None)):
        raise load_error(name, version, f"a {type(model).__name__} has neither predict_proba nor predict",
                         "Serve a fitted estimator (a Pipeline ending in a classifier or a regressor)")
    columns = getattr(model, "feature_names_in_", None)
    if columns is None or len(columns) == 0:
        raise load_error(name, version, "the model has no feature_names_in_ (it was fitted without column names)",
                         "Fit it on a pandas DataFrame so the serving columns are known")
    return tuple(str(column) for column in columns)


def warm_up(loaded: LoadedModel) -> None:
    """One prediction on a zero row through the serving path: broken models fail here, not on traffic."""
    import numpy as np

    zero = np.zeros((1, len(loaded.feature_columns)), dtype=np.float64)
    output = loaded.output
    call = "predict" if output.task == "regression" else "predict_proba"
    try:
        out = np.asarray(loaded.predict_matrix(zero), dtype="float64")
    except Exception as exc:  # whatever breaks, it must not reach traffic
        raise load_error(loaded.name, loaded.version, f"warm-up {call} on a zero row failed "
                         f"({first_line(exc)})", "Fix the model and register a new version") from exc
    shape = (1, len(output.classes)) if output.multiclass else (1,)
    if out.shape != shape or not np.isfinite(out).all():
        wanted = {"binary": "one finite probability", "multiclass": f"{shape[-1]} finite class probabilities",
                  "regression": "one finite value"}[output.task]
        raise load_error(loaded.name, loaded.version, f"warm-up {call} gave {out!r}, not {wanted}",
                         f"Serve a {output.task} model that answers {wanted} per row")
