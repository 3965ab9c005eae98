"""Model cards: what a model version is, what it was trained and judged on, and what to watch for.

`build_model_card` gathers the spec's model fields, the training-set lineage (with its data
validation summary), the training config and `EvaluationResult.to_dict()` into one JSON-able dict;
`render_markdown` (for the MLflow model version description) and `render_html` (a self-contained
page) lay it out. Any input may be partial: a first model has no champion, an older run may have
no validation record; the card then says "not recorded" instead of failing the task. The evaluation
section reads per task (the report's `task`, absent = binary): positives and ROC curves for binary,
classes with their recall and the confusion matrix for multiclass, predicted vs actual and residuals
for regression. The fairness section and its caveats (spec `evaluation.fairness`) are built by the
`_fairness*` functions at the end, from the report's `fairness` entry; a report without one has no section.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_mlops.core import task_charts
from airflow_mlops.core.evaluation_report import fairness_section, roc_chart
from airflow_mlops.core.model_card_explanations import explanation_blocks
from airflow_mlops.core.tasks import LOWER_IS_BETTER
from airflow_mlops.core.templating import render

__all__ = ["build_model_card", "render_html", "render_markdown"]

NOT_RECORDED = "not recorded"
TOP_FAILURES = 5
# A block is one of ("p", text) ("kv", [(key, value)]) ("table", headers, rows) ("list", items) or a chart:
# ("roc" | "scatter" | "histogram" | "confusion", geometry); templates/model_card.{html,md}.j2 lay them out.
Block = tuple[Any, ...]


def build_model_card(
    *,
    model: Mapping[str, Any],
    version: str | None,
    run_id: str | None,
    lineage: Mapping[str, Any] | None,
    evaluation: Mapping[str, Any] | None,
    training: Mapping[str, Any] | None = None,
    explanations: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The card as plain JSON-able data; every section tolerates missing inputs. `explanations`:
    `core.model_card_explanations.explanation_summary` of the version (None: not explained)."""
    lineage, evaluation, training = dict(lineage or {}), dict(evaluation or {}), dict(training or {})
    task = str(evaluation.get("task") or model.get("task") or "binary")
    card = {
        "task": task,
        "model": {
            **{k: model.get(k) for k in ("name", "description", "owner")},
            "tags": list(model.get("tags") or []),
            "version": version,
            "run_id": run_id,
        },
        "intended_use": model.get("intended_use") or "",
        "limitations": model.get("limitations") or "",
        "training": {k: training.get(k) for k in ("estimator", "params", "preprocessing", "split", "seed")},
        "feature_columns": list(training.get("feature_columns") or []),
        "data": _data(lineage),
        "validation": _validation(lineage.get("validation")),
        "evaluation": _evaluation(evaluation),
        "comparison": evaluation.get("comparison"),
        "verdict": evaluation.get("verdict"),
        "curves": evaluation.get("curves") or {},
        "classes": evaluation.get("classes"),
        "fairness": fairness_section(evaluation.get("fairness")),
        "explanations": dict(explanations) if explanations else None,
    }
    card["caveats"] = _caveats(card, evaluation)
    plain: dict[str, Any] = json.loads(json.dumps(card, default=str))
    return plain


def _data(lineage: Mapping[str, Any]) -> dict[str, Any]:
    views = lineage.get("feature_views") or {}
    if isinstance(views, Mapping):
        listed = [{"name": name, **(info if isinstance(info, Mapping) else {})} for name, info in views.items()]
    else:
        listed = [{"name": name} for name in views]
    missing = {str(k): int(v) for k, v in (lineage.get("missing") or {}).items() if v}
    keep = ("path", "sha256", "rows", "start", "end", "feature_service")
    return {**{k: lineage.get(k) for k in keep}, "feature_views": listed, "missing": missing}


