"""Chart geometry for the regression and multiclass parts of the evaluation report and the model card.

Binary reports draw ROC curves (`core.evaluation_report.roc_chart`). A regression report draws predicted vs
actual (both models, the diagonal is a perfect model) and a histogram of the challenger's residuals; a multiclass
report draws the challenger's confusion matrix (each cell shaded by the share of its true class) beside a
per-class recall table. Inputs are `EvaluationResult.to_dict()` parts; outputs are plain numbers the templates
(`templates/_charts.html.j2`) turn into inline SVG. No numpy: the data is already small.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

__all__ = ["class_rows", "confusion_chart", "residual_histogram", "scatter_chart"]

CHALLENGER = "#0969da"
CHAMPION = "#bc4c00"
TICK_COUNT = 5


def scatter_chart(curves: Mapping[str, Any]) -> dict[str, Any] | None:
    """Predicted (y) against actual (x) for each model on one square with equal axes; None without points."""
    left, top, size = 56, 14, 260
    models = [(name, color, curves.get(name)) for name, color in (("challenger", CHALLENGER), ("champion", CHAMPION))]
    drawn = [(name, color, c) for name, color, c in models if c and c.get("actual")]
    values = [v for _, _, c in drawn for key in ("actual", "predicted") for v in c[key] if _finite(v)]
    if not values:
        return None
    low, high = min(values), max(values)
    span = (high - low) or 1.0

    def at(value: float) -> float:
        return (value - low) / span * size

    series = []
    for name, color, curve in drawn:
        points = [(left + at(x), top + size - at(y)) for x, y in zip(curve["actual"], curve["predicted"], strict=True)
                  if _finite(x) and _finite(y)]
        series.append({"name": name, "color": color, "points": [(round(x, 1), round(y, 1)) for x, y in points]})
    ticks = [low + span * i / (TICK_COUNT - 1) for i in range(TICK_COUNT)]
    return {"left": left, "top": top, "size": size, "series": series,
            "ticks": [{"offset": round(at(t), 1), "label": f"{t:.4g}"} for t in ticks]}


def residual_histogram(curve: Mapping[str, Any] | None, who: str = "challenger") -> dict[str, Any] | None:
    """Bars of the residual (predicted - actual) counts, a marker at 0; None without a histogram."""
    histogram = (curve or {}).get("residuals") or {}
    edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
    if len(edges) != len(counts) + 1 or not counts or max(counts) <= 0:
        return None
    left, top, width, height = 48, 14, 360, 150
    low, high = edges[0], edges[-1]
    span = (high - low) or 1.0
    step = width / len(counts)
    bars = [{"x": round(left + i * step, 1), "width": round(max(step - 1, 1), 1),
             "height": round(count / max(counts) * height, 1), "count": count,
             "label": f"[{edges[i]:.4g}, {edges[i + 1]:.4g}): {count} rows"} for i, count in enumerate(counts)]
    zero = left + (0 - low) / span * width if low <= 0 <= high else None
    return {"left": left, "top": top, "width": width, "height": height, "bars": bars, "who": who,
            "zero": round(zero, 1) if zero is not None else None, "low": f"{low:.4g}", "high": f"{high:.4g}",
            "max_count": max(counts), "mean": histogram.get("mean"), "std": histogram.get("std"),
            "color": CHALLENGER if who == "challenger" else CHAMPION}


def confusion_chart(classes: Mapping[str, Any] | None, who: str = "challenger") -> dict[str, Any] | None:
    """The confusion matrix as a grid: rows true class, columns predicted class, each cell shaded by its share of
    the row (the recall on the diagonal); None without a matrix."""
    labels = [str(label) for label in (classes or {}).get("labels") or []]
    matrix = (((classes or {}).get("confusion") or {}).get(who)) or []
    if not labels or len(matrix) != len(labels):
        return None
    cell, left, top = 52, 110, 46
    cells = []
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, count in enumerate(row):
            share = count / total
            what = f"true {labels[i]}, predicted {labels[j]}: {count} rows ({share:.0%} of {labels[i]})"
            cells.append({"x": left + j * cell, "y": top + i * cell, "count": count, "label": what,
                          "opacity": round(0.08 + 0.82 * share, 3), "dark": share > 0.5, "diagonal": i == j})
    return {"cell": cell, "left": left, "top": top, "labels": [_short(label) for label in labels], "cells": cells,
            "width": left + cell * len(labels) + 20, "height": top + cell * len(labels) + 30, "who": who,
            "color": CHALLENGER if who == "challenger" else CHAMPION}


def class_rows(classes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Per class: rows, recall of the challenger and the champion, and the recall gain."""
    table = classes or {}
    recall = table.get("recall") or {}
    ours, theirs = recall.get("challenger") or {}, recall.get("champion") or {}
    rows = []
    for label in table.get("labels") or []:
        key = str(label)
        a, b = ours.get(key), theirs.get(key)
        rows.append({"label": key, "rows": (table.get("counts") or {}).get(key), "challenger": a, "champion": b,
                     "gain": float(a) - float(b) if _finite(a) and _finite(b) else None})
    return rows


def _short(label: str) -> str:
    return label if len(label) <= 12 else label[:11] + "…"


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
