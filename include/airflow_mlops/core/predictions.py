"""A model's raw output turned into its task's output, in one place: serving, batch inference and monitoring.

What a registered version's task is: its MLflow tag `airflow_mlops.task` (binary | multiclass | regression),
checked against the estimator; without the tag, the estimator says it (`predict_proba` with 2 classes: binary,
more: multiclass, no `predict_proba`: regression). A deliberate choice over "no tag means binary": every version
trained before tasks existed is a 2-class classifier, so it still reads as binary, and a version registered by
hand (no tag) gets the task its estimator can answer, not an error at the first request. A classifier's class
order is `estimator.classes_` (the order of `predict_proba`'s columns); the tag `airflow_mlops.classes` (a JSON
list), when set, must agree with it.

The output per task (`TaskOutput.score` gives the raw numbers, the other methods their meaning):

- binary: the score is P(positive class); /predict answers it as `prediction`; batch writes it in
  `prediction`; the prediction log keeps it in `prediction`.
- multiclass: the score is one probability per class; /predict answers `prediction` (the class) and
  `probabilities` ({class: p}); batch writes `prediction` (the class) and `proba_<class>` per class; the
  log keeps `predicted_class`, `probabilities` and, in `prediction`, the predicted class' probability.
- regression: the score is the value; `prediction` everywhere.

The multiclass class is the most probable one (the first on a tie), which is what sklearn's `predict`
returns for its classifiers. Binary answers stay exactly what they were before tasks existed.
numpy is imported inside the functions: the module is imported by the serving app's entry points.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.tasks import TASKS, TaskType

if TYPE_CHECKING:
    import numpy as np

TAG_TASK = "airflow_mlops.task"
TAG_CLASSES = "airflow_mlops.classes"
PREDICTION = "prediction"
PREDICTED_CLASS = "predicted_class"  # prediction log (multiclass): the class; `prediction` holds its probability
PROBABILITIES = "probabilities"
SHADOW_CLASS = "shadow_class"
PROBA_PREFIX = "proba_"


class TaskMismatch(ValueError):
    """A model that cannot give its task's output (or disagrees with its tags); the message names both."""


