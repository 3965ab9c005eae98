"""HTTP plumbing of the serving app: replies in each protocol's error shape, admin auth.

`app.py` keeps the request logic, this module the shape of what goes over the wire (the scoring
routes send it as raw ASGI in `endpoints.py`, the status routes as a Starlette Response).
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from airflow_mlops.serving.protocols import JSON

ADMIN_TOKEN_ENV = "MLOPS_SERVING_ADMIN_TOKEN"
MLFLOW_CODES = {400: "BAD_REQUEST", 404: "RESOURCE_DOES_NOT_EXIST", 413: "BAD_REQUEST", 415: "BAD_REQUEST",
                422: "BAD_REQUEST", 500: "INTERNAL_ERROR", 503: "TEMPORARILY_UNAVAILABLE"}


@dataclass
class Reply:
    """One answer: status, JSON payload, extra headers, and the (version, route) pairs it counts under.

    `body`: bytes sent instead of the JSON payload, as application/octet-stream (V2 binary tensor data)."""

    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    observed: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None


def error_reply(protocol: str, status: int, message: str, field_name: str | None = None) -> Reply:
    """Errors in each protocol's own shape: ours {detail, field}, MLflow {error_code, message}, V2 {error}."""
    if protocol == "mlflow":
        return Reply(status, {"error_code": MLFLOW_CODES.get(status, "BAD_REQUEST"), "message": message})
    if protocol == "v2":
        return Reply(status, {"error": message})
    return Reply(status, {"detail": message, **({"field": field_name} if field_name else {})})


def check_admin(authorization: str | None) -> Reply | None:
    """None when the bearer token matches MLOPS_SERVING_ADMIN_TOKEN; else the 403 (disabled) or 401 reply."""
    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if not token:
        return Reply(403, {"detail": f"admin disabled: set {ADMIN_TOKEN_ENV} in the server's environment to enable "
                                     "/admin endpoints"})
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return Reply(401, {"detail": "Authorization: missing or wrong bearer token; send 'Authorization: Bearer "
                                     f"<{ADMIN_TOKEN_ENV}>'"}, {"WWW-Authenticate": "Bearer"})
    return None


def reply_response(reply: Reply) -> Response:
    return Response(json.dumps(reply.payload).encode(), status_code=reply.status, headers=reply.headers,
                    media_type=JSON)
