"""Data drift of a model's input columns: reference (training snapshot) vs current (prediction log).

Evidently 0.7 computes the per-column scores (`Report([DataDriftPreset(...)], include_tests=True)`)
and renders the HTML; the decision is ours, per column, from the score:

- `ks` scores are p-values: a column drifted when p < threshold (small p = the samples differ).
  Evidently's own test uses p <= threshold; they differ only at exact equality.
- `psi`, `wasserstein` (normed) and `jensenshannon` scores are distances: drifted when score >= threshold.

Prediction drift: the model's output column (`core.predictions.TaskOutput.drift_column`: the positive-class
probability for binary, the value for regression, the predicted class for multiclass, compared as a
categorical column) is checked beside the inputs with the same rules, reference = the champion's
predictions on its training snapshot. It is its own verdict (`DriftResult.prediction`), not one of
the input columns of the share.

The model drifted when share = drifted / checked input columns >= `drift_share`, or when its
predictions drifted. A column missing from
the current data (or without a single value there) counts as drifted, with the reason, instead of
failing the check: a feature the serving path stopped sending is exactly what monitoring must see.

Thresholds: a per-column `threshold` wins; a per-column `method` without a threshold gets that
method's default (`DEFAULT_THRESHOLDS`), because the global threshold belongs to the global method
(0.2 as a PSI distance means nothing as a KS p-value). ks and wasserstein need numbers: a
categorical column asked for them is checked with jensenshannon at its default threshold.

Bounded memory: each side above `sample_rows` rows is sampled uniformly with a fixed seed; the
result, result.json and the HTML page state the sampling.

Layout (`root` = MLOPS_HOME/reports/drift, served by the UI under /mlops/reports/drift/<relpath>)::

    <model>/<dag_id>/<run_id>/report.html    Evidently's page with our verdict and sampling on top
    <model>/<dag_id>/<run_id>/result.json    `DriftResult.to_dict()` + Evidently's snapshot dict
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.offline import atomic_write_bytes
from airflow_mlops.core.spec import Drift
from airflow_mlops.core.templating import render

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

URL_PREFIX = "/mlops/reports/drift"
P_VALUE_METHODS = frozenset({"ks"})
DISTANCE_METHODS = frozenset({"psi", "wasserstein", "jensenshannon"})
NUMERIC_ONLY_METHODS = frozenset({"ks", "wasserstein"})
# Evidently's defaults for these methods (legacy/calculations/stattests/*.py).
DEFAULT_THRESHOLDS = {"ks": 0.05, "psi": 0.1, "wasserstein": 0.1, "jensenshannon": 0.1}
CATEGORICAL_FALLBACK = "jensenshannon"
MISSING_IN_CURRENT = "missing in current data"
EMPTY_IN_CURRENT = "no values in current data"
MISSING_IN_REFERENCE = "missing in reference data"
EMPTY_IN_REFERENCE = "no values in reference data"


def is_drifted(method: str, score: float, threshold: float) -> bool:
    """Our per-column decision: p-value below threshold (ks), distance at or above it (the others)."""
    if method in P_VALUE_METHODS:
        return score < threshold
    if method in DISTANCE_METHODS:
        return score >= threshold
    raise ValueError(f"unknown drift method {method!r}; known: {sorted(P_VALUE_METHODS | DISTANCE_METHODS)}")


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict. `score` is None when the column could not be compared (see `reason`)."""

    column: str
    method: str
    threshold: float
    score: float | None
    drifted: bool
    column_type: str = "numerical"
    reason: str = ""
    evidently_status: str | None = None

    @property
    def score_kind(self) -> str:
        return "p_value" if self.method in P_VALUE_METHODS else "distance"

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "method": self.method, "threshold": self.threshold, "score": self.score,
                "score_kind": self.score_kind, "drifted": self.drifted, "column_type": self.column_type,
                "reason": self.reason, "evidently_status": self.evidently_status}


