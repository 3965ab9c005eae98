"""Evaluation report: a self-contained HTML page from `EvaluationResult.to_dict()`.

The page must render offline (an air-gapped Airflow, a file opened from an artifact store): inline
CSS, no script, no font or URL, and plots drawn as inline SVG rather than with matplotlib. The
layout is `templates/evaluation_report.html.j2` (autoescaped: model names, descriptions and slice
values are user data); this module only picks the values and computes the charts' geometry (the
regression and multiclass charts' in `core.task_charts`). `roc_chart` is shared with `core.model_card`.
A report without `task` was written before tasks existed: binary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

from airflow_mlops.core import task_charts
from airflow_mlops.core.tasks import LOWER_IS_BETTER
from airflow_mlops.core.templating import fmt, render

__all__ = ["fairness_section", "render_html", "roc_chart", "slice_bars"]

CHALLENGER = "#0969da"
CHAMPION = "#bc4c00"
TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
COMPARISON_KEYS = (
    "metric", "confidence", "ci_low", "ci_high", "samples_used", "samples_requested", "seed", "rule",
    "min_improvement", "max_regression",
)


def render_html(result: Mapping[str, Any], *, title: str) -> str:
    """The whole report: verdict and reasons, metrics, thresholds, the task's charts, slices, fairness."""
    verdict = result.get("verdict") or {}
    task = str(result.get("task") or "binary")
    curves = result.get("curves") or {}
    champion = result.get("champion")
    comparison = result.get("comparison") or {}
    primary = result.get("primary_metric")
    level = comparison.get("confidence")
    return render(
        "evaluation_report.html.j2",
        title=title,
        verdict={
            **_pick(verdict, ("promote", "passed_thresholds", "beats_champion", "passed_fairness")),
            "reasons": list(verdict.get("reasons") or []),
        },
        challenger_version=(result.get("challenger") or {}).get("version"),
        has_champion=bool(champion),
        champion_version=(champion or {}).get("version"),
        rows=result.get("rows"),
        task=task,
        positives=result.get("positives") if task == "binary" else None,
        primary=primary,
        metrics=_metric_rows(result),
        ci_head=f"{level * 100:g}% CI of gain" if isinstance(level, int | float) else "CI of gain",
        comparison=_pick(comparison, COMPARISON_KEYS) if comparison else {},
        thresholds=[_pick(c, ("metric", "min", "max", "value", "passed")) for c in result.get("thresholds") or []],
        roc=roc_chart(curves, result) if task == "binary" else None,
        scatter=task_charts.scatter_chart(curves) if task == "regression" else None,
        residuals=task_charts.residual_histogram(curves.get("challenger")) if task == "regression" else None,
        confusion=task_charts.confusion_chart(result.get("classes")) if task == "multiclass" else None,
        class_rows=task_charts.class_rows(result.get("classes")) if task == "multiclass" else [],
        slices=[_slice(entry, str(primary or "")) for entry in result.get("slices") or []],
        fairness=fairness_section(result.get("fairness")),
    )


