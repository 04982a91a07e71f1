"""``require_scope(scope)``: the FastAPI dependency that guards an endpoint with an API key.

The key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` and is checked
against ``request.app.state.key_store`` (an ``ApiKeyStore``). Answers, as RFC 9457
problem documents once ``add_auth_problem_handler(app)`` is called:

- 401 with ``WWW-Authenticate: Bearer`` for a missing, malformed, unknown or revoked key
  (one answer for all, so a caller learns nothing about which keys exist);
- 403 for a valid key without the scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from shared.auth.keys import ApiKeyRecord, Scope
from shared.auth.store import ApiKeyStore

PROBLEM_MEDIA_TYPE = "application/problem+json"

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api key>`")
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="The API key, as an alternative header."
)


class ApiKeyProblem(HTTPException):
    """A 401 or 403 whose ``detail`` is the problem document."""

    def __init__(
        self, status_code: int, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        problem = {"type": "about:blank", "title": title, "status": status_code, "detail": detail}
        super().__init__(status_code=status_code, detail=problem, headers=headers)


def require_scope(scope: Scope) -> Callable[..., Awaitable[ApiKeyRecord]]:
    async def authenticated_key(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
        header_key: str | None = Depends(_api_key_header),
    ) -> ApiKeyRecord:
        plaintext = bearer.credentials if bearer is not None else header_key
        if not plaintext:
            raise _unauthenticated("An API key is required: send 'Authorization: Bearer <key>'.")
        store: ApiKeyStore = request.app.state.key_store
        record = await store.authenticate(plaintext.strip())
        if record is None:
            raise _unauthenticated("The API key is not valid (unknown, malformed or revoked).")
        if not record.allows(scope):
            raise ApiKeyProblem(
                403,
                "Forbidden",
                f"The key {record.key_id} of source {record.source!r} lacks the "
                f"{scope.value!r} scope.",
            )
        return record

    return authenticated_key


def add_auth_problem_handler(app: FastAPI) -> None:
    """Render ``ApiKeyProblem`` as ``application/problem+json`` (call once per app)."""

    async def render(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiKeyProblem)
        body: Any = error.detail
        return JSONResponse(
            body,
            status_code=error.status_code,
            headers=error.headers,
            media_type=PROBLEM_MEDIA_TYPE,
        )

    app.add_exception_handler(ApiKeyProblem, render)


def _unauthenticated(detail: str) -> ApiKeyProblem:
    return ApiKeyProblem(
        401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="demandscope"'}
    )
