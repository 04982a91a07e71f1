"""Who is signed in to the pages: a signed session cookie, or a trusted proxy's header.

The cookie (``ds_session``) is signed with ``itsdangerous`` (HMAC-SHA1 over the payload and
a timestamp, refused after ``session_max_age_s``), HttpOnly (no script reads it), SameSite=Lax
(not sent on another site's POST) and Secure in production. It holds the username and the
session's CSRF token, nothing of the organisation's data. The account is looked up on every
request, so a disabled account or a changed role takes effect at once.

With ``trusted_proxy_header`` set (oauth2-proxy in front), the proxy's header names the
person instead; the cookie then only carries the CSRF token, bound to that name.

CSRF: every unsafe request (POST, PUT, PATCH, DELETE) must carry the session's token, in the
``X-CSRF-Token`` header (htmx sends it from ``hx-headers``) or the ``csrf_token`` form field.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from shared.auth.account_store import AccountStore
from shared.auth.accounts import Person, Role
from shared.auth.settings import PeopleSettings
from shared.service.problems import ProblemError

SESSION_COOKIE = "ds_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class SessionData:
    """What the cookie holds: who (None before signing in) and the session's CSRF token."""

    username: str | None
    csrf: str


@dataclass(frozen=True)
class SignedIn:
    """A request's signed-in person, the session's CSRF token for its forms, and the cookie
    to set on the answer when the session is new (None: the browser's cookie stands)."""

    person: Person
    csrf: str
    set_cookie: str | None = None


class SignInRequired(ProblemError):
    """Nobody (valid) is signed in: pages answer with a redirect to the sign-in page."""

    def __init__(self, detail: str = "Sign in to see this page.") -> None:
        super().__init__(401, "Unauthorized", detail=detail)


def new_session(username: str | None) -> SessionData:
    return SessionData(username=username, csrf=secrets.token_urlsafe(32))


class PeopleGate:
    """Resolves requests to people; owned by the service's components."""

    def __init__(self, settings: PeopleSettings, accounts: AccountStore) -> None:
        secret = (
            settings.session_secret.get_secret_value()
            if settings.session_secret is not None
            else secrets.token_urlsafe(48)  # development only: PeopleSettings refuses it else
        )
        self.settings = settings
        self.accounts = accounts
        self._serializer = URLSafeTimedSerializer(secret, salt="demandscope.pages.session")

    @property
    def proxy_mode(self) -> bool:
        return self.settings.trusted_proxy_header is not None

    @property
    def secure_cookie(self) -> bool:
        return self.settings.environment == "production"

    def encode(self, session: SessionData) -> str:
        return self._serializer.dumps({"u": session.username, "c": session.csrf})

    def session_of(self, request: Request) -> SessionData | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        try:
            data = self._serializer.loads(token, max_age=self.settings.session_max_age_s)
        except BadSignature:  # SignatureExpired is one too
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        username = data.get("u")
        return SessionData(username if isinstance(username, str) else None, data["c"])

    async def signed_in(self, request: Request) -> SignedIn:
        """The person making the request, or SignInRequired."""
        session = self.session_of(request)
        if self.proxy_mode:
            person = self._proxied(request)
            if session is None or session.username != person.username:
                fresh = new_session(person.username)
                return SignedIn(person, fresh.csrf, self.encode(fresh))
            return SignedIn(person, session.csrf)
        if session is None or session.username is None:
            raise SignInRequired()
        current = await self.accounts.current(session.username)
        if current is None:
            raise SignInRequired("The account is disabled or gone: sign in again.")
        return SignedIn(current, session.csrf)

    def _proxied(self, request: Request) -> Person:
        header = self.settings.trusted_proxy_header
        assert header is not None
        username = request.headers.get(header, "").strip()
        if not username:
            raise SignInRequired(f"The authenticating proxy sent no {header} header.")
        role = self.settings.trusted_proxy_default_role
        if self.settings.trusted_proxy_role_header:
            claimed = request.headers.get(self.settings.trusted_proxy_role_header, "").strip()
            if claimed in {r.value for r in Role}:
                role = claimed  # type: ignore[assignment]
        return Person(username=username[:200], role=Role(role), via="proxy")

    async def check_csrf(self, request: Request, signed_in: SignedIn) -> None:
        """Refuse an unsafe request without the session's CSRF token (403)."""
        if request.method in SAFE_METHODS:
            return
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and _is_form(request):
            value = (await request.form()).get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
        if signed_in.set_cookie is not None or not sent or not tokens_match(sent, signed_in.csrf):
            raise ProblemError(
                403,
                "Forbidden",
                detail="The form's CSRF token is missing or stale: reload the page and retry.",
            )


def tokens_match(sent: str, expected: str) -> bool:
    return hmac.compare_digest(sent.encode(), expected.encode())


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))