@dataclass(frozen=True)
class Sampling:
    """How many rows each side had and how many were compared."""

    sample_rows: int | None
    seed: int
    reference_rows: int
    reference_total: int
    current_rows: int
    current_total: int

    @property
    def sampled(self) -> bool:
        return self.reference_rows < self.reference_total or self.current_rows < self.current_total

    def statement(self) -> str:
        sides = (f"reference {self.reference_rows:,} of {self.reference_total:,} rows, "
                 f"current {self.current_rows:,} of {self.current_total:,} rows")
        if not self.sampled:
            return f"no sampling: {sides}"
        return f"uniform random sample (seed {self.seed}, at most {self.sample_rows:,} rows per side): {sides}"

    def to_dict(self) -> dict[str, Any]:
        return {"sample_rows": self.sample_rows, "seed": self.seed, "sampled": self.sampled,
                "reference_rows": self.reference_rows, "reference_total": self.reference_total,
                "current_rows": self.current_rows, "current_total": self.current_total,
                "statement": self.statement()}


@dataclass(frozen=True)
class DriftResult:
    """Per-column verdicts, the share, the decision and the sampling. `snapshot` is Evidently's run;
    `prediction`: the verdict on the model's output column (None when it was not checked)."""

    columns: tuple[ColumnDrift, ...]
    drift_share: float
    sampling: Sampling
    seconds: float
    snapshot: Any = field(default=None, repr=False, compare=False)
    prediction: ColumnDrift | None = None

    @property
    def share(self) -> float:
        return sum(c.drifted for c in self.columns) / len(self.columns) if self.columns else 0.0

    @property
    def detected(self) -> bool:
        return (bool(self.columns) and self.share >= self.drift_share) or self.prediction_drifted

    @property
    def prediction_drifted(self) -> bool:
        return self.prediction is not None and self.prediction.drifted

    @property
    def drifted_columns(self) -> dict[str, dict[str, Any]]:
        """{column: {method, score, threshold[, reason]}} of the drifted columns (the asset event's extra)."""
        out: dict[str, dict[str, Any]] = {}
        for c in self.columns:
            if c.drifted:
                out[c.column] = {"method": c.method, "score": c.score, "threshold": c.threshold}
                if c.score is None:  # not compared: say why (e.g. "missing in current data")
                    out[c.column]["reason"] = c.reason
        return out

    def summary(self) -> str:
        verdict = "drift detected" if self.detected else "no drift"
        drifted = ", ".join(self.drifted_columns) or "none"
        output = ""
        if self.prediction is not None:
            p = self.prediction
            output = f"; predictions ({p.column}) {'DRIFTED' if p.drifted else 'stable'}: {p.reason}"
        return (f"{verdict}: {sum(c.drifted for c in self.columns)} of {len(self.columns)} columns drifted "
                f"(share {self.share:.3f}, drift_share {self.drift_share}); drifted: {drifted}{output}; "
                f"{self.sampling.statement()}")

    def to_dict(self) -> dict[str, Any]:
        return {"detected": self.detected, "share": self.share, "drift_share": self.drift_share,
                "checked_columns": len(self.columns), "drifted_columns": self.drifted_columns,
                "columns": [c.to_dict() for c in self.columns], "sampling": self.sampling.to_dict(),
                "prediction_drift": self.prediction.to_dict() if self.prediction is not None else None,
                "seconds": round(self.seconds, 3), "summary": self.summary()}


def column_methods(drift: Drift, columns: Sequence[str], types: Mapping[str, str]) -> dict[str, tuple[str, float]]:
    """{column: (method, threshold)} after per-column overrides and the categorical fallback (module doc)."""
    resolved: dict[str, tuple[str, float]] = {}
    for column in columns:
        override = drift.columns.get(column)
        method: str = (override.method if override else None) or drift.method
        if override and override.threshold is not None:
            threshold = override.threshold
        else:
            threshold = drift.threshold if method == drift.method else DEFAULT_THRESHOLDS[method]
        if types.get(column) == "categorical" and method in NUMERIC_ONLY_METHODS:
            method, threshold = CATEGORICAL_FALLBACK, DEFAULT_THRESHOLDS[CATEGORICAL_FALLBACK]
        resolved[column] = (method, float(threshold))
    return resolved


def sample_frame(frame: pd.DataFrame, sample_rows: int | None, seed: int) -> pd.DataFrame:
    """At most `sample_rows` rows, uniformly at random with `seed` (the frame itself when it is smaller)."""
    if not sample_rows or len(frame) <= sample_rows:
        return frame
    return frame.sample(n=sample_rows, random_state=seed)