def _validation(summary: Any) -> dict[str, Any] | None:
    """The GX summary's scalars and statistics, and its failures as one line each."""
    if not isinstance(summary, Mapping) or not summary:
        return None
    scalars = {k: v for k, v in summary.items() if isinstance(v, str | int | float | bool) or v is None}
    failures = summary.get("failures")
    if failures is None:  # a raw GX result: the failed expectations are the unsuccessful results
        failures = [r for r in summary.get("results") or [] if isinstance(r, Mapping) and not r.get("success")]
    count = summary.get("failure_count", len(failures))
    described = [_describe_failure(f) for f in failures[:TOP_FAILURES]]
    return {
        **scalars,
        "statistics": dict(summary.get("statistics") or {}),
        "failures": described,
        "failure_count": count,
    }


def _describe_failure(failure: Any) -> str:
    if not isinstance(failure, Mapping):
        return str(failure)
    config = failure.get("expectation_config") or {}
    rule = failure.get("rule") or config.get("type") or "expectation"
    column = failure.get("column") or (config.get("kwargs") or {}).get("column")
    text = f"{'column ' + repr(column) if column else 'table'}: {rule}"
    if failure.get("unexpected_count") is not None:
        text += f": {failure['unexpected_count']} unexpected"
    return text + (f" — {str(failure['detail'])[:200]}" if failure.get("detail") else "")


def _evaluation(result: Mapping[str, Any]) -> dict[str, Any]:
    primary = result.get("primary_metric")
    ours = (result.get("challenger") or {}).get("metrics") or {}
    theirs = (result.get("champion") or {}).get("metrics") or {}
    metrics = [
        {"metric": m, "challenger": v, "champion": theirs.get(m), "gain": _gain(m, v, theirs.get(m))}
        for m, v in ours.items()
    ]
    slices = [_slice_summary(s, str(primary), ours.get(primary)) for s in result.get("slices") or []]
    ranked = [s["worst"] for s in slices if s.get("worst") and s["worst"]["shortfall"] is not None]
    return {
        **{k: result.get(k) for k in ("rows", "positives", "primary_metric")},
        "task": str(result.get("task") or "binary"),
        "challenger_version": (result.get("challenger") or {}).get("version"),
        "metrics": metrics,
        "thresholds": list(result.get("thresholds") or []),
        "slices": slices,
        "worst_slice": max(ranked, key=lambda w: w["shortfall"]) if ranked else None,
    }


def _gain(metric: str, ours: Any, theirs: Any) -> float | None:
    if ours is None or theirs is None:
        return None
    return float(theirs - ours if metric in LOWER_IS_BETTER else ours - theirs)


def _slice_summary(entry: Mapping[str, Any], metric: str, overall: Any) -> dict[str, Any]:
    """Per slice: group counts and the worst group on the primary metric (small groups only if all are)."""
    groups = [g for g in entry.get("groups") or [] if (g.get("challenger") or {}).get(metric) is not None]
    summary = {k: entry.get(k) for k in ("column", "bins", "note", "error")}
    summary.update(
        groups=len(entry.get("groups") or []), small=[g["group"] for g in entry.get("groups") or [] if g.get("small")]
    )
    pool = [g for g in groups if not g.get("small")] or groups
    if not pool:
        return {**summary, "worst": None}
    sign = -1 if metric in LOWER_IS_BETTER else 1
    worst = min(pool, key=lambda g: sign * g["challenger"][metric])
    value = worst["challenger"][metric]
    shortfall = None if overall is None else sign * (overall - value)
    found = {"column": entry.get("column"), "group": worst["group"], "value": value, "rows": worst.get("rows")}
    return {
        **summary,
        "worst": {**found, "small": bool(worst.get("small")), "overall": overall, "shortfall": shortfall},
    }


