"""Edit a parsed model spec by dotted names: `evaluation__thresholds={...}` sets data["evaluation"]["thresholds"]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def with_fields(data: dict[str, Any], **fields: object) -> dict[str, Any]:
    """`data` with each `a__b__c=value` set (in place; returned for chaining)."""
    for dotted, value in fields.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return data


def read_with_fields(path: Path, **fields: object) -> dict[str, Any]:
    """The YAML spec at `path`, parsed, with `fields` set."""
    return with_fields(yaml.safe_load(path.read_text()), **fields)
