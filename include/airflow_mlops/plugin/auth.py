"""Airflow authentication and authorization for every route of the mlops UI plugin.

Airflow 3.3 mounts plugin FastAPI apps with no auth at all: these dependencies are the only guard,
and `app.create_app()` puts `require_ui_access` on the whole app so no route can go without it.

**Authentication** (`authenticated_user`) is Airflow's own `core_api.security.get_user`, the function
behind every `/api/v2` route: an `Authorization: Bearer <JWT>` header (from `POST /auth/token`)
wins; else the user Airflow's JWT-refresh middleware already validated; else the UI session cookie
`_token`. The configured auth manager checks the JWT (`get_user_from_token`: signature, expiry,
audience, revocation). Every failure answers **401** `{"detail": "..."}` with `WWW-Authenticate:
Bearer` — an invalid or forged token too (where `/api/v2` answers 403), so that **403** here always
means "a known user who is not allowed".

**Authorization** is always the configured auth manager (`get_auth_manager()`), never a user table
of ours, so FAB roles, Keycloak policies or the simple auth manager's roles apply unchanged:

- `require_ui_access` (every route): `is_authorized_view(access_view=AccessView.WEBSITE)` — the
  permission to use the Airflow UI at all (every role but "no role" has it).
- `authorize_dag_read(user, dag_id)`: `is_authorized_dag(method="GET", details=DagDetails(id=dag_id,
  team_name=<the DAG's team>))` for something one DAG produced; `dag_id=None` (nothing says which
  DAG produced it) asks without details, which auth managers read as "may read every DAG" (FAB:
  the global "DAGs" resource) — never more permissive than the per-DAG check.

Airflow modules are imported inside the functions: they are loaded in the api-server anyway, and
the plugin module itself must stay light for the other processes that import plugins.
"""

from __future__ import annotations

import logging
from typing import Annotated

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser  # a tiny module (FastAPI resolves it)
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

log = logging.getLogger(__name__)

LOGIN_HINT = (
    "send 'Authorization: Bearer <token>' (a JWT from POST /auth/token) or log in to the Airflow UI "
    "(session cookie '_token')"
)

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="AirflowJWT",
    description="An Airflow JWT: POST /auth/token, or the UI's `_token` cookie",
)


def unauthenticated(reason: str) -> HTTPException:
    """401 naming why and how to authenticate."""
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        f"Airflow authentication required ({reason}): {LOGIN_HINT}",
        headers={"WWW-Authenticate": "Bearer"},
    )


def forbidden(user: BaseUser, what: str) -> HTTPException:
    """403 naming the user and what they may not do."""
    return HTTPException(
        status.HTTP_403_FORBIDDEN, f"user {user.get_name()!r} is not allowed to {what} (Airflow auth manager refused)"
    )


async def authenticated_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> BaseUser:
    """The Airflow user of this request, exactly as `/api/v2` resolves it; 401 otherwise."""
    from airflow.api_fastapi.core_api.security import get_user

    try:
        return await get_user(request, _oauth_token=None, bearer_credentials=credentials)
    except HTTPException as exc:  # 401 "Not authenticated" / "Token Expired", 403 "Invalid JWT token"
        raise unauthenticated(str(exc.detail)) from None


AuthenticatedUser = Annotated[BaseUser, Depends(authenticated_user)]


def require_ui_access(user: AuthenticatedUser) -> BaseUser:
    """Authenticated **and** allowed to use the Airflow UI (`AccessView.WEBSITE`); 401/403 otherwise."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView

    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise forbidden(user, "use the Airflow UI")
    return user


UIUser = Annotated[BaseUser, Depends(require_ui_access)]


def authorize_dag_read(user: BaseUser, dag_id: str | None, what: str) -> None:
    """403 unless the auth manager lets `user` read DAG `dag_id` (None: every DAG); `what` goes in the message."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.models.dag import DagModel

    if dag_id is None:
        allowed = get_auth_manager().is_authorized_dag(method="GET", user=user)
        scope = "every DAG (it is not tied to one DAG)"
    else:
        details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))
        allowed = get_auth_manager().is_authorized_dag(method="GET", details=details, user=user)
        scope = f"DAG {dag_id!r}"
    if not allowed:
        log.info("refused %s to %s: no read access to %s", what, user.get_name(), scope)
        raise forbidden(user, f"read {what}: it needs read access to {scope}")
