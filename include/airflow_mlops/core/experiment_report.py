"""The experiment readout page: context and inline-SVG chart geometry for templates/experiment_readout.html.j2.

Inputs are what the pipeline recorded: the record (registry tag), the history run's looks
(core/experiment_history.read_history) and the audit trail. Two charts, drawn by the template from the
geometry here: the difference new - champion with its running always-valid interval per look (A/B), and the
traffic share of every arm per look (bandit; an A/B's fixed split is a flat line). No Airflow, no numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_mlops.core.audit import AuditEvent
from airflow_mlops.core.experiments import ExperimentRecord
from airflow_mlops.core.templating import render

COLORS = ("#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#1b7c83", "#6e7781", "#953800",
          "#116329")
WIDTH, HEIGHT, LEFT, TOP, BOTTOM, RIGHT = 640, 210, 56, 20, 24, 16
EXPERIMENT_ACTIONS = ("experiment_start", "experiment_stop")


def render_readout(model: str, record: ExperimentRecord | None, looks: Sequence[Mapping[str, Any]],
                   events: Sequence[AuditEvent]) -> str:
    """The self-contained readout page (no script, no URL)."""
    return render("experiment_readout.html.j2", **readout_context(model, record, looks, events))


def readout_context(model: str, record: ExperimentRecord | None, looks: Sequence[Mapping[str, Any]],
                    events: Sequence[AuditEvent]) -> dict[str, Any]:
    trail = [e for e in events if e.action in EXPERIMENT_ACTIONS or (e.action == "promote" and
                                                                      e.reason.startswith("experiment "))]
    if record is None:
        return {"title": f"{model}: no online experiment", "model": model, "record": None, "arms": [], "looks": [],
                "difference": None, "shares": None, "trail": list(reversed(trail))}
    last = record.last or {}
    arms = [{"version": v, "share": share, "color": COLORS[i % len(COLORS)],
             "role": "champion" if v == record.champion else "new" if v == record.candidate else "",
             "served": (last.get("served") or {}).get(v), "labels": (last.get("labels") or {}).get(v),
             "value": (last.get("values") or {}).get(v)}
            for i, (v, share) in enumerate(record.arms.items())]
    return {"title": f"{model}: experiment {record.id}", "model": model, "record": record, "arms": arms,
            "looks": [dict(look) for look in looks],
            "difference": difference_chart(looks) if record.type == "ab" else None,
            "shares": shares_chart(looks, arms), "trail": list(reversed(trail)),
            "deadline": record.deadline().strftime("%Y-%m-%d %H:%M")}


def difference_chart(looks: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The estimate per look as a line, the running interval as a band; None before the first decided look."""
    points = [(int(look["step"]), look.get("difference"), look.get("ci_low"), look.get("ci_high")) for look in looks
              if look.get("difference") is not None]
    if not points:
        return None
    values = [v for _, d, lo, hi in points for v in (d, lo, hi, 0.0) if v is not None]
    scale = _Scale([p[0] for p in points], values)
    band = [(s, lo, hi) for s, _, lo, hi in points if lo is not None and hi is not None]
    outline = [*[(s, hi) for s, _, hi in band], *[(s, lo) for s, lo, _ in reversed(band)]]
    return {**scale.frame(), "line": scale.points([(s, d) for s, d, _, _ in points]),
            "band": scale.points(outline) if band else "", "zero": scale.y(0.0), "count": len(points)}


def shares_chart(looks: Sequence[Mapping[str, Any]], arms: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Every arm's share per look (step 0 = the start), one polyline each, on 0..1."""
    steps = [int(look["step"]) for look in looks if look.get("arms")]
    if not steps:
        return None
    scale = _Scale(steps, [0.0, 1.0])
    lines = []
    for arm in arms:
        series = [(int(look["step"]), (look.get("arms") or {}).get(arm["version"], {}).get("share")) for look in looks]
        drawn = [(s, v) for s, v in series if v is not None]
        if drawn:
            lines.append({"version": arm["version"], "color": arm["color"], "points": scale.points(drawn),
                          "last": drawn[-1][1]})
    return {**scale.frame(), "lines": lines}


class _Scale:
    """Steps on x, values on y (with a margin), into the chart's pixel box."""

    def __init__(self, steps: Sequence[int], values: Sequence[float]) -> None:
        self.x0, self.x1 = min(steps), max(*steps, min(steps) + 1)
        low, high = min(values), max(values)
        pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
        self.y0, self.y1 = low - pad, high + pad

    def x(self, step: float) -> float:
        return LEFT + (step - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        return TOP + (self.y1 - value) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)

    def points(self, pairs: Sequence[tuple[float, float | None]]) -> str:
        return " ".join(f"{self.x(s):.1f},{self.y(v):.1f}" for s, v in pairs if v is not None and math.isfinite(v))

    def frame(self) -> dict[str, Any]:
        ticks = [self.y0 + (self.y1 - self.y0) * i / 4 for i in range(5)]
        span = self.x1 - self.x0
        steps = range(self.x0, self.x1 + 1) if span <= 10 else sorted({self.x0 + round(span * i / 4) for i in range(5)})
        return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "top": TOP, "right": WIDTH - RIGHT,
                "bottom": HEIGHT - BOTTOM, "yticks": [(self.y(t), f"{t:.3g}") for t in ticks],
                "xticks": [(self.x(s), str(s)) for s in steps]}
