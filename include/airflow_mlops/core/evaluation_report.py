"""Evaluation report: a self-contained HTML page from `EvaluationResult.to_dict()`.

The page must render offline (an air-gapped Airflow, a file opened from an artifact store): inline
CSS, no script, no font or URL, and plots drawn here as inline SVG rather than with matplotlib. All
text goes through `html.escape`, since model names, descriptions and slice values are user data.
The helpers (`page`, `roc_svg`, `slice_bars_svg`, ...) are shared with `core.model_card`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_mlops.core.evaluation import LOWER_IS_BETTER

__all__ = ["page", "render_html", "roc_svg", "slice_bars_svg"]

CHALLENGER = "#0969da"
CHAMPION = "#bc4c00"
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1f2328;background:#fff;
max-width:1100px}h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
h3{font-size:1rem;margin:1.2rem 0 .4rem}.badge{display:inline-block;padding:.1rem .6rem;border-radius:1rem;
font-weight:600;color:#fff;font-size:.9rem}.ok{background:#1a7f37}.bad{background:#cf222e}.na{background:#6e7781}
table{border-collapse:collapse;margin:.4rem 0}th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#59636e}
tr.primary td{font-weight:600}.warn{color:#9a6700}.err{color:#cf222e}ul.reasons li{margin:.2rem 0}
svg{display:block;margin:.4rem 0;font:11px system-ui,sans-serif}code{font:12px ui-monospace,monospace}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value: Any, signed: bool = False) -> str:
    """A metric for display: 4 decimals, an em dash when absent or undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return esc(value)


def badge(ok: bool | None, yes: str = "passed", no: str = "failed", unknown: str = "n/a") -> str:
    css, text = ("na", unknown) if ok is None else ("ok", yes) if ok else ("bad", no)
    return f'<span class="badge {css}">{esc(text)}</span>'


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f"<body>\n{body}\n</body></html>\n"
    )


def render_html(result: Mapping[str, Any], *, title: str) -> str:
    """The whole report: verdict and reasons, metrics, thresholds, ROC curves, slices."""
    body = "".join(
        (
            f"<h1>{esc(title)}</h1>",
            verdict_section(result),
            "<h2>Metrics</h2>",
            metrics_table(result),
            "<h2>Thresholds</h2>",
            thresholds_table(result.get("thresholds") or []),
            "<h2>ROC curves</h2>",
            roc_svg(result.get("curves") or {}, result),
            "<h2>Slices</h2>",
            slices_section(result),
        )
    )
    return page(title, body)


def verdict_section(result: Mapping[str, Any]) -> str:
    verdict = result.get("verdict") or {}
    champion = result.get("champion")
    versions = f"challenger <b>{esc((result.get('challenger') or {}).get('version') or '(new)')}</b>"
    versions += f" vs champion <b>{esc(champion.get('version') or '(unknown)')}</b>" if champion else " · no champion"
    reasons = "".join(f"<li>{esc(r)}</li>" for r in verdict.get("reasons") or [])
    return (
        f"<p>{badge(verdict.get('promote'), 'promote', 'do not promote')} "
        f"thresholds {badge(verdict.get('passed_thresholds'))} "
        f"beats champion {badge(verdict.get('beats_champion'), 'yes', 'no', 'no champion')}</p>"
        f'<p class="muted">{versions} · {esc(result.get("rows"))} rows · {esc(result.get("positives"))} '
        f"positives · primary metric <b>{esc(result.get('primary_metric'))}</b></p>"
        f'<ul class="reasons">{reasons}</ul>'
    )


def metrics_table(result: Mapping[str, Any]) -> str:
    """Challenger vs champion per metric; gain > 0 means the challenger is better; CI on the primary."""
    ours = (result.get("challenger") or {}).get("metrics") or {}
    theirs = ((result.get("champion") or {}).get("metrics")) or {}
    comparison = result.get("comparison") or {}
    primary = result.get("primary_metric")
    rows = []
    for metric, value in ours.items():
        other = theirs.get(metric)
        gain = (
            None if value is None or other is None else (other - value if metric in LOWER_IS_BETTER else value - other)
        )
        ci = ""
        if metric == primary and comparison:
            ci = f"[{fmt(comparison.get('ci_low'), True)}, {fmt(comparison.get('ci_high'), True)}]"
        direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        css = ' class="primary"' if metric == primary else ""
        rows.append(
            f"<tr{css}><td>{esc(metric)}</td>"
            f'<td class="muted">{direction}</td><td class="n">{fmt(value)}</td><td class="n">{fmt(other)}</td>'
            f'<td class="n">{fmt(gain, True)}</td><td class="n">{ci}</td></tr>'
        )
    level = comparison.get("confidence")
    ci_head = f"{level * 100:g}% CI of gain" if isinstance(level, int | float) else "CI of gain"
    note = _comparison_note(comparison)
    return (
        "<table><tr><th>metric</th><th></th><th>challenger</th><th>champion</th><th>gain</th>"
        f"<th>{esc(ci_head)}</th></tr>{''.join(rows)}</table>{note}"
    )