def _caveats(card: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[str]:
    notes = []
    if not evaluation:
        notes.append(f"evaluation {NOT_RECORDED}: this card does not say how well the model performs")
    elif card["comparison"] is None:
        notes.append("first model (no champion): promotion rested on the thresholds alone")
    if card["validation"] is None:
        notes.append(f"data validation of the training set {NOT_RECORDED}")
    elif card["validation"].get("success") is False:
        notes.append(f"the training set failed data validation ({card['validation']['failure_count']} failure(s))")
    notes += _data_caveats(card["data"], card["training"])
    notes += _evaluation_caveats(card["evaluation"], card["comparison"])
    notes += _fairness_caveats(card.get("fairness"))
    return notes


def _data_caveats(data: Mapping[str, Any], training: Mapping[str, Any]) -> list[str]:
    notes = []
    rows = data.get("rows")
    impute = (training.get("preprocessing") or {}).get("impute")
    how = f"imputed ({impute})" if impute and impute != "none" else "passed to the estimator as NaN"
    for column, count in data["missing"].items():
        share = f" ({100 * count / rows:.1f} %)" if isinstance(rows, int) and rows else ""
        notes.append(f"feature {column} is missing in {count} training rows{share}; {how}")
    if not data.get("sha256"):
        notes.append(f"training-set lineage {NOT_RECORDED}: the data cannot be traced to a snapshot")
    return notes


def _evaluation_caveats(ev: Mapping[str, Any], comparison: Mapping[str, Any] | None) -> list[str]:
    notes = [f"{m['metric']} is undefined on the evaluation rows" for m in ev["metrics"] if m["challenger"] is None]
    for entry in ev["slices"]:
        if entry.get("error"):
            notes.append(f"slice {entry['column']}: {entry['error']}")
        if entry.get("note"):
            notes.append(f"slice {entry['column']}: {entry['note']}")
        if entry.get("small"):
            notes.append(
                f"slice {entry['column']}: group(s) {entry['small']} have fewer than evaluation."
                "min_slice_rows rows; their metrics are noisy"
            )
    if comparison and comparison.get("samples_used", 0) < comparison.get("samples_requested", 0):
        why = "drew one class only" if ev.get("task") == "binary" else "left the metric undefined"
        notes.append(
            f"bootstrap used {comparison['samples_used']} of {comparison['samples_requested']} resamples "
            f"(the rest {why})"
        )
    return notes


def _sections(card: Mapping[str, Any]) -> list[tuple[str, list[Block]]]:
    m, t = card["model"], card["training"]
    details: list[Block] = [
        (
            "kv",
            [
                ("name", m.get("name")),
                ("version", m.get("version")),
                ("MLflow run", m.get("run_id")),
                ("owner", m.get("owner")),
                ("tags", ", ".join(m.get("tags") or []) or None),
                ("task", card.get("task")),
                ("classes", ", ".join(map(str, (card.get("classes") or {}).get("labels") or [])) or None),
                ("estimator", t.get("estimator")),
                ("params", _json(t.get("params"))),
                ("preprocessing", _json(t.get("preprocessing"))),
                ("split", _json(t.get("split"))),
                ("seed", t.get("seed")),
                ("features", _features(card["feature_columns"])),
            ],
        )
    ]
    if m.get("description"):
        details.insert(0, ("p", m["description"]))
    return [
        ("Model details", details),
        ("Intended use", [("p", card["intended_use"] or NOT_RECORDED)]),
        ("Limitations", [("p", card["limitations"] or NOT_RECORDED)]),
        ("Training data and lineage", _data_blocks(card["data"])),
        ("Data validation", _validation_blocks(card["validation"])),
        ("Evaluation", _evaluation_blocks(card["evaluation"], card.get("curves") or {}, card.get("classes"))),
        *_fairness_sections(card.get("fairness")),
        ("Comparison with the champion and verdict", _verdict_blocks(card)),
        ("Explanations", explanation_blocks(card.get("explanations"))),
        ("Caveats", [("list", card["caveats"])] if card["caveats"] else [("p", "none noted")]),
    ]


def _data_blocks(data: Mapping[str, Any]) -> list[Block]:
    window = f"{data['start']} → {data['end']}" if data.get("start") or data.get("end") else None
    blocks: list[Block] = [
        (
            "kv",
            [
                ("feature service", data.get("feature_service")),
                ("time window", window),
                ("rows", data.get("rows")),
                ("snapshot sha256", data.get("sha256")),
                ("snapshot path", data.get("path")),
            ],
        )
    ]
    if data["feature_views"]:
        rows = [
            [v.get("name"), v.get("version"), v.get("spec_sha256"), len(v.get("features") or []) or None]
            for v in data["feature_views"]
        ]
        blocks.append(("table", ["feature view", "version", "spec sha256", "features"], rows))
    missing = data["missing"]
    blocks.append(
        ("table", ["feature", "missing values"], [[k, v] for k, v in missing.items()])
        if missing
        else ("p", "Missing feature values: none.")
    )
    return blocks


def _validation_blocks(validation: Mapping[str, Any] | None) -> list[Block]:
    if validation is None:
        return [("p", f"Data validation: {NOT_RECORDED}.")]
    stats = validation.get("statistics") or {}
    pairs = [(k, validation.get(k)) for k in ("suite", "dataset", "success", "rows", "validated_at")]
    pairs += [(k.replace("_", " "), v) for k, v in stats.items()]
    pairs.append(("failures", validation.get("failure_count")))
    blocks: list[Block] = [("kv", pairs)]
    if validation["failures"]:
        blocks.append(("list", validation["failures"]))
    return blocks


def _evaluation_blocks(ev: Mapping[str, Any], curves: Mapping[str, Any], classes: Mapping[str, Any] | None
                       ) -> list[Block]:
    if not ev.get("metrics"):
        return [("p", f"Evaluation: {NOT_RECORDED}.")]
    task = ev.get("task") or "binary"
    counted = {"binary": f", {ev.get('positives')} positives",
               "multiclass": f" of {len((classes or {}).get('labels') or [])} classes"}.get(task, "")
    blocks: list[Block] = [
        ("p", f"{ev.get('rows')} held-out rows{counted}; task {task}; primary metric {ev.get('primary_metric')}.")
    ]
    rows = [[m["metric"], "lower" if m["metric"] in LOWER_IS_BETTER else "higher", _n(m["challenger"]),
             _n(m["champion"]), _n(m["gain"], True)] for m in ev["metrics"]]
    blocks.append(("table", ["metric", "better", "challenger", "champion", "gain"], rows))
    if ev["thresholds"]:
        rows = [
            [c["metric"], c.get("min"), c.get("max"), _n(c.get("value")), c.get("passed")] for c in ev["thresholds"]
        ]
        blocks.append(("table", ["threshold", "min", "max", "value", "passed"], rows))
    blocks += _chart_blocks(task, ev, curves, classes)
    if ev["slices"]:
        head = ["slice", "groups", "worst group", f"its {ev['primary_metric']}", "small groups"]
        blocks.append(("table", head, [_slice_row(s) for s in ev["slices"]]))
    worst = ev.get("worst_slice")
    if worst:
        blocks.append(
            (
                "p",
                f"Worst slice: {worst['column']} = {worst['group']}: {ev['primary_metric']} "
                f"{_n(worst['value'])} vs {_n(worst['overall'])} overall ({worst['rows']} rows).",
            )
        )
    return blocks


def _chart_blocks(task: str, ev: Mapping[str, Any], curves: Mapping[str, Any], classes: Mapping[str, Any] | None
                  ) -> list[Block]:
    """The task's charts: ROC curves; predicted vs actual and residuals; confusion matrix and per-class recall."""
    if task == "regression":
        return [("scatter", task_charts.scatter_chart(curves)),
                ("histogram", task_charts.residual_histogram(curves.get("challenger")))]
    if task == "multiclass":
        rows = [[r["label"], r["rows"], _n(r["challenger"]), _n(r["champion"]), _n(r["gain"], True)]
                for r in task_charts.class_rows(classes)]
        return [("confusion", task_charts.confusion_chart(classes)),
                ("table", ["class", "rows", "challenger recall", "champion recall", "gain"], rows)]
    scores = {who: {"metrics": {m["metric"]: m[who] for m in ev["metrics"]}} for who in ("challenger", "champion")}
    return [("roc", roc_chart(curves, scores))]


def _slice_row(s: Mapping[str, Any]) -> list[Any]:
    worst = s.get("worst") or {}
    return [
        s["column"],
        s["groups"],
        worst.get("group") or s.get("error"),
        _n(worst.get("value")),
        ", ".join(map(str, s["small"])) or None,
    ]


def _verdict_blocks(card: Mapping[str, Any]) -> list[Block]:
    verdict, c = card.get("verdict") or {}, card.get("comparison")
    if c:
        level = f"{100 * c['confidence']:g}%" if c.get("confidence") is not None else ""
        text = (
            f"{c.get('metric')}: challenger {_n(c.get('challenger'))} vs champion {_n(c.get('champion'))}, gain "
            f"{_n(c.get('gain'), True)} ({level} CI [{_n(c.get('ci_low'), True)}, {_n(c.get('ci_high'), True)}], "
            f"{c.get('samples_used')} paired bootstrap resamples, rule {c.get('rule')})."
        )
    else:
        text = "No champion: this is the first model version judged for this name."
    if not verdict:
        return [("p", text), ("p", f"Verdict: {NOT_RECORDED}.")]
    decision = "promote" if verdict.get("promote") else "do not promote"
    return [("p", text), ("p", f"Verdict: {decision}."), ("list", list(verdict.get("reasons") or []))]


def render_markdown(card: Mapping[str, Any]) -> str:
    """Markdown for the model version description; text is HTML-escaped so no markup slips through."""
    m = card["model"]
    text = render("model_card.md.j2", name=m.get("name"), version=m.get("version"), sections=_sections(card))
    return text.rstrip() + "\n"


def render_html(card: Mapping[str, Any]) -> str:
    """A self-contained page (inline CSS and SVG, no script, no URL); all text escaped by the template."""
    m = card["model"]
    return render(
        "model_card.html.j2",
        title=f"Model card: {m.get('name')} v{m.get('version') or '?'}",
        has_verdict=bool(card.get("verdict")),
        promote=(card.get("verdict") or {}).get("promote"),
        sections=_sections(card),
    )


def _n(value: Any, signed: bool = False) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _json(value: Any) -> str | None:
    return None if value in (None, {}, []) else json.dumps(value, sort_keys=True, default=str)


def _features(columns: Sequence[str]) -> str | None:
    return f"{len(columns)}: {', '.join(columns)}" if columns else None


# --- Fairness (spec evaluation.fairness): self-contained, read from card["fairness"] (fairness_section's shape).

def _fairness_sections(fairness: Mapping[str, Any] | None) -> list[tuple[str, list[Block]]]:
    """The "Fairness" section, or none when the spec asked for no fairness metrics."""
    return [("Fairness", _fairness_blocks(fairness))] if fairness else []


def _fairness_blocks(fairness: Mapping[str, Any]) -> list[Block]:
    config = fairness.get("config") or {}
    blocks: list[Block] = [("p", (
        f"Group columns {', '.join(map(str, config.get('groups') or []))}; on the held-out rows, hard predictions. "
        f"Bounds: *_difference at most {config.get('max')}, *_ratio at least {config.get('min_ratio')}; groups "
        f"with fewer than {config.get('min_group_rows')} rows are not compared. A challenger breach blocks "
        "promotion; the champion is shown for comparison."))]
    rows = [[column["name"], m["metric"], _n(m["challenger"]), _n(m["champion"]), m["bound"],
             "breached" if m["breached"] else "within"]
            for column in fairness.get("columns") or [] for m in column["metrics"]]
    if rows:
        blocks.append(("table", ["group column", "metric", "challenger", "champion", "bound", "challenger is"], rows))
    skipped = [f"{c['name']}: {', '.join(map(str, c['skipped']))}" for c in fairness.get("columns") or []
               if c["skipped"]]
    if skipped:
        blocks.append(("p", "Groups not compared (too few rows):"))
        blocks.append(("list", skipped))
    return blocks


def _fairness_caveats(fairness: Mapping[str, Any] | None) -> list[str]:
    """A breached bound (challenger or champion) and groups too small to compare are caveats of the card."""
    if not fairness:
        return []
    notes = [f"{b} (the challenger is not promoted on this evidence)" for b in fairness.get("breaches") or []]
    for column in fairness.get("columns") or []:
        notes += [f"fairness {column['name']}: champion {m['metric']} {_n(m['champion'])} also breaks its bound "
                  f"{m['bound']}" for m in column["metrics"] if m.get("champion_breached")]
        if column["skipped"]:
            notes.append(f"fairness {column['name']}: group(s) {column['skipped']} have fewer than "
                         f"evaluation.fairness.min_group_rows rows and were not compared; fairness toward them is "
                         "unmeasured")
    return notes
