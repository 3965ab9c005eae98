"""Validation reports: the full result as JSON and a self-contained HTML page, under the state dir.

GX Data Docs pull their CSS/JS from CDNs, so they do not render offline; these pages are plain HTML
with inline CSS, no script and no external URL.

Layout (`root` = `MLOPS_HOME/reports/validation`) and the URL each file is served under (the UI
plugin maps `/mlops/reports/validation/<relpath>` to `root/<relpath>`)::

    <dataset>/<batch_id>/result.json    full result: contract rules, GX result, statistics
    <dataset>/<batch_id>/report.html    the page the task's "Validation report" link opens
    _runs/<dag_id>/<run_id>/<task_id>/index.html   one page per multi-file task run, linking each batch

`batch_id` is the batch's content hash, so re-validating the same bytes rewrites the same report.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_mlops.core.offline import atomic_write_bytes
from airflow_mlops.core.validation import describe_failure
from airflow_mlops.core.xcom import json_safe

URL_PREFIX = "/mlops/reports/validation"
RUNS_SUBDIR = "_runs"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1f2328;background:#fff}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
.badge{display:inline-block;padding:.1rem .6rem;border-radius:1rem;font-weight:600;color:#fff}
.ok{background:#1a7f37}.bad{background:#cf222e}.warn{background:#9a6700}
table{border-collapse:collapse;width:100%;margin:.4rem 0}th,td{border:1px solid #d0d7de;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}code,pre{font:12px ui-monospace,monospace}
pre{background:#f6f8fa;padding:.6rem;overflow:auto;white-space:pre-wrap}.muted{color:#59636e}
"""


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value, default=str))


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def _badge(success: bool, mode: str = "fail") -> str:
    if success:
        return '<span class="badge ok">passed</span>'
    return '<span class="badge warn">failed (warn mode)</span>' if mode == "warn" else \
        '<span class="badge bad">failed</span>'


def render_html(result: Mapping[str, Any], mode: str = "fail") -> str:
    """One batch's result as a self-contained page: header, statistics, failures, every GX expectation."""
    stats = result["statistics"]
    rows = "".join(
        f"<tr><td>{_e(f['column'] or '—')}</td><td><code>{_e(f['rule'])}</code></td><td><code>{_e(f['kwargs'])}</code>"
        f"</td><td>{_e(f['unexpected_count'] if f['unexpected_count'] is not None else '—')}</td>"
        f"<td><code>{_e(f['sample'])}</code></td><td>{_e(f['detail'])}</td></tr>" for f in result["failures"])
    failures = ("<table><tr><th>column</th><th>rule</th><th>arguments</th><th>unexpected</th><th>sample</th>"
                f"<th>detail</th></tr>{rows}</table>") if rows else "<p>none</p>"
    body = (f"<h1>Validation of {_e(result['source'])} {_badge(result['success'], mode)}</h1>"
            f"<p class=\"muted\">dataset <b>{_e(result['dataset'])}</b> · suite <b>{_e(result['suite'])}</b> · "
            f"batch <code>{_e(result['batch_id'])}</code> · {_e(result['rows'])} rows · validated "
            f"{_e(result['validated_at'])}</p>"
            f"<h2>Statistics</h2><p>{stats['successful_rules']} of {stats['evaluated_rules']} rules passed "
            f"({stats['success_percent']} %).</p><h2>Failures</h2>{failures}"
            f"<h2>Every expectation</h2>{_expectations_table(result.get('gx') or {})}"
            f"<h2>Columns</h2><p><code>{_e(', '.join(result['columns']))}</code></p>")
    return _page(f"Validation {result['dataset']} {result['batch_id']}", body)


def _expectations_table(gx_result: Mapping[str, Any]) -> str:
    items = gx_result.get("results") or []
    if not items:
        return "<p>not run (the file could not be read)</p>"
    rows = []
    for item in items:
        config = item["expectation_config"]
        kwargs = {k: v for k, v in config.get("kwargs", {}).items() if k != "batch_id"}
        status = '<span class="badge ok">ok</span>' if item["success"] else '<span class="badge bad">failed</span>'
        rows.append(f"<tr><td>{status}</td><td><code>{_e(config['type'])}</code></td><td><code>{_e(kwargs)}</code>"
                    f"</td></tr>")
    return f"<table><tr><th></th><th>expectation</th><th>arguments</th></tr>{''.join(rows)}</table>"


