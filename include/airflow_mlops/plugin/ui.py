"""The Models pages: small HTML shells + one vanilla JS file + CSS, served by routes (never a mount).

Airflow's UI shows them as external views (`airflow_plugin.EXTERNAL_VIEWS`) in an iframe on the
same origin, so the browser's `_token` session cookie authenticates every request. No build step,
no CDN: the assets are package data in `plugin/static/`, charts are SVG drawn by `mlops.js`. The HTML
shells are autoescaped templates (`templates/ui_*.html.j2`): model names and run ids come from URLs.

Pages (all under `/mlops/ui`):

- `/models` — the Models table (nav entry "Models");
- `/models/{name}` — a model: versions timeline with the audit trail, drift and metric charts,
  model card, links to the DAG runs that produced each version, rollback through Airflow's REST API;
- `/dags/{dag_id}` — the DAG tab "MLOps model": redirects to the DAG's model page (or says the DAG
  belongs to no model);
- `/runs/{dag_id}/{run_id}` — the DAG-run tab "MLOps reports": what the run produced;
- `/models/{name}/versions/{version}/{evaluation|model_card}` — a version's HTML document from its
  MLflow run, or an empty-state page (404) when it was never logged;
- `/models/{name}/experiment` — the online-experiment readout (arms, labels per arm, difference and interval
  history, bandit shares, decision and reason): a document like the reports (404 without an experiment).

Pages get `UI_CSP` (scripts and styles only from this origin, fetches only to this origin);
documents get `files.HTML_CSP` (no script at all, sandboxed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from airflow_mlops.core.templating import render
from airflow_mlops.plugin import URL_PREFIX
from airflow_mlops.plugin import models_data as data
from airflow_mlops.plugin.auth import UIUser, authorize_dag_read
from airflow_mlops.plugin.files import HTML_CSP, safe_file

router = APIRouter(prefix="/ui", tags=["ui"])

STATIC_DIR = Path(__file__).with_name("static")
UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-cache"}


def roots(request: Request) -> dict[str, str]:
    """URL prefixes as the browser sees them: the plugin (`.../mlops`) and Airflow itself (its base path)."""
    base = str(request.scope.get("root_path") or URL_PREFIX).rstrip("/")
    return {"base": base, "airflow": base.removesuffix(URL_PREFIX)}


def page(request: Request, kind: str, title: str, code: int = 200, **attrs: str) -> HTMLResponse:
    """The shell every page shares; `mlops.js` reads the data attributes and renders into <main>."""
    urls = roots(request)
    fields = {"page": kind, "base": urls["base"], "airflow": urls["airflow"], **attrs}
    body = render("ui_page.html.j2", title=title, static=f"{urls['base']}/ui/static",
                  attrs=[(key.replace("_", "-"), value) for key, value in fields.items()])
    return HTMLResponse(body, status_code=code, headers={**HEADERS, "Content-Security-Policy": UI_CSP})


def message_page(request: Request, title: str, message: str, code: int) -> HTMLResponse:
    """An error or empty state rendered by the same shell (status code kept for scripts and tests)."""
    return page(request, "message", title, code=code, heading=title, message=message)


@router.get("/models", response_class=HTMLResponse, summary="The Models page (nav entry)")
def models_page(request: Request, user: UIUser) -> HTMLResponse:
    return page(request, "models", "Models")


@router.get("/models/{name}", response_class=HTMLResponse, summary="A model page")
def model_page(request: Request, name: str, user: UIUser) -> HTMLResponse:
    try:
        data.spec_or_404(name, data.specs())
    except data.NotFound as exc:
        return message_page(request, "Unknown model", str(exc), status.HTTP_404_NOT_FOUND)
    authorize_dag_read(user, data.model_dags(name)["train"], f"model {name!r}")
    return page(request, "model", f"Model {name}", model=name)


@router.get("/dags/{dag_id}", summary="DAG tab: the DAG's model page", response_model=None)
def dag_tab(request: Request, dag_id: str, user: UIUser) -> Response:
    model = data.model_of_dag(dag_id, data.specs())
    if model is None:
        return message_page(request, "Not a model DAG", f"DAG {dag_id!r} belongs to no model: model DAGs are named "
                            "<model>__train, __rollback, __batch_predict, __monitor or __experiment.",
                            status.HTTP_200_OK)
    return RedirectResponse(f"{roots(request)['base']}/ui/models/{model}", status.HTTP_307_TEMPORARY_REDIRECT)


@router.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, summary="DAG-run tab: what the run produced")
def run_page(request: Request, dag_id: str, run_id: str, user: UIUser) -> HTMLResponse:
    authorize_dag_read(user, dag_id, f"the reports of DAG run {run_id!r}")
    return page(request, "run", f"{dag_id} · {run_id}", dag_id=dag_id, run_id=run_id)


@router.get("/models/{name}/versions/{version}/{document}", response_class=HTMLResponse,
            summary="A version's evaluation report or model card (HTML from its MLflow run)")
def version_document(request: Request, name: str, version: str, document: str, user: UIUser) -> HTMLResponse:
    return _document(name, document, user, f"v{version}",
                     lambda mlflow: data.version_or_404(mlflow, name, version).run_id)


def _document(name: str, document: str, user: UIUser, which: str,
              run_id_of: Callable[[Any], str | None]) -> HTMLResponse:
    """`document` of model `name` from the MLflow run `run_id_of(client)` names (404 when unknown)."""
    if document not in data.DOCUMENTS:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"unknown document {document!r}; documents: {', '.join(sorted(data.DOCUMENTS))}")
    try:
        data.spec_or_404(name, data.specs())
        authorize_dag_read(user, data.model_dags(name)["train"], f"model {name!r}")
        mlflow = data.client()
        run_id = run_id_of(mlflow)
    except data.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    text = data.run_artifact(mlflow, run_id, data.DOCUMENTS[document])
    if text is None:
        return _empty_document(name, which, document, run_id)
    return HTMLResponse(text, headers={**HEADERS, "Content-Security-Policy": HTML_CSP})


def _empty_document(name: str, which: str, document: str, run_id: str | None) -> HTMLResponse:
    body = render("ui_empty_document.html.j2", label=document.replace("_", " "), name=name, which=which,
                  run_id=str(run_id), artifact=data.DOCUMENTS[document])
    return HTMLResponse(body, status_code=status.HTTP_404_NOT_FOUND,
                        headers={**HEADERS, "Content-Security-Policy": HTML_CSP})


@router.get("/models/{name}/experiment", response_class=HTMLResponse,
            summary="The model's online-experiment readout (self-contained HTML, inline SVG)")
def experiment_document(request: Request, name: str, user: UIUser) -> HTMLResponse:
    from airflow_mlops.core.experiment_report import render_readout

    try:
        data.spec_or_404(name, data.specs())
    except data.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    authorize_dag_read(user, data.model_dags(name)["train"], f"model {name!r}")
    record, looks, events = data.experiment(data.client(), name)
    return HTMLResponse(render_readout(name, record, looks, events), status_code=200 if record else 404,
                        headers={**HEADERS, "Content-Security-Policy": HTML_CSP})


@router.get("/models/{name}/runs/{mlflow_run_id}/{document}", response_class=HTMLResponse,
            summary="The evaluation report or model card of a training run of the model (before registration)")
def run_document(request: Request, name: str, mlflow_run_id: str, document: str, user: UIUser) -> HTMLResponse:
    def checked_run(mlflow: Any) -> str:
        data.model_run_or_404(mlflow, name, mlflow_run_id)
        return mlflow_run_id

    return _document(name, document, user, f"run {mlflow_run_id}", checked_run)


@router.get("/static/{name}", response_class=FileResponse, summary="Script, style and icon of the pages")
def static(name: str, user: UIUser) -> FileResponse:
    path = safe_file(STATIC_DIR, name, what="UI asset")
    media_type = STATIC_TYPES.get(path.suffix)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no UI asset {name!r}")
    return FileResponse(path, media_type=media_type,
                        headers={**HEADERS, "Content-Security-Policy": "default-src 'none'; sandbox"})
