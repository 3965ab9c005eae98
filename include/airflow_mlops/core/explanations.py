"""Explanations: which features a version relies on (global), and why one prediction came out as it did (local).

* **Global**: scikit-learn's `permutation_importance` on the held-out rows with the task's scorer (the drop in
  the spec's primary metric when one column is shuffled), seeded, so the same version and rows give the same
  numbers. `method: shap` uses SHAP's model-agnostic `Explainer` (mean |SHAP value| per feature) when the user
  has installed `shap`; it is not a dependency, and asking for it without it fails naming the fix.
* **Local** (`/predict?explain=true`): baseline substitution, one feature at a time: contribution_i =
  f(x) - f(x with feature i set to its training-set median). The original row, the K substituted rows and the
  all-baseline row go to the model in **one** predict call, so the cost is one batch of K + 2 rows
  (docs/benchmarks.md), and it is exact and deterministic. It is not SHAP: the contributions add up to
  f(x) - f(baseline) (both in the answer) only when the features do not interact in f (a linear regression's
  value, a linear classifier's score before its link); for a probability or a tree ensemble the gap is the
  interaction the method leaves unassigned. The answer says which method made it.
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
    """Contribution of each feature of a one-row DataFrame to `predict`'s output (its last column when it has
    several: a binary classifier's positive class; pass a 1-D predict for another column), see the module."""
    import numpy as np
    import pandas as pd

    columns = [str(c) for c in row.columns]
    missing = [c for c in columns if c not in baseline]
    if missing:
        raise ValueError(f"no training-set baseline for feature(s) {missing}: the version was trained without "
                         "them in its feature profile; retrain it to explain its predictions")
    # built as one float64 matrix (pandas row-by-row assignment cost ~1 ms per explained row at serving)
    values = row.to_numpy(dtype=np.float64)[0]
    medians = np.array([float(baseline[c]) for c in columns], dtype=np.float64)
    k = len(columns)
    batch = np.repeat(values[None, :], k + 2, axis=0)
    batch[np.arange(1, k + 1), np.arange(k)] = medians  # row i: feature i-1 at its baseline
    batch[k + 1] = medians  # the baseline itself: f(baseline)
    scores = np.asarray(predict(pd.DataFrame(batch, columns=row.columns, copy=False)), dtype=float)
    scores = scores if scores.ndim == 1 else scores[:, -1]  # binary: the positive class's probability
    originals = row.iloc[0].tolist()
    contributions = [{"feature": c, "value": _plain(originals[i - 1]), "baseline": float(medians[i - 1]),
                      "contribution": float(scores[0] - scores[i])} for i, c in enumerate(columns, start=1)]
    contributions.sort(key=lambda item: (-abs(item["contribution"]), item["feature"]))
    return {"method": LOCAL_METHOD, "output": float(scores[0]), "baseline_output": float(scores[-1]),
            "attributions": contributions}


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


# ------------------------------------------------------------------------------------- per version, at training
IMPORTANCE_ARTIFACT = "explanations/global_importance.json"
TAG_IMPORTANCE = "airflow_mlops.explanations"  # run tag: the artifact's path (absent: the version was not explained)
MAX_ROWS = 2000  # held-out rows permuted at most: bounds the cost to K x REPEATS predicts of MAX_ROWS rows
REPEATS = 3


def held_out_importance(model: Any, x: Any, y: Any, *, metric: str, seed: int, max_rows: int = MAX_ROWS,
                        repeats: int = REPEATS, method: str = "permutation") -> dict[str, Any]:
    """`global_importance` on at most `max_rows` of the held-out rows, drawn with `seed` (same rows, same numbers).

    `metric`: the spec's primary metric, so an importance is the drop in the metric the version is judged on."""
    import numpy as np

    held = len(x)
    if held > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(held, size=max_rows, replace=False))
        x, y = x.iloc[keep], (y.iloc[keep] if hasattr(y, "iloc") else np.asarray(y)[keep])
    found = global_importance(model, x, y, metric=metric, seed=seed, repeats=repeats, method=method)
    return {**found, "metric": metric, "held_out_rows": held}


def profile_baseline(profile: Mapping[str, Any] | None) -> dict[str, float] | None:
    """The per-feature medians of a training-set feature profile (core.training.feature_profile), the baseline of
    `local_attributions`; None when the profile has no median (logged before medians were) or no profile."""
    columns = (profile or {}).get("columns")
    if not isinstance(columns, Mapping) or not columns:
        return None
    medians: dict[str, float] = {}
    for name, entry in columns.items():
        value = entry.get("median") if isinstance(entry, Mapping) else None
        if not isinstance(value, (int, float)):
            return None  # an older profile (no medians), or a column without one finite value: nothing stands for it
        medians[str(name)] = float(value)
    return medians