def write_report(result: Mapping[str, Any], root: Path, mode: str = "fail") -> dict[str, str]:
    """Write `<dataset>/<batch_id>/{result.json,report.html}`; returns their paths, relpath and URL."""
    folder = Path(root) / _safe(result["dataset"]) / _safe(result["batch_id"] or "unnamed")
    data = json.dumps(json_safe({**result, "mode": mode}), indent=2, allow_nan=False)
    page = render_html(result, mode)
    atomic_write_bytes(folder / "result.json", lambda tmp: tmp.write_text(data, encoding="utf-8"))
    atomic_write_bytes(folder / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return _located(folder / "report.html", folder / "result.json", Path(root))


def run_folder(root: Path, dag_id: str, run_id: str, task_id: str) -> Path:
    """`root/_runs/<dag_id>/<run_id>/<task_id>`: the pages and records of one task run (every try)."""
    return Path(root) / RUNS_SUBDIR / _safe(dag_id) / _safe(run_id) / _safe(task_id)


def write_run_index(entries: Sequence[Mapping[str, Any]], root: Path, *, dag_id: str, run_id: str,
                    task_id: str, title: str, unconsumed: Sequence[Mapping[str, str]] = ()) -> dict[str, str]:
    """A page listing each batch of one task run (file, dataset, outcome, top failure, link to its report)."""
    folder = run_folder(root, dag_id, run_id, task_id)
    rows = "".join(
        f"<tr><td>{_e(e['dataset'])}</td><td>{_e(e['source'])}</td><td>{_badge(e['success'], e.get('mode', 'fail'))}"
        f"</td><td>{_e(describe_failure(e['failures'][0]) if e['failures'] else '')}</td>"
        f"<td>{_e(e.get('quarantined_to') or '')}</td>"
        f"<td><a href=\"{_e(_relative_link(folder, Path(e['report']['html'])))}\">report</a></td></tr>"
        for e in entries)
    table = ("<table><tr><th>dataset</th><th>file</th><th>outcome</th><th>top failure</th><th>quarantined to</th>"
             f"<th></th></tr>{rows}</table>") if rows else "<p>No raw batch was waiting in the landing dir.</p>"
    ignored = "".join(f"<tr><td><code>{_e(u['file'])}</code></td><td>{_e(u['reason'])}</td></tr>" for u in unconsumed)
    ignored = (f"<h2>Files not consumed <span class=\"badge warn\">{len(unconsumed)}</span></h2><table><tr><th>"
               f"file (under landing/)</th><th>why, and what to do</th></tr>{ignored}</table>") if ignored else ""
    body = f"<h1>{_e(title)}</h1><p class=\"muted\">{_e(dag_id)} · {_e(run_id)} · {_e(task_id)}</p>{table}{ignored}"
    page = _page(title, body)
    atomic_write_bytes(folder / "index.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return _located(folder / "index.html", None, Path(root))


def _relative_link(start: Path, target: Path) -> str:
    import os

    return Path(os.path.relpath(target, start)).as_posix()


def _located(page: Path, data: Path | None, root: Path) -> dict[str, str]:
    relpath = page.relative_to(root).as_posix()
    return {"html": str(page), "json": str(data) if data else "", "relpath": relpath, "url": report_url(relpath)}


def report_url(relpath: str) -> str:
    """The UI URL of a report file: `/mlops/reports/validation/<relpath>` (served by the mlops UI plugin)."""
    return f"{URL_PREFIX}/{relpath.lstrip('/')}"


def _safe(part: str) -> str:
    """One path segment: letters, digits, `._-`; anything else becomes `_` (run ids carry `:` and `+`)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", str(part)).strip(".")
    return cleaned or "_"
