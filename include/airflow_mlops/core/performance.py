"""Delayed-label performance: labels that arrive later, joined to the prediction log, scored, judged.

Labels arrive as parquet/CSV files in <MLOPS_HOME>/labels/<model>/ (spec `monitoring.performance.labels`).
Only complete files count: hidden and `_`-prefixed files are skipped (writers write `.x.parquet` and
rename), and a file that cannot be read (a parquet without its footer yet) is skipped and reported.

Two joins (`labels.join`):
- `request_id`: a label row names the request it labels. Label rows whose id is not in the window's
  predictions are counted as `unknown_request_ids` (with a sample). When label files carry the event
  time (`labels.timestamp_column`), labels of predictions outside the window are counted as
  `outside_window` instead, so old label files do not inflate the unknown count.
- `entity_time`: a label row carries the entity keys and the event time; it joins the prediction of
  the same entity nearest in time within `labels.join_tolerance` (pandas merge_asof by entity).
  Unmatched labels are counted as `labels_without_prediction`.

The metric is the task's (`core.task_metrics`: binary through `core.training.compute_metrics`, the one
evaluation uses) on the joined rows served by the champion version, compared with the champion's own
evaluation value: degraded when it is worse by more than `tolerance` (below champion - tolerance; above
champion + tolerance for metrics where lower is better: log_loss, brier, rmse, mae, mape;
`core.tasks.LOWER_IS_BETTER`). Fewer than `min_labels` joined rows give no verdict (status skipped, reason).

Labels per task: binary 0/1 (booleans too); multiclass any class value (compared with the predicted
class as text); regression numbers. The joined rows carry the task's prediction columns: `prediction`,
and for multiclass `predicted_class` and `proba_<class>` (`core.prediction_window`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.offline import load_raw_batch, normalize_timestamps, raw_batches_in
from airflow_mlops.core.predictions import PREDICTED_CLASS, PREDICTION, PROBA_PREFIX
from airflow_mlops.core.tasks import LOWER_IS_BETTER
from airflow_mlops.exceptions import MonitoringInputError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

LABEL = "_label"
LABEL_TIME = "_label_time"
SAMPLE_IDS = 10
SPEC_FIELD = "monitoring.performance.labels"


@dataclass(frozen=True)
class LabelFiles:
    """Every usable label row (join columns + `_label` [+ `_label_time`]) and what was skipped."""

    frame: pd.DataFrame
    files: tuple[str, ...]
    unreadable: tuple[dict[str, str], ...] = ()
    rows_read: int = 0
    missing_label: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class Joined:
    """Joined rows (request_id, model_version, prediction, `_label`) and the join's counts."""

    frame: pd.DataFrame
    counts: dict[str, int]
    unknown_sample: tuple[str, ...] = ()


@dataclass(frozen=True)
class PerformanceResult:
    """The verdict of one performance check (JSON-able through `to_dict`)."""

    status: str  # ok | detected | skipped
    metric: str
    value: float | None
    threshold: float | None
    champion_value: float | None
    rows: int
    reason: str
    counts: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def degraded(self) -> bool:
        return self.status == "detected"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "metric": self.metric, "value": self.value, "threshold": self.threshold,
                "champion_value": self.champion_value, "rows": self.rows, "reason": self.reason,
                "counts": dict(self.counts), **self.details}


# ------------------------------------------------------------------------------------------ labels
def required_columns(join: str, label_column: str, entity_keys: list[str], timestamp_column: str) -> list[str]:
    if join == "request_id":
        return ["request_id", label_column]
    if join == "entity_time":
        return [*entity_keys, timestamp_column, label_column]
    raise ValueError(f"{SPEC_FIELD}.join={join!r}; allowed: request_id, entity_time")


