"""Per-slice metrics of an evaluation: rows grouped by a column's value or by bins of it.

Pure functions, used by `core/evaluation.py`. A slice that cannot be built (missing column, bins on
text, too many text values) becomes an entry with an `error` and the evaluation goes on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.metrics import compute_metrics

if TYPE_CHECKING:
    import pandas as pd

MISSING = "missing"
MAX_DISTINCT = 20  # more distinct values than this fall back to quartile bins


def slice_metrics(
    specs: Sequence[Any], frame: pd.DataFrame | None, y: Any, chal: Any, champ: Any, names: Sequence[str],
    min_rows: int, *, task: str = "binary", classes: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """Per slice spec: {column, bins, groups: [{group, rows, positives (binary only), challenger, champion, small}],
    note?} or {column, bins, error} when the slice cannot be built (the evaluation goes on)."""
    scoring = {"task": task, "classes": classes}
    out = []
    for raw in specs:
        spec = _as_dict(raw)
        column, bins = spec["column"], spec.get("bins")
        entry: dict[str, Any] = {"column": column, "bins": list(bins) if bins is not None else None}
        try:
            labels, order, note = _group_labels(frame, column, bins)
        except _SliceError as exc:
            out.append({**entry, "error": str(exc)})
            continue
        masks = [(g, labels == g) for g in order]
        groups = [_group(g, mask, y, chal, champ, names, min_rows, scoring) for g, mask in masks if mask.any()]
        out.append({**entry, "groups": groups, **({"note": note} if note else {})})
    return out


class _SliceError(ValueError):
    """A slice that cannot be built; reported in its entry instead of failing the evaluation."""


def _group_labels(
    frame: pd.DataFrame | None, column: str, bins: Sequence[float] | None
) -> tuple[Any, list[str], str | None]:
    import pandas as pd

    if frame is None:
        raise _SliceError(f"slice column {column!r}: no slice_frame was given; pass the held-out rows")
    if column not in frame.columns:
        raise _SliceError(
            f"slice column {column!r} is not in the evaluation rows; available columns: "
            f"{sorted(map(str, frame.columns))}; fix evaluation.slices (a label-table column that is no "
            "model input comes in through features.entity_df.attributes)"
        )
    values = frame[column]
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if bins is not None:
        if not numeric:
            raise _SliceError(
                f"slice column {column!r} has dtype {values.dtype} but bins need numbers; "
                "remove evaluation.slices[].bins to group by value"
            )
        return (*_binned(values, list(bins)), None)
    distinct = int(values.nunique())
    if distinct <= MAX_DISTINCT:
        return _by_value(values)
    if not numeric:
        raise _SliceError(
            f"slice column {column!r} has {distinct} distinct values (more than "
            f"{MAX_DISTINCT}) and is not numeric; slice a column with fewer values"
        )
    # Rounded so the group labels show the exact edges used.
    edges = sorted({float(_num(q)) for q in values.quantile([0.25, 0.5, 0.75]).tolist()})
    note = (
        f"{distinct} distinct values (more than {MAX_DISTINCT}): grouped into quartile bins "
        f"at {[_edge(e) for e in edges]}; set evaluation.slices[].bins to choose the edges"
    )
    return (*_binned(values, edges), note)


def _binned(values: pd.Series, edges: list[float]) -> tuple[Any, list[str]]:
    """Groups "[a, b)" between edges, "< first" and ">= last" outside them, "missing" for NaN."""
    import numpy as np

    x = values.to_numpy(dtype=float, na_value=np.nan)
    inner = [f"[{_edge(a)}, {_edge(b)})" for a, b in pairwise(edges)]
    names = [f"< {_edge(edges[0])}", *inner, f">= {_edge(edges[-1])}", MISSING]
    position = np.searchsorted(np.asarray(edges, dtype=float), x, side="right")
    position[np.isnan(x)] = len(edges) + 1
    return np.asarray(names, dtype=object)[position], names


def _by_value(values: pd.Series) -> tuple[Any, list[str], None]:
    import numpy as np

    present = values.dropna().drop_duplicates().tolist()
    try:
        present.sort()
    except TypeError:  # mixed types: order by their text
        present.sort(key=str)
    labels = np.asarray([str(v) for v in values.tolist()], dtype=object)
    labels[values.isna().to_numpy()] = MISSING
    return labels, list(dict.fromkeys([*map(str, present), MISSING])), None


def _group(label: str, mask: Any, y: Any, chal: Any, champ: Any, names: Sequence[str], min_rows: int,
           scoring: Mapping[str, Any]) -> dict[str, Any]:
    rows = int(mask.sum())
    champion = compute_metrics(y[mask], champ[mask], names, **scoring) if champ is not None else None
    group: dict[str, Any] = {"group": label, "rows": rows}
    if scoring["task"] == "binary":
        group["positives"] = int(y[mask].sum())
    return {
        **group,
        "challenger": compute_metrics(y[mask], chal[mask], names, **scoring),
        "champion": champion,
        "small": rows < min_rows,
    }


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else dict(value.model_dump())


def _num(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4g}"


def _edge(value: float) -> str:
    return f"{value:g}"