def _comparison_note(comparison: Mapping[str, Any]) -> str:
    if not comparison:
        return '<p class="muted">No champion yet: no comparison.</p>'
    return (
        f'<p class="muted">Paired bootstrap of {esc(comparison.get("metric"))}: '
        f"{esc(comparison.get('samples_used'))} of {esc(comparison.get('samples_requested'))} resamples used "
        f"(seed {esc(comparison.get('seed'))}); rule <b>{esc(comparison.get('rule'))}</b>, "
        f"min_improvement {esc(comparison.get('min_improvement'))}, "
        f"max_regression {esc(comparison.get('max_regression'))}.</p>"
    )


def thresholds_table(checks: Sequence[Mapping[str, Any]]) -> str:
    if not checks:
        return '<p class="muted">No thresholds configured (evaluation.thresholds).</p>'
    rows = "".join(
        f'<tr><td>{esc(c.get("metric"))}</td><td class="n">{fmt(c.get("min"))}</td>'
        f'<td class="n">{fmt(c.get("max"))}</td><td class="n">{fmt(c.get("value"))}</td>'
        f"<td>{badge(c.get('passed'))}</td></tr>"
        for c in checks
    )
    return f"<table><tr><th>metric</th><th>min</th><th>max</th><th>challenger</th><th></th></tr>{rows}</table>"


def roc_svg(curves: Mapping[str, Any], result: Mapping[str, Any] | None = None) -> str:
    """Both ROC curves on one 0..1 square, with the chance diagonal and a legend."""
    left, top, size = 48, 14, 260
    parts = [
        _grid(left, top, size),
        f'<line x1="{left}" y1="{top + size}" x2="{left + size}" y2="{top}" stroke="#8c959f" stroke-dasharray="4 4"/>',
    ]
    drawn = 0
    for name, color in (("challenger", CHALLENGER), ("champion", CHAMPION)):
        curve = curves.get(name)
        if not curve or not curve.get("fpr"):
            continue
        points = " ".join(
            f"{left + x * size:.1f},{top + (1 - y) * size:.1f}" for x, y in zip(curve["fpr"], curve["tpr"], strict=True)
        )
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        auc = (((result or {}).get(name) or {}).get("metrics") or {}).get("roc_auc")
        label = f"{name} (AUC {fmt(auc)})" if auc is not None else name
        y = top + size - 30 + 16 * drawn
        parts.append(
            f'<rect x="{left + size - 150}" y="{y - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{left + size - 135}" y="{y}">{esc(label)}</text>'
        )
        drawn += 1
    if not drawn:
        return '<p class="muted">No ROC curve: the evaluation rows hold one class only.</p>'
    parts.append(f'<text x="{left + size / 2}" y="{top + size + 32}" text-anchor="middle">false positive rate</text>')
    parts.append(
        f'<text transform="translate(12 {top + size / 2}) rotate(-90)" text-anchor="middle">true positive rate</text>'
    )
    return _svg(left + size + 20, top + size + 42, "ROC curves of challenger and champion", "".join(parts))


def _grid(left: float, top: float, size: float) -> str:
    lines = []
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = left + tick * size, top + (1 - tick) * size
        lines.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + size}" stroke="#eaeef2"/>'
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + size}" y2="{y:.1f}" stroke="#eaeef2"/>'
            f'<text x="{x:.1f}" y="{top + size + 14}" text-anchor="middle">{tick:g}</text>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    lines.append(f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="#8c959f"/>')
    return "".join(lines)


def _svg(width: float, height: float, label: str, inner: str) -> str:
    # No xmlns: inline SVG in HTML needs none, and the page stays free of any URL.
    return (
        f'<svg width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{esc(label)}">{inner}</svg>'
    )