def load_labels(directory: Path, *, label_column: str, join: str, entity_keys: list[str],
                timestamp_column: str, task: str = "binary") -> LabelFiles:
    """Read every complete label file in `directory` (oldest name first; a later file's label wins); labels
    are checked to be of `task` (module doc)."""
    import pandas as pd

    needed = required_columns(join, label_column, entity_keys, timestamp_column)
    parts, files, unreadable = [], [], []
    for path in raw_batches_in(Path(directory)):
        frame, problem = load_raw_batch(path)
        if frame is None:
            rule, reason = problem or ("file_readable", "unknown")
            log.warning("label file %s skipped (%s: %s); it is read again next run", path, rule, reason)
            unreadable.append({"file": path.name, "rule": rule, "reason": reason})
            continue
        parts.append(_label_rows(frame, path, needed, label_column, timestamp_column, task))
        files.append(path.name)
    if not parts:
        empty = pd.DataFrame(columns=[*needed[:-1], LABEL])
        return LabelFiles(empty, tuple(files), tuple(unreadable))
    frame = pd.concat(parts, ignore_index=True)
    rows = len(frame)
    labelled = frame.dropna(subset=[LABEL])
    keys = ["request_id"] if join == "request_id" else [*entity_keys, timestamp_column]
    unique = labelled.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)
    return LabelFiles(unique, tuple(files), tuple(unreadable), rows, rows - len(labelled),
                      len(labelled) - len(unique))


def _label_rows(frame: pd.DataFrame, path: Path, needed: list[str], label_column: str,
                timestamp_column: str, task: str = "binary") -> pd.DataFrame:
    """The needed columns of one file, the label checked for the task and the event time as UTC."""
    import pandas as pd

    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise MonitoringInputError(
            f"label file {path}: no column(s) {missing} (it has {sorted(map(str, frame.columns))}); the join "
            f"needs {needed}. Fix: add the column(s) to the file, or set {SPEC_FIELD}.label_column / "
            f".timestamp_column / .join in the model spec to the names the file uses."
        )
    keep = list(dict.fromkeys([*needed, *([timestamp_column] if timestamp_column in frame.columns else [])]))
    rows = normalize_timestamps(frame[keep]).rename(columns={label_column: LABEL})
    rows[LABEL] = _task_labels(rows[LABEL], path, label_column, task)
    if timestamp_column in rows.columns:
        if not pd.api.types.is_datetime64_any_dtype(rows[timestamp_column]):
            raise MonitoringInputError(
                f"label file {path}: column '{timestamp_column}' is {rows[timestamp_column].dtype}, not a "
                f"timestamp. Fix: write UTC timestamps (parquet timestamp type, or ISO-8601 text in CSV)."
            )
        rows[LABEL_TIME] = rows[timestamp_column]
    return rows


def _task_labels(values: pd.Series, path: Path, label_column: str, task: str) -> pd.Series:
    """The labels as the task reads them (NaN/None = not known yet); MonitoringInputError naming the bad values."""
    import pandas as pd

    if task == "multiclass":
        return values.where(values.notna(), None)  # any class value; compared as text (core.task_metrics)
    raw = values.astype("int64") if pd.api.types.is_bool_dtype(values) else values
    labels = pd.to_numeric(raw, errors="coerce")
    allowed = labels.notna() if task == "regression" else labels.isin([0, 1])
    bad = values.loc[labels.notna() & ~allowed | labels.isna() & values.notna()]
    if len(bad):
        rule, fix = (("numbers", "write the observed value as a number") if task == "regression" else
                     ("0/1 labels", "write 1 for the positive outcome and 0 for the negative one"))
        raise MonitoringInputError(
            f"label file {path}: column '{label_column}' must hold {rule} ({task} model); {len(bad)} row(s) hold "
            f"other values, e.g. {bad.astype(str).unique()[:5].tolist()}. Fix: {fix} (empty = not known yet)."
        )
    return labels


