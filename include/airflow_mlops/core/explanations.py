"""Explanations: which features a version relies on (global), and why one prediction came out as it did (local).

* **Global**: scikit-learn's `permutation_importance` on the held-out rows with the task's scorer (the drop in
  the spec's primary metric when one column is shuffled), seeded, so the same version and rows give the same
  numbers. `method: shap` uses SHAP's model-agnostic `Explainer` (mean |SHAP value| per feature) when the user
  has installed `shap`; it is not a dependency, and asking for it without it fails naming the fix.
* **Local** (`/predict?explain=true`): baseline substitution, one feature at a time: contribution_i =
  f(x) - f(x with feature i set to its training-set median). All K substituted rows and the original go to the
  model in **one** predict call, so the cost is one batch of K + 1 rows (docs/benchmarks.md), and it is exact
  and deterministic. It is not SHAP: the contributions need not add up to f(x) - f(baseline) when features
  interact; the answer says which method made it.
* **Attribution drift**: how much the importance ranking moved between two versions (Kendall's tau over the
  features both have, and the top-k entering and leaving), for the model card.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

LOCAL_METHOD = "baseline_substitution"


def scorer_of(metric: str) -> str:
    """scikit-learn scorer name of a spec metric (higher is better, as sklearn scorers are)."""
    from airflow_mlops.core.search import SCORERS

    if metric not in SCORERS:
        raise ValueError(f"no scikit-learn scorer for metric {metric!r}; known: {sorted(SCORERS)}")
    return SCORERS[metric]


def global_importance(model: Any, x: Any, y: Any, *, metric: str, seed: int, repeats: int = 5,
                      method: str = "permutation") -> dict[str, Any]:
    """Per feature column of `x` (a DataFrame): importance, its spread, and rank (1 = most important)."""
    columns = [str(c) for c in x.columns]
    if method == "shap":
        values, spread, scoring = _shap_importance(model, x, seed), [0.0] * len(columns), "mean_abs_shap"
    elif method == "permutation":
        from sklearn.inspection import permutation_importance

        scoring = scorer_of(metric)
        found = permutation_importance(model, x, y, scoring=scoring, n_repeats=repeats, random_state=seed,
                                       n_jobs=1)
        values, spread = [float(v) for v in found.importances_mean], [float(v) for v in found.importances_std]
    else:
        raise ValueError(f"explanations.method: got {method!r}; allowed: ['permutation', 'shap']")
    order = sorted(range(len(columns)), key=lambda i: (-values[i], columns[i]))
    ranks = {index: rank for rank, index in enumerate(order, start=1)}
    features = [{"feature": columns[i], "importance": values[i], "std": spread[i], "rank": ranks[i]} for i in order]
    return {"method": method, "scoring": scoring, "rows": len(x), "seed": seed, "repeats": repeats,
            "features": features}


def _shap_importance(model: Any, x: Any, seed: int) -> list[float]:
    try:
        import shap
    except ImportError as exc:
        raise ValueError("explanations.method: shap needs the `shap` package, which is not installed; "
                         "`pip install shap` in the environment that trains, or use method: permutation") from exc
    import numpy as np

    predict = model.predict_proba if hasattr(model, "predict_proba") else model.predict
    background = x.sample(n=min(100, len(x)), random_state=seed)
    explanation = shap.Explainer(predict, background, seed=seed)(x.head(500))
    values = np.abs(np.asarray(explanation.values))
    return [float(v) for v in values.reshape(values.shape[0], values.shape[1], -1).mean(axis=(0, 2))]


def local_attributions(predict: Callable[[Any], Any], row: Any, baseline: Mapping[str, float]) -> dict[str, Any]:
    """Contribution of each feature of a one-row DataFrame to `predict`'s first output column (see module)."""
    import numpy as np
    import pandas as pd

    columns = [str(c) for c in row.columns]
    missing = [c for c in columns if c not in baseline]
    if missing:
        raise ValueError(f"no training-set baseline for feature(s) {missing}: the version was trained without "
                         "them in its feature profile; retrain it to explain its predictions")
    batch = pd.concat([row] * (len(columns) + 1), ignore_index=True)
    for i, column in enumerate(columns, start=1):
        batch.loc[i, column] = baseline[column]
    scores = np.asarray(predict(batch), dtype=float)
    scores = scores if scores.ndim == 1 else scores[:, -1]  # binary: the positive class's probability
    contributions = [{"feature": c, "value": _plain(row.iloc[0][c]), "baseline": float(baseline[c]),
                      "contribution": float(scores[0] - scores[i])} for i, c in enumerate(columns, start=1)]
    contributions.sort(key=lambda item: (-abs(item["contribution"]), item["feature"]))
    return {"method": LOCAL_METHOD, "output": float(scores[0]), "attributions": contributions}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def ranking_drift(previous: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]],
                  top_k: int = 5) -> dict[str, Any]:
    """How the importance ranking moved between two versions' `features` lists (global_importance)."""
    from scipy.stats import kendalltau

    before = {f["feature"]: f["rank"] for f in previous}
    after = {f["feature"]: f["rank"] for f in current}
    common = sorted(set(before) & set(after))
    tau = float(kendalltau([before[c] for c in common], [after[c] for c in common]).statistic) \
        if len(common) >= 2 else float("nan")
    top_before = [f["feature"] for f in sorted(previous, key=lambda f: f["rank"])[:top_k]]
    top_after = [f["feature"] for f in sorted(current, key=lambda f: f["rank"])[:top_k]]
    return {"kendall_tau": tau, "top_k": top_k, "top_previous": top_before, "top_current": top_after,
            "entered_top": [f for f in top_after if f not in top_before],
            "left_top": [f for f in top_before if f not in top_after],
            "only_previous": sorted(set(before) - set(after)), "only_current": sorted(set(after) - set(before))}
