"""`GET /reports/{kind}/{path}`: report files of the state dir, auth-checked per DAG.

A *kind* maps a URL segment to a folder under the state dir (`config.paths()`, read per request so
MLOPS_HOME may move), says which DAG a file belongs to (for the auth manager's DAG read check)
and which Content-Security-Policy its HTML pages get. Add one by adding a `ReportKind` to
`REPORT_KINDS` (a kind whose HTML needs scripts gets its own policy, like `drift` below).

A request is checked in this order, so nothing about a file leaks to a user who may not read it:
unknown kind → 404 naming the known kinds; a malformed path (`..`, absolute, NUL, backslash) →
400; no read access to the file's DAG → 403; then a missing file (or one resolving outside the
kind's folder) → 404 naming the kind and the path.

Kinds:

- `drift` → `MLOPS_HOME/reports/drift` (core.drift: `<model>/<dag_id>/<run_id>/report.html` +
  `result.json`, the drift task's "Drift report" extra link): belongs to `<dag_id>`, the DAG that
  wrote it (a shorter path to `<model>__monitor`). Evidently's self-contained
  HTML runs inline scripts (and its plotly bundle uses eval): `DRIFT_CSP` allows them, still inside
  `sandbox allow-scripts` WITHOUT `allow-same-origin` (an opaque origin: no Airflow cookie, no
  same-origin fetch) and with no network (`connect-src` is absent, so 'none').
- `validation` → `MLOPS_HOME/reports/validation` (`core.validation_report`, the task's "Validation
  report" extra link). `_runs/<dag_id>/<run_id>/<task_id>/index.html` belongs to `<dag_id>`; a
  batch report `<dataset>/<batch_id>/{report.html,result.json}` is written by whichever DAG validated
  the batch (`mlops_features` for raw data, `<model>__train` for a training set) and the path does not
  say which, so it needs read access to every DAG.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from airflow_mlops.config import Paths, paths
from airflow_mlops.core.validation_report import RUNS_SUBDIR
from airflow_mlops.plugin.auth import UIUser, authorize_dag_read
from airflow_mlops.plugin.files import HTML_CSP, checked_relpath, file_response, safe_file

PREFIX = "/reports"


@dataclass(frozen=True)
class ReportKind:
    """Where one kind of report lives and whom it belongs to.

    :param folder: the kind's base folder, from the state dir's `Paths`.
    :param dag_of: the DAG a file (path relative to `folder`) belongs to; None when the path does
        not say, which requires read access to every DAG.
    :param html_csp: Content-Security-Policy of its HTML pages.
    """

    folder: Callable[[Paths], Path]
    dag_of: Callable[[PurePosixPath], str | None]
    html_csp: str = HTML_CSP


def drift_dag(relpath: PurePosixPath) -> str | None:
    """`<model>/<dag_id>/<run_id>/<file>` (core.drift's layout) -> dag_id; `<model>/<file>` -> `<model>__monitor`."""
    parts = relpath.parts
    if len(parts) > 3:
        return parts[1]
    return f"{parts[0]}__monitor" if len(parts) > 1 else None


DRIFT_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; "
    "font-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'; "
    "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox"
)


def validation_dag(relpath: PurePosixPath) -> str | None:
    """`_runs/<dag_id>/...` -> dag_id; a batch report names no DAG -> None (see the module doc)."""
    parts = relpath.parts
    return parts[1] if len(parts) > 2 and parts[0] == RUNS_SUBDIR else None


REPORT_KINDS: dict[str, ReportKind] = {
    "validation": ReportKind(folder=lambda home: home.reports_dir / "validation", dag_of=validation_dag),
    "drift": ReportKind(folder=lambda home: home.reports_dir / "drift", dag_of=drift_dag, html_csp=DRIFT_CSP),
}

router = APIRouter(prefix=PREFIX, tags=["reports"])


def report_kind(kind: str) -> ReportKind:
    """The kind, or 404 listing the known ones."""
    if kind not in REPORT_KINDS:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"unknown report kind {kind!r}; known kinds: {', '.join(sorted(REPORT_KINDS))}"
        )
    return REPORT_KINDS[kind]


@router.get(
    "/{kind}/{path:path}",
    response_class=FileResponse,
    summary="A report file of the state dir (HTML, JSON, ...)",
    responses={
        400: {"description": "malformed path"},
        401: {"description": "not authenticated"},
        403: {"description": "no read access to the report's DAG"},
        404: {"description": "unknown kind or no such report"},
    },
)
def get_report(kind: str, path: str, user: UIUser) -> FileResponse:
    """Stream `MLOPS_HOME/<kind folder>/<path>` with its content type; HTML gets the kind's CSP."""
    spec = report_kind(kind)
    relpath = checked_relpath(path) if path else PurePosixPath()
    authorize_dag_read(user, spec.dag_of(relpath), f"{kind} report {path!r}")
    return file_response(safe_file(spec.folder(paths()), path, what=f"{kind} report"), spec.html_csp)
