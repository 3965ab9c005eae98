"""Validation reports: the full result as JSON and a self-contained HTML page, under the state dir.

GX Data Docs pull their CSS/JS from CDNs, so they do not render offline; these pages are plain HTML
with inline CSS, no script and no external URL, laid out by `templates/validation_*.html.j2`
(autoescaped: file names, column names and sample values are user data).

Layout (`root` = `MLOPS_HOME/reports/validation`) and the URL each file is served under (the UI
plugin maps `/mlops/reports/validation/<relpath>` to `root/<relpath>`)::

    <dataset>/<batch_id>/result.json    full result: contract rules, GX result, statistics
    <dataset>/<batch_id>/report.html    the page the task's "Validation report" link opens
    _runs/<dag_id>/<run_id>/<task_id>/index.html   one page per multi-file task run, linking each batch

`batch_id` is the batch's content hash, so re-validating the same bytes rewrites the same report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_mlops.core.offline import atomic_write_bytes
from airflow_mlops.core.templating import render
from airflow_mlops.core.validation import describe_failure
from airflow_mlops.core.xcom import json_safe

URL_PREFIX = "/mlops/reports/validation"
RUNS_SUBDIR = "_runs"


def render_html(result: Mapping[str, Any], mode: str = "fail") -> str:
    """One batch's result as a self-contained page: header, statistics, failures, every GX expectation."""
    expectations = [
        {
            "success": item["success"],
            "type": item["expectation_config"]["type"],
            "kwargs": {k: v for k, v in item["expectation_config"].get("kwargs", {}).items() if k != "batch_id"},
        }
        for item in (result.get("gx") or {}).get("results") or []
    ]
    return render("validation_report.html.j2", title=f"Validation {result['dataset']} {result['batch_id']}",
                  result=result, mode=mode, expectations=expectations)


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
    rows = [
        {
            "dataset": e["dataset"],
            "source": e["source"],
            "success": e["success"],
            "mode": e.get("mode", "fail"),
            "top_failure": describe_failure(e["failures"][0]) if e["failures"] else "",
            "quarantined_to": e.get("quarantined_to") or "",
            "link": _relative_link(folder, Path(e["report"]["html"])),
        }
        for e in entries
    ]
    page = render("validation_run_index.html.j2", title=title, dag_id=dag_id, run_id=run_id, task_id=task_id,
                  entries=rows, unconsumed=[{"file": u["file"], "reason": u["reason"]} for u in unconsumed])
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
