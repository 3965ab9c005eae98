"""The model card's "Explanations" section: which features the version relies on, and how that ranking moved
since the version it is compared with (attribution drift, `core.explanations.ranking_drift`).

Inputs are the `explanations/global_importance.json` artifacts the training job logs with every version
(`core.explanations.held_out_importance`); a version trained before that has none, and the section says so.
Kept apart from core/model_card.py so the card's other sections and this one change independently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

TOP_K = 5
NOT_EXPLAINED = ("No global importance was logged for this version (trained before explanations were, or the "
                 "training job could not compute them; see its log).")


def explanation_summary(current: Mapping[str, Any] | None, previous: Mapping[str, Any] | None = None,
                        previous_label: str | None = None, top_k: int = TOP_K) -> dict[str, Any] | None:
    """{method, scoring, rows, held_out_rows, seed, top: [{feature, importance, std, rank}], drift?} of the card;
    `previous`: the importance of the version compared with (`previous_label`, e.g. "champion v3")."""
    from airflow_mlops.core.explanations import ranking_drift

    if not current or not current.get("features"):
        return None
    features = sorted(current["features"], key=lambda f: f["rank"])
    summary: dict[str, Any] = {key: current.get(key) for key in ("method", "scoring", "metric", "rows",
                                                                "held_out_rows", "seed", "repeats")}
    summary["top"] = [dict(f) for f in features[:top_k]]
    summary["features"] = len(features)
    if previous and previous.get("features"):
        drift = ranking_drift(previous["features"], features, top_k=top_k)
        tau = drift["kendall_tau"]
        summary["drift"] = {**drift, "kendall_tau": None if math.isnan(tau) else tau, "against": previous_label}
    return summary


def explanation_blocks(summary: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
    """The section's blocks (see core.model_card.Block)."""
    if not summary:
        return [("p", NOT_EXPLAINED)]
    blocks: list[tuple[Any, ...]] = [
        ("p", f"Permutation importance on {summary.get('rows')} of the {summary.get('held_out_rows')} held-out rows "
              f"(seed {summary.get('seed')}, {summary.get('repeats')} repeats): how much {summary.get('scoring')} "
              f"drops when one feature's values are shuffled. Top {len(summary['top'])} of "
              f"{summary.get('features')} features:" if summary.get("method") == "permutation" else
              f"{summary.get('method')} importance, top {len(summary['top'])} of {summary.get('features')} features:"),
        ("table", ["rank", "feature", "importance", "std"],
         [[f["rank"], f["feature"], f"{f['importance']:.4f}", f"{f['std']:.4f}"] for f in summary["top"]]),
    ]
    drift = summary.get("drift")
    if not drift:
        blocks.append(("p", "Attribution drift: no earlier version with explanations to compare with."))
        return blocks
    tau = drift.get("kendall_tau")
    blocks.append(("kv", [
        ("attribution drift vs", drift.get("against")),
        ("rank agreement (Kendall tau, 1 = same order)", f"{tau:.3f}" if tau is not None else None),
        (f"entered the top {drift['top_k']}", ", ".join(drift["entered_top"]) or "none"),
        (f"left the top {drift['top_k']}", ", ".join(drift["left_top"]) or "none"),
        ("features only in this version", ", ".join(drift["only_current"]) or None),
        ("features only in the earlier version", ", ".join(drift["only_previous"]) or None),
    ]))
    return blocks