def fairness_section(fairness: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Per group column: each metric for challenger and champion against its bound (breach flagged), the groups
    left out for having too few rows, and the per-group table; None when the spec has no `evaluation.fairness`.

    Shared with the model card. A column with fewer than two comparable groups has no metric rows, only its note.
    """
    if not fairness:
        return None
    config = dict(fairness.get("config") or {})
    tables = fairness.get("tables") or {}
    skipped = fairness.get("skipped_groups") or {}
    entries = list(fairness.get("groups") or [])
    names = list(config.get("groups") or dict.fromkeys([*(e["column"] for e in entries), *skipped]))
    columns = []
    for name in names:
        rows = [{**_pick(e, ("metric", "challenger", "champion", "breached")), "bound": _bound(e),
                 "champion_breached": _outside(e.get("champion"), e)} for e in entries if e.get("column") == name]
        table = list(tables.get(name) or [])
        notes = [b for b in fairness.get("breaches") or [] if b.startswith(f"fairness {name}: fewer than")]
        columns.append({"name": name, "metrics": rows, "skipped": list(skipped.get(name) or []), "notes": notes,
                        "table_head": [k for k in (table[0] if table else {}) if k not in ("group", "rows")],
                        "table": table})
    return {"config": config, "columns": columns, "breaches": list(fairness.get("breaches") or [])}


def _bound(entry: Mapping[str, Any]) -> str:
    return f"≥ {entry['min_ratio']:g} (min_ratio)" if "min_ratio" in entry else f"≤ {entry.get('max', 0):g} (max)"


def _outside(value: Any, entry: Mapping[str, Any]) -> bool | None:
    """Whether a value breaks the entry's bound (undefined counts as a breach, as for the challenger)."""
    if value is None:
        return None
    if not _finite(value):
        return True
    return bool(value < entry["min_ratio"] if "min_ratio" in entry else value > entry.get("max", math.inf))


def _pick(mapping: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: mapping.get(k) for k in keys}


def _gain(metric: str, ours: Any, theirs: Any) -> Any:
    """Positive when the challenger is better, whichever direction the metric runs."""
    if ours is None or theirs is None:
        return None
    return theirs - ours if metric in LOWER_IS_BETTER else ours - theirs


def _metric_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Challenger vs champion per metric; the CI column is filled on the primary metric only."""
    ours = (result.get("challenger") or {}).get("metrics") or {}
    theirs = ((result.get("champion") or {}).get("metrics")) or {}
    return [
        {
            "metric": metric,
            "primary": metric == result.get("primary_metric"),
            "lower_is_better": metric in LOWER_IS_BETTER,
            "challenger": value,
            "champion": theirs.get(metric),
            "gain": _gain(metric, value, theirs.get(metric)),
        }
        for metric, value in ours.items()
    ]


def _slice(entry: Mapping[str, Any], metric: str) -> dict[str, Any]:
    groups = []
    for group in entry.get("groups") or []:
        ours = (group.get("challenger") or {}).get(metric)
        theirs = (group.get("champion") or {}).get(metric)
        groups.append(
            {
                **_pick(group, ("group", "rows", "positives", "small")),
                "challenger": ours,
                "champion": theirs,
                "gain": _gain(metric, ours, theirs),
            }
        )
    return {
        **_pick(entry, ("column", "bins", "error", "note")),
        "groups": groups,
        "chart": None if entry.get("error") else slice_bars(entry, metric),
    }


def roc_chart(curves: Mapping[str, Any], result: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Geometry of both ROC curves on one 0..1 square (the template draws the grid, diagonal, legend).

    `curves` is empty when the evaluation rows hold one class only; the template then says so.
    """
    left, top, size = 48, 14, 260
    drawn = []
    for name, color in (("challenger", CHALLENGER), ("champion", CHAMPION)):
        curve = curves.get(name)
        if not curve or not curve.get("fpr"):
            continue
        points = " ".join(
            f"{left + x * size:.1f},{top + (1 - y) * size:.1f}" for x, y in zip(curve["fpr"], curve["tpr"], strict=True)
        )
        auc = (((result or {}).get(name) or {}).get("metrics") or {}).get("roc_auc")
        label = f"{name} (AUC {fmt(auc)})" if auc is not None else name
        drawn.append({"color": color, "points": points, "label": label})
    return {"left": left, "top": top, "size": size, "ticks": TICKS, "curves": drawn}


def slice_bars(entry: Mapping[str, Any], metric: str) -> dict[str, Any] | None:
    """Geometry of grouped bars of `metric` per slice group (challenger beside champion), or None.

    Bars scale to 1.0 when every value fits (rates), else to the next integer above the largest.
    """
    groups = entry.get("groups") or []
    values = [(g, (g.get("challenger") or {}).get(metric), (g.get("champion") or {}).get(metric)) for g in groups]
    finite = [v for _, a, b in values for v in (a, b) if _finite(v)]
    if not finite:
        return None
    top_value = 1.0 if max(finite) <= 1.0 else math.ceil(max(finite))
    left, top, height, step = 48, 22, 160, 72
    drawn = []
    for i, (group, ours, theirs) in enumerate(values):
        x = left + i * step + 10
        bars = [
            {
                "x": x + j * 26,
                "value": value,
                "height": max(0.0, min(1.0, value / top_value)) * height if _finite(value) else None,
                "color": color,
                "label": f"{group.get('group')} {who}",
            }
            for j, (value, color, who) in enumerate(((ours, CHALLENGER, "challenger"), (theirs, CHAMPION, "champion")))
        ]
        label = str(group.get("group")) + (" *" if group.get("small") else "")
        drawn.append({"x": x, "bars": bars, "label": label, "shown": label if len(label) <= 12 else label[:11] + "…"})
    return {
        "left": left, "top": top, "height": height, "ticks": TICKS, "top_value": top_value,
        "axis_width": step * len(values), "width": max(left + step * len(values) + 20, 420), "groups": drawn,
        "metric": metric, "label": f"{metric} per {entry.get('column')} group",
        "colors": {"challenger": CHALLENGER, "champion": CHAMPION},
    }


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and math.isfinite(value)
