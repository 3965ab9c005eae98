"""The one Jinja2 environment every HTML page and Markdown card of the package is rendered with.

Templates are package files under `airflow_mlops/templates/` (shipped in the wheel), not strings.
Autoescape is on for every template: model names, descriptions, column names, slice values, run ids
and versions are user data, and escaping them is Jinja's job, not ours. `StrictUndefined` turns a
misspelt variable into an error instead of an empty cell. Jinja2 is imported on first render: the
DAG files and the plugin import modules that import this one.
"""

from __future__ import annotations

import json
import math
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = ["environment", "fmt", "render"]


def fmt(value: Any, signed: bool = False) -> str:
    """A metric for display: 4 decimals, an em dash when absent or undefined, anything else as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return str(value)


def _text(value: Any) -> str:
    """Strings as they are, anything else (lists, dicts, numbers) as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _markdown(value: Any, table: bool = True) -> str:
    """A Markdown inline: None as an em dash, whitespace flattened, pipes escaped inside table rows.

    Autoescape then HTML-escapes it, since MLflow renders the Markdown as HTML.
    """
    text = "—" if value is None else str(value)
    return " ".join((text.replace("|", "\\|") if table else text).split())


def _blank_none(value: Any) -> Any:
    # `{{ x }}` with x None prints "" rather than "None": records are partial (a first model, an old run).
    return "" if value is None else value


@cache
def environment() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("airflow_mlops", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_blank_none,
    )
    env.filters.update(fmt=fmt, text=_text, md=_markdown)
    return env


def render(template: str, /, **context: Any) -> str:
    """Render `templates/<template>` with `context`."""
    return environment().get_template(template).render(**context)
