"""Templated operator arguments that carry another task's XCom result."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def as_dict(value: str | Mapping[str, Any]) -> dict[str, Any]:
    """A mapping argument given as a mapping or as its JSON text (a Jinja expression renders to text)."""
    return dict(json.loads(value) if isinstance(value, str) else value)


JSON_SAFE_INT = 2**53  # larger integers lose precision in JavaScript (the Airflow UI) and many JSON readers


def json_safe(value: Any) -> Any:
    """`value` as strict JSON data: what an XCom, a summary or a report may carry, whatever the batch held.

    Non-finite floats become the strings "NaN", "Infinity", "-Infinity" (JSON has no such numbers and
    `json.dumps` writes invalid JSON for them); integers beyond ±2**53 and unknown objects become
    strings; numpy scalars and arrays, timestamps, sets and tuples become their JSON counterparts.
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return _scalar(_plain(value))


def _plain(value: Any) -> Any:
    """numpy scalars/arrays as Python values, timestamps as ISO text, bytes as text; others unchanged."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    item, tolist = getattr(value, "item", None), getattr(value, "tolist", None)
    if callable(item) and getattr(value, "ndim", 1) == 0:  # numpy scalar
        return item()
    if callable(tolist):  # numpy array
        return json_safe(tolist())
    isoformat = getattr(value, "isoformat", None)  # datetime, date, pandas Timestamp (NaT: "NaT")
    if callable(isoformat):
        return str(isoformat())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def _scalar(value: Any) -> Any:
    import math

    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, int):
        return value if -JSON_SAFE_INT <= value <= JSON_SAFE_INT else str(value)
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
