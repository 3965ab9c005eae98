"""`/predict?explain=true`: each answered row also says which features moved its prediction, and by how much.

The attribution is `core.explanations.local_attributions` (baseline substitution, exact and deterministic): for
each feature, the prediction minus the prediction with that feature set to its training-set median, the baseline
taken from the training-set feature profile the version's run logged (`core.training.feature_profile`). Every
row costs one extra predict call of K + 2 rows (K features), made by the model version that scored the row, on
the values it scored (request features and online features alike); docs/benchmarks.md has the latency.

What is explained: a binary classifier's P(positive), a regressor's value, a multiclass classifier's probability
of the predicted class. Without `explain` (or `explain=false`) the answer is byte for byte what it always was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs

from airflow_mlops.exceptions import MLOpsError
from airflow_mlops.serving.protocols import RequestError

if TYPE_CHECKING:
    from airflow_mlops.serving.loaded import LoadedModel
    from airflow_mlops.serving.scoring import Scored

PARAM = "explain"
FIELD = "explanation"  # the added field of each /predict row
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


class PredictAsked(NamedTuple):
    """What a /predict call brings besides its body: the X-Request-ID header and the query string."""

    header_id: str | None
    query: bytes = b""


def explain_flag(query: bytes) -> bool:
    """`?explain=true|false` (1/0, yes/no); 400 naming the parameter for any other value."""
    if not query:
        return False
    values = parse_qs(query.decode("latin-1"), keep_blank_values=True).get(PARAM)
    if not values:
        return False
    value = values[-1].strip().lower()
    if value not in _TRUE + _FALSE:
        raise RequestError(400, PARAM, f"{PARAM}: got {values[-1]!r}; use ?{PARAM}=true to get per-feature "
                                       f"attributions with each prediction, or leave it out")
    return value in _TRUE


def check_explainable(models: Sequence[LoadedModel]) -> None:
    """409 naming the version(s) without a training-set baseline, before anything is scored."""
    lacking = [m for m in models if m.baseline is None]
    if lacking:
        named = ", ".join(f"v{m.version}" for m in lacking)
        raise RequestError(409, PARAM, f"{PARAM}: {lacking[0].name} {named} cannot be explained: its training run "
                                       "logged no feature profile with medians (training/feature_profile.json), the "
                                       "baseline attributions are measured against. Retrain the model (the training "
                                       f"DAG logs it with every version), or call /predict without ?{PARAM}=true")


def explanations(scored: Scored, models: Mapping[str, LoadedModel]) -> list[dict[str, Any]]:
    """One explanation per scored row, by the version that scored it (`models`: version -> loaded model)."""
    from airflow_mlops.serving.scoring import frame

    if scored.inputs is None:
        raise MLOpsError("the scorer kept no inputs of this request; nothing to explain")
    found = []
    for i, version in enumerate(scored.versions):
        model = models.get(version)
        if model is None:  # swapped out between scoring and now: the client may simply retry
            raise MLOpsError(f"v{version} was replaced while this request was explained; retry it")
        found.append(explain_row(model, frame(model, scored.inputs, [i], given=False), scored.predictions[i]))
    return found


def explain_row(model: LoadedModel, row: Any, prediction: Any) -> dict[str, Any]:
    """The attributions of one row (a 1 x K float64 matrix in the model's column order)."""
    import numpy as np
    import pandas as pd

    from airflow_mlops.core.explanations import local_attributions

    assert model.baseline is not None  # check_explainable ran first
    output = model.output
    column = None
    if output.multiclass:  # explain the probability of the class this row was given
        scores = [float(p) for p in prediction]
        column = max(range(len(scores)), key=lambda j: (scores[j], -j))

    def predict(batch: pd.DataFrame) -> np.ndarray:
        scores = model.predict_matrix(batch.to_numpy(dtype=np.float64))
        return scores if column is None else scores[:, column]

    found = local_attributions(predict, pd.DataFrame(row, columns=list(model.feature_columns)), model.baseline)
    explained = {"binary": "probability of the positive class", "regression": "predicted value"}.get(output.task)
    if column is not None:
        explained = f"probability of class {output.classes[column]!r}"
    return {**found, "explained": explained, "model_version": model.version}