def slices_section(result: Mapping[str, Any]) -> str:
    entries = result.get("slices") or []
    if not entries:
        return '<p class="muted">No slices configured (evaluation.slices).</p>'
    metric = str(result.get("primary_metric") or "")
    return "".join(_slice_block(entry, metric) for entry in entries)


def _slice_block(entry: Mapping[str, Any], metric: str) -> str:
    bins = entry.get("bins")
    head = f"<h3>{esc(entry.get('column'))}{f' <span class=muted>bins {esc(bins)}</span>' if bins else ''}</h3>"
    if entry.get("error"):
        return f'{head}<p class="err">{esc(entry["error"])}</p>'
    note = f'<p class="warn">{esc(entry["note"])}</p>' if entry.get("note") else ""
    rows = []
    for group in entry.get("groups") or []:
        ours = (group.get("challenger") or {}).get(metric)
        theirs = (group.get("champion") or {}).get(metric)
        gain = (
            None if ours is None or theirs is None else (theirs - ours if metric in LOWER_IS_BETTER else ours - theirs)
        )
        small = '<span class="warn">small</span>' if group.get("small") else ""
        rows.append(
            f'<tr><td>{esc(group.get("group"))}</td><td class="n">{esc(group.get("rows"))}</td>'
            f'<td class="n">{esc(group.get("positives"))}</td><td class="n">{fmt(ours)}</td>'
            f'<td class="n">{fmt(theirs)}</td><td class="n">{fmt(gain, True)}</td><td>{small}</td></tr>'
        )
    table = (
        f"<table><tr><th>group</th><th>rows</th><th>positives</th><th>challenger {esc(metric)}</th>"
        f"<th>champion {esc(metric)}</th><th>gain</th><th></th></tr>{''.join(rows)}</table>"
    )
    return head + note + slice_bars_svg(entry, metric) + table


def slice_bars_svg(entry: Mapping[str, Any], metric: str) -> str:
    """Grouped bars of `metric` per slice group: challenger beside champion; small groups marked *."""
    groups = entry.get("groups") or []
    values = [(g, (g.get("challenger") or {}).get(metric), (g.get("champion") or {}).get(metric)) for g in groups]
    finite = [v for _, a, b in values for v in (a, b) if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return ""
    top_value = 1.0 if max(finite) <= 1.0 else math.ceil(max(finite))
    left, top, height, step = 48, 22, 160, 72
    parts = [_bar_axis(left, top, height, step * len(values), top_value)]
    for i, (group, ours, theirs) in enumerate(values):
        x = left + i * step + 10
        for j, (value, color, who) in enumerate(((ours, CHALLENGER, "challenger"), (theirs, CHAMPION, "champion"))):
            parts.append(_bar(x + j * 26, top, height, value, top_value, color, f"{group.get('group')} {who}"))
        label = str(group.get("group")) + (" *" if group.get("small") else "")
        shown = label if len(label) <= 12 else label[:11] + "…"
        parts.append(
            f'<text x="{x + 24}" y="{top + height + 14}" text-anchor="middle">'
            f"<title>{esc(label)}</title>{esc(shown)}</text>"
        )
    parts.append(
        f'<rect x="{left}" y="4" width="10" height="10" fill="{CHALLENGER}"/>'
        f'<text x="{left + 14}" y="13">challenger</text><rect x="{left + 90}" y="4" width="10" '
        f'height="10" fill="{CHAMPION}"/><text x="{left + 104}" y="13">champion</text>'
        f'<text x="{left + 180}" y="13" fill="#59636e">{esc(metric)} per group · * small</text>'
    )
    width = max(left + step * len(values) + 20, 420)
    return _svg(width, top + height + 24, f"{metric} per {entry.get('column')} group", "".join(parts))


def _bar_axis(left: float, top: float, height: float, width: float, top_value: float) -> str:
    lines = []
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + (1 - tick) * height
        lines.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#eaeef2"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick * top_value:g}</text>'
        )
    return "".join(lines)


def _bar(x: float, top: float, height: float, value: Any, top_value: float, color: str, label: str) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return f'<text x="{x + 12}" y="{top + height - 4}" text-anchor="middle" fill="#8c959f">n/a</text>'
    h = max(0.0, min(1.0, value / top_value)) * height
    return (
        f'<rect x="{x}" y="{top + height - h:.1f}" width="24" height="{h:.1f}" fill="{color}">'
        f"<title>{esc(label)}: {fmt(value)}</title></rect>"
    )
