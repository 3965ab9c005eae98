"""JSON API of the Models pages: `/api/models...` and `/api/runs/{dag_id}/{run_id}`.

Authorization: a model is readable by whoever may read its training DAG (`<model>__train`, the
DAG that produces its versions) — `GET /api/models` lists only those, the other routes answer 403.
Order of checks: unknown model -> 404 (model names are the spec files', not secrets), no read
access -> 403, then unknown version/document -> 404; so nothing about versions leaks to a user
who may not read the model.

Handlers are plain `def`: FastAPI runs them in its thread pool, so blocking MLflow and SQL calls
do not stall the api-server's event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, status

from airflow_mlops.core.explanations import IMPORTANCE_ARTIFACT
from airflow_mlops.core.tasks import LOWER_IS_BETTER
from airflow_mlops.plugin import models_data as data
from airflow_mlops.plugin.auth import UIUser, authorize_dag_read

router = APIRouter(prefix="/api", tags=["models"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "not authenticated"},
    403: {"description": "no read access to the model's training DAG"},
    404: {"description": "unknown model or version"},
}


def not_found(exc: data.NotFound) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))


def readable_spec(name: str, user: Any) -> Any:
    """The spec of `name` after the 404 and 403 checks of the module doc."""
    try:
        spec = data.spec_or_404(name, data.specs())
    except data.NotFound as exc:
        raise not_found(exc) from None
    authorize_dag_read(user, data.model_dags(name)["train"], f"model {name!r}")
    return spec


def model_summary(spec: Any, mlflow: Any) -> dict[str, Any]:
    """One row of the Models table (and the head of a model page)."""
    rows = data.versions(mlflow, spec.name)
    by_alias = {alias: next((row for row in rows if alias in row["aliases"]), None) for alias in data.ALIASES}
    drift = data.latest_check(spec.name, "drift")
    return {
        "name": spec.name,
        "description": spec.description,
        "owner": spec.owner,
        "tags": list(spec.tags),
        "task": spec.task,
        "primary_metric": spec.evaluation.primary_metric,
        "lower_is_better": spec.evaluation.primary_metric in LOWER_IS_BETTER,
        "dags": data.model_dags(spec.name),
        "registered": bool(rows),
        "version_count": len(rows),
        "champion": by_alias["champion"],
        "challenger": by_alias["challenger"],
        "last_retrain": rows[0] if rows else None,
        "last_drift": drift,
    }


@router.get("/models", summary="Models the user may read: champion, challenger, metric, drift, last retrain")
def list_models(user: UIUser) -> dict[str, Any]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.models.dag import DagModel

    def readable(dag_id: str) -> bool:  # the same question as auth.authorize_dag_read, without the 403
        details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))
        return get_auth_manager().is_authorized_dag(method="GET", details=details, user=user)

    specs = [spec for spec in data.specs().values() if readable(data.model_dags(spec.name)["train"])]
    mlflow = data.client() if specs else None
    return {"models": [model_summary(spec, mlflow) for spec in specs]}


@router.get("/models/{name}", summary="A model: summary, versions (newest first), audit trail, latest checks",
            responses=ERRORS)
def get_model(name: str, user: UIUser) -> dict[str, Any]:
    spec = readable_spec(name, user)
    mlflow = data.client()
    summary = model_summary(spec, mlflow)
    return {
        **summary,
        "versions": data.versions(mlflow, name),
        "audit": data.audit_events(mlflow, name),
        "experiment": data.experiment_summary(mlflow, name),
        "checks": {kind: data.latest_check(name, kind) for kind in ("drift", "performance", "skew", "freshness")},
        "spec": {"source_file": spec.source_file, "monitoring": spec.monitoring.model_dump(mode="json"),
                 "evaluation": spec.evaluation.model_dump(mode="json")},
    }


@router.get("/models/{name}/versions/{version}",
            summary="A version: lineage, verdict, model card, evaluation report summary, global importance, audit "
                    "events",
            responses=ERRORS)
def get_version(name: str, version: str, user: UIUser) -> dict[str, Any]:
    readable_spec(name, user)
    mlflow = data.client()
    try:
        mv = data.version_or_404(mlflow, name, version)
    except data.NotFound as exc:
        raise not_found(exc) from None
    row = data.version_row(mv, data.alias_versions(mlflow, name))
    card = data.run_json(mlflow, mv.run_id, data.DOCUMENT_JSON["model_card"])
    report = data.run_json(mlflow, mv.run_id, data.DOCUMENT_JSON["evaluation"])
    explanations = data.run_json(mlflow, mv.run_id, IMPORTANCE_ARTIFACT)  # the training job's global importance
    return {
        **row,
        "model": name,
        "model_card": card,
        "evaluation": data.evaluation_summary(report),
        "explanations": explanations,
        "documents": {"model_card": card is not None, "evaluation": report is not None},
        "audit": [event for event in data.audit_events(mlflow, name) if event["version"] == row["version"]],
    }


@router.get("/models/{name}/monitoring", summary="Time series of one monitoring check (oldest first)",
            responses={**ERRORS, 400: {"description": "unknown kind"}})
def get_monitoring(name: str, user: UIUser, kind: str = Query("drift", description="drift, performance, skew or "
                                                                                    "freshness"),
                   limit: int = Query(500, ge=1, le=5000)) -> dict[str, Any]:
    from airflow_mlops.core.monitoring_history import KINDS

    if kind not in KINDS:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"unknown monitoring kind {kind!r}; use one of {list(KINDS)}")
    readable_spec(name, user)
    return {"model": name, "kind": kind, "records": data.monitoring(name, kind, limit)}


@router.get("/runs/{dag_id}/{run_id}", summary="What one DAG run produced: model versions, checks, reports",
            responses={401: ERRORS[401], 403: {"description": "no read access to the DAG"}})
def get_run(dag_id: str, run_id: str, user: UIUser) -> dict[str, Any]:
    from airflow_mlops.plugin.run_reports import run_reports

    authorize_dag_read(user, dag_id, f"the reports of DAG run {run_id!r}")
    return run_reports(dag_id, run_id)
