"""Templated operator arguments that carry another task's XCom result."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def as_dict(value: str | Mapping[str, Any]) -> dict[str, Any]:
    """A mapping argument given as a mapping or as its JSON text (a Jinja expression renders to text)."""
    return dict(json.loads(value) if isinstance(value, str) else value)
