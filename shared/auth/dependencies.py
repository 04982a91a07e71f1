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

from fastapi import Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from shared.auth.accounts import Role
from shared.auth.keys import ApiKeyRecord, Scope
from shared.auth.sessions import PeopleGate, SignedIn
from shared.auth.store import ApiKeyStore
from shared.service.problems import ProblemError


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


class _ScopedKey(SecurityBase):
    """One dependency that authenticates and authorises, reading both headers itself.

    A SecurityBase, so OpenAPI lists the bearer scheme (the X-API-Key alternative is in its
    description). FastAPI resolves it with nothing below it: sub-dependencies for the two
    headers (HTTPBearer, APIKeyHeader) were each resolved, introspected and called on every
    request, 15% of a single-event request at intake (docs/performance.md).
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.model = HTTPBearerModel(
            description="`Authorization: Bearer <api key>`, or the key in `X-API-Key`."
        )
        self.scheme_name = "HTTPBearer"

    async def __call__(self, request: Request) -> ApiKeyRecord:
        plaintext = _presented_key(request)
        if not plaintext:
            raise _unauthenticated("An API key is required: send 'Authorization: Bearer <key>'.")
        record = await key_store_of(request).authenticate(plaintext)
        if record is None:
            raise _unauthenticated("The API key is not valid (unknown, malformed or revoked).")
        if not record.allows(self.scope):
            raise ApiKeyProblem(
                403,
                "Forbidden",
                f"The key {record.key_id} of source {record.source!r} lacks the "
                f"{self.scope.value!r} scope.",
            )
        return record


def _presented_key(request: Request) -> str:
    """The key from ``Authorization: Bearer <key>``, else from ``X-API-Key`` (as
    HTTPBearer and APIKeyHeader read them: another scheme in Authorization counts as none).

    Read off the ASGI headers in one pass, the first of each name as ``request.headers``
    gives it (its ``get`` lower-cases and encodes the name and walks the list, per name)."""
    authorization: bytes | None = None
    api_key: bytes | None = None
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            if authorization is None:
                authorization = value
        elif name == b"x-api-key" and api_key is None:
            api_key = value
    if authorization:
        scheme, _, credentials = authorization.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return api_key.decode("latin-1").strip() if api_key else ""


def require_scope(scope: Scope) -> Callable[..., Awaitable[ApiKeyRecord]]:
    guard = _ScopedKey(scope)
    _SCOPE_OF[guard] = scope
    return guard


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
