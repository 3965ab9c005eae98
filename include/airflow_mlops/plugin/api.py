"""JSON routes under `/api`: `GET /api/health` today; model, registry and monitoring routes go here.

Each area may get its own router (`APIRouter(prefix="/api/<area>")`) added to `app.ROUTERS`; the
app-wide auth dependency covers it without any code in the router.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from airflow_mlops import __version__
from airflow_mlops.plugin import PLUGIN_NAME
from airflow_mlops.plugin.auth import UIUser
from airflow_mlops.plugin.reports import REPORT_KINDS

router = APIRouter(prefix="/api", tags=["api"])


class Health(BaseModel):
    """What `GET /api/health` answers: the plugin is mounted and the caller is authenticated."""

    status: Literal["ok"] = "ok"
    plugin: str
    version: str
    user: str
    report_kinds: list[str]


@router.get("/health", response_model=Health, summary="Plugin version and the authenticated user")
def health(user: UIUser) -> Health:
    return Health(plugin=PLUGIN_NAME, version=__version__, user=user.get_name(), report_kinds=sorted(REPORT_KINDS))


@router.get("/openapi.json", summary="The OpenAPI document of the mlops plugin (authenticated)")
def openapi(request: Request) -> dict[str, Any]:
    document: dict[str, Any] = request.app.openapi()
    return document