# -------------------------------------------------------------------------------------------- join
def join_labels(predictions: pd.DataFrame, labels: LabelFiles, *, join: str, entity_keys: list[str],
                timestamp_column: str, tolerance: timedelta, start: datetime, end: datetime) -> Joined:
    """Labels joined to the window's predictions (see the module docstring for the two joins)."""
    frame = labels.frame
    inside = frame
    if LABEL_TIME in frame.columns:
        # a label's event time is its prediction's time: outside the window (+ tolerance) it labels another window
        inside = frame[(frame[LABEL_TIME] >= start - tolerance) & (frame[LABEL_TIME] < end + tolerance)]
    counts = {"label_rows": len(frame), "outside_window": len(frame) - len(inside), "predictions": len(predictions)}
    if join == "request_id":
        joined, counts2, sample = _join_request_id(predictions, inside)
    else:
        joined, counts2, sample = _join_entity_time(predictions, inside, entity_keys, timestamp_column, tolerance)
    counts.update(counts2)
    scored = joined.dropna(subset=["prediction"])  # a request that failed to score has no prediction to judge
    counts["no_prediction_value"] = len(joined) - len(scored)
    joined = scored.reset_index(drop=True)
    counts["matched"] = len(joined)
    counts["predictions_unlabelled"] = len(predictions) - len(joined)
    return Joined(joined, counts, sample)


def _join_request_id(predictions: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int],
                                                                                tuple[str, ...]]:
    ids = labels["request_id"].astype(str)
    known = ids.isin(set(predictions["request_id"].astype(str)))
    unknown = ids[~known]
    right = labels.loc[known, [LABEL]].assign(request_id=ids[known])
    left = predictions[["request_id", "model_version", *prediction_columns(predictions)]].assign(
        request_id=predictions["request_id"].astype(str))
    # a client reusing its X-Request-ID logs one id twice: the label cannot tell them apart, keep the newest
    unique = left.drop_duplicates(subset="request_id", keep="last")
    joined = unique.merge(right, on="request_id", how="inner", validate="1:1")
    counts = {"unknown_request_ids": len(unknown), "repeated_request_ids": len(left) - len(unique)}
    return joined, counts, tuple(unknown.head(SAMPLE_IDS))


def _join_entity_time(predictions: pd.DataFrame, labels: pd.DataFrame, entity_keys: list[str],
                      timestamp_column: str, tolerance: timedelta) -> tuple[pd.DataFrame, dict[str, int],
                                                                            tuple[str, ...]]:
    import pandas as pd

    missing = [k for k in entity_keys if k not in predictions.columns]
    if missing and len(predictions):
        raise MonitoringInputError(
            f"the prediction log has no entity column(s) {missing} (entity columns: "
            f"{[c for c in predictions.columns if c in entity_keys]}); {SPEC_FIELD}.join=entity_time needs them. "
            f"Fix: pass the spec's features.entity_keys, or join by request_id."
        )
    outputs = prediction_columns(predictions)
    if labels.empty:  # merge_asof needs datetime keys on both sides; an empty label frame has none
        return pd.DataFrame(columns=["request_id", "model_version", *outputs, LABEL]), \
            {"labels_without_prediction": 0}, ()
    left = labels[[*entity_keys, timestamp_column, LABEL]].copy()
    right = predictions[[*entity_keys, "time", "request_id", "model_version", *outputs]].copy()
    for key in entity_keys:
        left[key], right[key] = _same_kind(left[key], right[key])
    right["time"] = normalize_timestamps(right[["time"]])["time"]
    merged = pd.merge_asof(left.sort_values(timestamp_column), right.sort_values("time"), left_on=timestamp_column,
                           right_on="time", by=entity_keys, tolerance=pd.Timedelta(tolerance), direction="nearest")
    matched = merged.dropna(subset=["request_id"])
    # two labels may land on one prediction: keep the nearest in time, count the rest as unmatched
    matched = matched.assign(_gap=(matched[timestamp_column] - matched["time"]).abs()).sort_values("_gap")
    unique = matched.drop_duplicates(subset="request_id", keep="first")
    joined = unique[["request_id", "model_version", *outputs, LABEL]].reset_index(drop=True)
    return joined, {"labels_without_prediction": len(left) - len(unique)}, ()