@dataclass(frozen=True)
class TaskOutput:
    """The task of one model and, for a classifier, its classes in `predict_proba`'s column order."""

    task: TaskType = "binary"
    classes: tuple[Any, ...] = (0, 1)

    # ------------------------------------------------------------------ from a model
    @classmethod
    def of(cls, model: Any, tags: Mapping[str, str] | None = None) -> TaskOutput:
        """The task output of a fitted estimator, from its tags (see the module doc); TaskMismatch otherwise."""
        tags = tags or {}
        stated = tags.get(TAG_TASK)
        if stated is not None and stated not in TASKS:
            raise TaskMismatch(f"tag {TAG_TASK}={stated!r} is not one of {list(TASKS)}")
        proba = callable(getattr(model, "predict_proba", None))
        classes = tuple(native(c) for c in getattr(model, "classes_", ())) if proba else ()
        guessed = "regression" if not proba else "binary" if len(classes) == 2 else "multiclass"
        task: TaskType = stated or guessed  # type: ignore[assignment]  # checked against TASKS above
        kind = type(model).__name__
        if task == "regression":
            if classes:
                raise TaskMismatch(f"a {kind} with classes {list(classes)} is a classifier, not a regression model"
                                   f" (tag {TAG_TASK}=regression)")
            if not callable(getattr(model, "predict", None)):
                raise TaskMismatch(f"a {kind} has no predict; a regression model answers predict(X)")
            return cls("regression", ())
        if not proba:
            raise TaskMismatch(f"a {kind} has no predict_proba; a {task} model answers class probabilities")
        if task == "binary" and len(classes) != 2:
            raise TaskMismatch(f"the classifier has {len(classes)} classes {list(classes)}, not the 2 of a binary "
                               "model" + (f" (tag {TAG_TASK}=binary)" if stated else ""))
        if task == "multiclass" and len(classes) < 2:
            raise TaskMismatch(f"the classifier has {len(classes)} class(es) {list(classes)}; multiclass needs 2 "
                               "or more")
        _check_class_tag(tags.get(TAG_CLASSES), classes)
        return cls(task, classes)

    # ------------------------------------------------------------------ raw numbers
    def score(self, model: Any, inputs: Any) -> np.ndarray:
        """binary: P(positive) per row; multiclass: a (rows, classes) matrix; regression: the values. float64."""
        import numpy as np

        if self.task == "regression":
            return np.asarray(model.predict(inputs), dtype=np.float64).reshape(-1)
        proba = np.asarray(model.predict_proba(inputs), dtype=np.float64)
        return proba[:, 1] if self.task == "binary" else proba

    @property
    def multiclass(self) -> bool:
        return self.task == "multiclass"

    def class_of(self, scores: Any) -> Any:
        """The class of one multiclass row (its probabilities), or of a binary row (its P(positive), > 0.5)."""
        if self.task == "binary":
            return self.classes[1] if float(scores) > 0.5 else self.classes[0]
        best = max(range(len(self.classes)), key=lambda j: (float(scores[j]), -j))
        return self.classes[best]

    # ------------------------------------------------------------------ what each consumer gets
    def answer(self, scores: Any) -> dict[str, Any]:
        """The task's fields of one /predict row."""
        if self.task != "multiclass":
            return {PREDICTION: float(scores)}
        return {PREDICTION: self.class_of(scores), PROBABILITIES: self.probabilities(scores)}

    def probabilities(self, scores: Any) -> dict[str, float]:
        """{class (as text: a JSON key): probability} of one multiclass row, in class order."""
        return {str(c): float(p) for c, p in zip(self.classes, scores, strict=True)}

    def log_fields(self, scores: Any) -> dict[str, Any]:
        """The prediction-log fields of one row (`prediction` stays a number for every task)."""
        if self.task != "multiclass":
            return {PREDICTION: float(scores)}
        return {PREDICTION: float(max(scores)), PREDICTED_CLASS: self.class_of(scores),
                PROBABILITIES: self.probabilities(scores)}

    def shadow_fields(self, scores: Any) -> dict[str, Any]:
        """The prediction-log fields of one row's shadow score."""
        if self.task != "multiclass":
            return {"shadow_prediction": float(scores)}
        return {"shadow_prediction": float(max(scores)), SHADOW_CLASS: self.class_of(scores)}

    def batch_columns(self, scores: np.ndarray) -> dict[str, Any]:
        """Batch output columns: binary/regression `prediction`; multiclass `prediction` + `proba_<class>`."""
        import numpy as np

        if self.task != "multiclass":
            return {PREDICTION: np.asarray(scores, dtype=np.float64)}
        labels = np.asarray(self.classes, dtype=object)[np.argmax(scores, axis=1)] if len(scores) else []
        return {PREDICTION: _class_array(labels, self.classes),
                **{proba_column(c): scores[:, j] for j, c in enumerate(self.classes)}}

    @property
    def drift_column(self) -> str:
        """The output column prediction drift compares: the class for multiclass, else `prediction`."""
        return PREDICTED_CLASS if self.multiclass else PREDICTION

    def drift_values(self, scores: np.ndarray) -> list[Any]:
        """Per row, what prediction drift compares (`drift_column`): classes as text (a category), else the score."""
        if self.multiclass:
            return [class_text(c) for c in self.batch_columns(scores)[PREDICTION]]
        return [float(v) for v in scores]

    def output_columns(self) -> list[str]:
        return [PREDICTION, *([proba_column(c) for c in self.classes] if self.multiclass else [])]

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, **({"classes": list(self.classes)} if self.task != "regression" else {})}


def proba_column(klass: Any) -> str:
    return f"{PROBA_PREFIX}{klass}"


def class_text(value: Any) -> str:
    """One class as text: an integral float is written as the integer (a CSV column with gaps reads 2 as 2.0)."""
    value = native(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def native(value: Any) -> Any:
    """A numpy scalar as the Python value JSON writes (int, float, str, bool)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def class_datatype(classes: Sequence[Any]) -> str:
    """The KServe V2 datatype of class labels: INT64 when every class is an integer, else BYTES (text)."""
    ints = all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
    return "INT64" if ints and classes else "BYTES"


def _class_array(labels: Any, classes: Sequence[Any]) -> Any:
    import numpy as np

    if class_datatype(classes) == "INT64":
        return np.asarray(labels, dtype=np.int64)
    if all(isinstance(c, str) for c in classes):
        return np.asarray(labels, dtype=object)
    return np.asarray([str(c) for c in labels], dtype=object)  # mixed or float classes: text, as in the log


def _check_class_tag(tag: str | None, classes: tuple[Any, ...]) -> None:
    if tag is None:
        return
    try:
        stated = json.loads(tag)
    except ValueError:
        raise TaskMismatch(f"tag {TAG_CLASSES}={tag!r} is not a JSON list") from None
    if not isinstance(stated, list) or [str(c) for c in stated] != [str(c) for c in classes]:
        raise TaskMismatch(f"tag {TAG_CLASSES}={tag} differs from the estimator's classes_ {list(classes)}")