def _column_type(reference: pd.DataFrame, current: pd.DataFrame, column: str) -> str:
    """numerical or categorical, from the reference's dtype (the current's when the reference lacks it)."""
    import pandas as pd

    frame = reference if column in reference.columns else current if column in current.columns else None
    if frame is None:
        return "unknown"
    return "numerical" if pd.api.types.is_numeric_dtype(frame[column]) else "categorical"


def _unusable(column: str, reference: pd.DataFrame, current: pd.DataFrame) -> str:
    """Why a column cannot be compared ('' when it can)."""
    if column not in reference.columns:
        return MISSING_IN_REFERENCE
    if column not in current.columns:
        return MISSING_IN_CURRENT
    if not reference[column].notna().any():
        return EMPTY_IN_REFERENCE
    if not current[column].notna().any():
        return EMPTY_IN_CURRENT
    return ""


def _prepared(frame: pd.DataFrame, columns: Sequence[str], types: Mapping[str, str]) -> pd.DataFrame:
    """Only the compared columns; numbers (bools included) as float64, categories as strings."""
    out = frame[list(columns)].copy()
    for column in columns:
        if types[column] == "numerical":
            out[column] = out[column].astype("float64")
        else:
            out[column] = out[column].astype("string").astype(object)
    return out


def check_drift(reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str], drift: Drift, *,
                seed: int = 0, sample_rows: int | None = -1, current_total: int | None = None,
                prediction: str | None = None, reference_total: int | None = None) -> DriftResult:
    """Compare `columns` of current against reference with the spec's methods and thresholds.

    :param prediction: the model's output column, in both frames: checked too, its own verdict (module doc).
    :param sample_rows: rows per side beyond which both are sampled; -1 (default) uses
        `drift.sample_rows`, None compares every row.
    :param current_total: rows the current window held before any upstream sampling (default len(current)).
    :param reference_total: the same for the reference (default len(reference)).
    """
    started = time.perf_counter()
    limit = drift.sample_rows if sample_rows == -1 else sample_rows
    sampling = Sampling(sample_rows=limit, seed=seed, reference_rows=0,
                        reference_total=reference_total if reference_total is not None else len(reference),
                        current_total=current_total if current_total is not None else len(current), current_rows=0)
    ref, cur = sample_frame(reference, limit, seed), sample_frame(current, limit, seed + 1)
    sampling = replace(sampling, reference_rows=len(ref), current_rows=len(cur))
    checked = [*dict.fromkeys(columns), *([prediction] if prediction and prediction not in columns else [])]
    reasons = {c: _unusable(c, ref, cur) for c in checked}
    types = {c: _column_type(ref, cur, c) for c in reasons}
    methods = column_methods(drift, list(reasons), types)
    usable = [c for c, why in reasons.items() if not why]
    scores, statuses, snapshot = _run_evidently(ref, cur, usable, types, methods, drift.drift_share)
    results = []
    for column, unusable in reasons.items():
        method, threshold = methods[column]
        score = scores.get(column)
        # Not compared (missing, empty, no score): counted as drifted, the reason says why.
        why = unusable or ("no score from Evidently" if score is None else "")
        drifted = True if why or score is None else is_drifted(method, score, threshold)
        results.append(ColumnDrift(column=column, method=method, threshold=threshold, score=score, drifted=drifted,
                                   column_type=types[column], reason=why or _explain(method, score, threshold),
                                   evidently_status=statuses.get(column)))
    output = next((r for r in results if r.column == prediction), None)
    return DriftResult(columns=tuple(r for r in results if r is not output), drift_share=drift.drift_share,
                       sampling=sampling, seconds=time.perf_counter() - started, snapshot=snapshot, prediction=output)


def _explain(method: str, score: float | None, threshold: float) -> str:
    if score is None:
        return ""
    if method in P_VALUE_METHODS:
        return f"p-value {score:.4g} {'<' if score < threshold else '>='} {threshold:g}"
    return f"{method} distance {score:.4g} {'>=' if score >= threshold else '<'} {threshold:g}"