def prediction_columns(predictions: pd.DataFrame) -> list[str]:
    """`prediction`, and a multiclass model's `predicted_class` and `proba_<class>` columns when the log has them."""
    extra = [c for c in predictions.columns if c == PREDICTED_CLASS or str(c).startswith(PROBA_PREFIX)]
    return [PREDICTION, *extra]


def _same_kind(left: pd.Series, right: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Entity keys from JSON (prediction log) and from files differ in dtype; compare numbers as numbers."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(left) and pd.api.types.is_numeric_dtype(right):
        return left.astype("float64"), right.astype("float64")
    return left.astype(str), right.astype(str)


# ------------------------------------------------------------------------------------------- judge
def threshold_for(metric: str, champion_value: float, tolerance: float) -> float:
    """The worst acceptable value: champion - tolerance, or champion + tolerance for loss metrics."""
    return champion_value + tolerance if metric in LOWER_IS_BETTER else champion_value - tolerance


def is_degraded(metric: str, value: float, threshold: float) -> bool:
    return value > threshold if metric in LOWER_IS_BETTER else value < threshold


def judge(joined: Joined, *, metric: str, champion_version: str | None, champion_value: float | None,
          tolerance: float, min_labels: int, task: str = "binary") -> PerformanceResult:
    """Score the champion's joined rows with `task`'s `metric` and compare with its evaluation value."""
    from airflow_mlops.core.task_metrics import task_metric

    frame = joined.frame
    versions = {str(v): int(n) for v, n in frame["model_version"].astype(str).value_counts().items()}
    ours = frame[frame["model_version"].astype(str) == str(champion_version)] if champion_version else frame[:0]
    counts = {**joined.counts, "champion_rows": len(ours), "other_version_rows": len(frame) - len(ours)}
    details: dict[str, Any] = {"versions": versions, "champion_version": champion_version, "task": task,
                               "higher_is_better": metric not in LOWER_IS_BETTER,
                               "unknown_request_id_sample": list(joined.unknown_sample)}

    def result(status: str, reason: str, value: float | None = None,
               threshold: float | None = None) -> PerformanceResult:
        return PerformanceResult(status=status, metric=metric, value=value, threshold=threshold,
                                 champion_value=champion_value, rows=len(ours), reason=reason, counts=counts,
                                 details=details)

    reason = _no_verdict(champion_version, champion_value, len(ours), min_labels, metric)
    if reason or champion_value is None:
        return result("skipped", reason)
    if task == "multiclass" and PREDICTED_CLASS not in ours.columns:
        return result("skipped", f"the prediction log holds no predicted_class for v{champion_version}: it was not "
                                 "served as a multiclass model (core.predictions)")
    value = task_metric(task, metric, ours[LABEL].tolist(), ours)
    if math.isnan(value):
        why = "they hold one class only" if task != "regression" else "too few rows for it"
        return result("skipped", f"{metric} is undefined on {len(ours)} labelled rows: {why}")
    threshold = threshold_for(metric, champion_value, tolerance)
    worse = is_degraded(metric, value, threshold)
    loss = metric in LOWER_IS_BETTER
    reason = (f"{metric} {value:.4f} on {len(ours)} labelled predictions of v{champion_version} is "
              f"{'' if worse else 'not '}{'above' if loss else 'below'} {threshold:.4f} (champion's evaluation "
              f"{champion_value:.4f} {'+' if loss else '-'} tolerance {tolerance:g})")
    return result("detected" if worse else "ok", reason, float(value), threshold)


def _no_verdict(version: str | None, champion_value: float | None, rows: int, min_labels: int,
                metric: str) -> str:
    if version is None:
        return "no champion: there is no evaluation to compare with"
    if champion_value is None:
        return f"champion v{version} has no evaluation value of {metric} to compare with"
    if rows < min_labels:
        return (f"only {rows} labelled prediction(s) of champion v{version} in the window; "
                f"{min_labels} needed for a verdict (monitoring.performance.min_labels)")
    return ""
