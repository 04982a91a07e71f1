"""``require_scope(scope)``: the FastAPI dependency that guards an endpoint with an API key.

The key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` and is checked
against the running service's ``ApiKeyStore`` (``ServiceComponents.key_store``). Answers, as
RFC 9457 problem documents (``shared.service.problems``):

- 401 with ``WWW-Authenticate: Bearer`` for a missing, malformed, unknown or revoked key
  (one answer for all, so a caller learns nothing about which keys exist);
- 403 for a valid key without the scope.

``require_person(role)`` guards the pages the same way, with a person signed in
(shared/auth/sessions.py) instead of a key, and checks CSRF on unsafe methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from shared.auth.accounts import Role
from shared.auth.keys import ApiKeyRecord, Scope
from shared.auth.sessions import PeopleGate, SignedIn
from shared.auth.store import ApiKeyStore
from shared.service.problems import ProblemError

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api key>`")
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="The API key, as an alternative header."
)


class ApiKeyProblem(ProblemError):
    """A 401 or 403."""

    def __init__(
        self, status_code: int, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code, title, detail=detail, headers=headers)


def key_store_of(request: Request) -> ApiKeyStore:
    """The running service's key store (set by the service skeleton's lifespan)."""
    components = getattr(request.app.state, "components", None)
    store = getattr(components, "key_store", None)
    if not isinstance(store, ApiKeyStore):
        raise ProblemError(503, "Service unavailable", detail="The service is starting.")
    return store


# Which scope each dependency made by require_scope demands: lets a test walk every route
# of every app and find the ones that demand none.
_SCOPE_OF: dict[Callable[..., Awaitable[ApiKeyRecord]], Scope] = {}


def scope_required_by(dependency: object) -> Scope | None:
    """The scope a ``require_scope`` dependency demands, or None for any other callable."""
    for made, scope in _SCOPE_OF.items():
        if made is dependency:
            return scope
    return None


def require_scope(scope: Scope) -> Callable[..., Awaitable[ApiKeyRecord]]:
    async def authenticated_key(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
        header_key: str | None = Depends(_api_key_header),
    ) -> ApiKeyRecord:
        plaintext = bearer.credentials if bearer is not None else header_key
        if not plaintext:
            raise _unauthenticated("An API key is required: send 'Authorization: Bearer <key>'.")
        record = await key_store_of(request).authenticate(plaintext.strip())
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

    _SCOPE_OF[authenticated_key] = scope
    return authenticated_key


def _unauthenticated(detail: str) -> ApiKeyProblem:
    return ApiKeyProblem(
        401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="demandscope"'}
    )


# --- people on the pages ----------------------------------------------------------------------


def people_gate_of(request: Request) -> PeopleGate:
    """The running service's ``PeopleGate`` (its components' ``people``)."""
    components = getattr(request.app.state, "components", None)
    gate = getattr(components, "people", None)
    if not isinstance(gate, PeopleGate):
        raise ProblemError(503, "Service unavailable", detail="The service is starting.")
    return gate


# Which role each dependency made by require_person demands: the route walk counts a page
# route as guarded when it depends on one (as an API route when it depends on a scope).
_ROLE_OF: dict[Callable[..., Awaitable[SignedIn]], Role] = {}


def role_required_by(dependency: object) -> Role | None:
    """The role a ``require_person`` dependency demands, or None for any other callable."""
    for made, role in _ROLE_OF.items():
        if made is dependency:
            return role
    return None


def require_person(role: Role) -> Callable[..., Awaitable[SignedIn]]:
    """A page's guard: somebody signed in with at least ``role``, and on an unsafe method the
    session's CSRF token. Not signed in: ``SignInRequired`` (pages turn it into a redirect)."""

    async def signed_in_person(request: Request) -> SignedIn:
        gate = people_gate_of(request)
        signed_in = await gate.signed_in(request)
        if not signed_in.person.role.allows(role):
            raise ProblemError(
                403,
                "Forbidden",
                detail=f"{signed_in.person.username} is a {signed_in.person.role.value}; "
                f"this needs a {role.value}.",
            )
        await gate.check_csrf(request, signed_in)
        return signed_in

    _ROLE_OF[signed_in_person] = role
    return signed_in_person