def _run_evidently(reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str],
                   types: Mapping[str, str], methods: Mapping[str, tuple[str, float]],
                   drift_share: float) -> tuple[dict[str, float], dict[str, str], Any]:
    """Evidently's score and test status per column, and the snapshot (for HTML/JSON)."""
    if not columns:
        return {}, {}, None
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=[c for c in columns if types[c] == "numerical"],
                                categorical_columns=[c for c in columns if types[c] == "categorical"])
    preset = DataDriftPreset(columns=list(columns), drift_share=drift_share,
                             per_column_method={c: methods[c][0] for c in columns},
                             per_column_threshold={c: methods[c][1] for c in columns})
    snapshot = Report([preset], include_tests=True).run(
        Dataset.from_pandas(_prepared(current, columns, types), data_definition=definition),
        Dataset.from_pandas(_prepared(reference, columns, types), data_definition=definition),
    )
    return *_read_snapshot(snapshot.dict()), snapshot


def _read_snapshot(data: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """{column: ValueDrift value} and {column: its test status} from `Snapshot.dict()`."""
    scores, statuses = {}, {}
    for metric in data.get("metrics", []):
        config = metric.get("config") or {}
        if str(config.get("type", "")).endswith(":ValueDrift"):
            scores[str(config["column"])] = float(metric["value"])
    for test in data.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        if str(params.get("type", "")).endswith(":ValueDrift"):
            status = test.get("status")
            statuses[str(params["column"])] = str(getattr(status, "value", status))  # a TestStatus enum
    return scores, statuses


def safe_segment(part: str) -> str:
    """One path segment: letters, digits, `._-`; anything else becomes `_` (run ids carry `:` and `+`)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", str(part)).strip(".")
    return cleaned or "_"


def report_url(relpath: str) -> str:
    """The UI URL of a drift report file (served by the mlops UI plugin, kind "drift")."""
    return f"{URL_PREFIX}/{relpath.lstrip('/')}"


def save_report(result: DriftResult, root: Path, parts: Sequence[str], *,
                context: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Write report.html and result.json under `root/<parts...>/`; return {html, json, relpath, url, dir}.

    `context` (model, version, window, ...) is stored in result.json and shown on the page.
    Each file is written to a temp name and renamed, so a reader never sees half a report.
    """
    directory = root.joinpath(*(safe_segment(p) for p in parts))
    payload = {**dict(context or {}), **result.to_dict()}
    evidently = result.snapshot.dict() if result.snapshot is not None else None
    body = json.dumps({**payload, "evidently": evidently}, indent=1, default=_jsonable).encode()
    page = _html(result, payload).encode()
    atomic_write_bytes(directory / "result.json", lambda tmp: tmp.write_bytes(body))
    atomic_write_bytes(directory / "report.html", lambda tmp: tmp.write_bytes(page))
    relpath = (directory / "report.html").relative_to(root).as_posix()
    return {"dir": str(directory), "html": str(directory / "report.html"), "json": str(directory / "result.json"),
            "relpath": relpath, "url": report_url(relpath)}


def _jsonable(value: Any) -> Any:
    """Enums, numpy scalars and anything else json does not know."""
    if isinstance(value, Enum):
        return value.value
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def _banner_context(result: DriftResult, payload: Mapping[str, Any]) -> dict[str, Any]:
    """What the banner shows: our verdict, the context and the sampling (above Evidently's widgets)."""
    facts = [(str(k), json.dumps(v, default=str)) for k, v in payload.items()
             if k in ("model", "model_version", "window", "reference", "dag_id", "run_id")]
    summary = result.summary()
    return {"heading": summary.split(":", 1)[0], "summary": summary, "sampling": result.sampling.statement(),
            "facts": facts, "columns": (*result.columns, *([result.prediction] if result.prediction else []))}


def _html(result: DriftResult, payload: Mapping[str, Any]) -> str:
    context = _banner_context(result, payload)
    if result.snapshot is None:  # nothing Evidently could compare: our verdict alone
        return render("drift_report.html.j2", **context)
    # Evidently's page is not ours to template: the rendered banner goes in right after its <body>.
    page, banner = str(result.snapshot.get_html_str(as_iframe=False)), render("drift_banner.html.j2", **context)
    head, marker, tail = page.partition("<body>")
    return f"{head}{marker}{banner}{tail}" if marker else banner + page
