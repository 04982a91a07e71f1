"""People's accounts for the pages: a username, a role and a password kept as a slow hash.

Why scrypt here when API keys use SHA-256 (shared/auth/keys.py): a key is 256 random bits,
a password is whatever a person chose, so after a database leak only a slow, memory-hard hash
stands between a guessable password and an attacker's GPUs. scrypt is in the standard library
(``hashlib.scrypt``, OpenSSL), so no extra dependency; its cost is named in the stored hash
(``scrypt$n$r$p$salt$hash``) so it can be raised later without locking anybody out.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.privacy import personal_data_kind, refusal_reason

# OWASP's floor for scrypt is N=2^17 with r=8 (128 MiB); 2^15 (32 MiB, ~0.1 s) keeps a sign-in
# quick on a small machine and is far beyond what a leaked SHA-256 would cost an attacker.
_N, _R, _P = 2**15, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_SCHEME = "scrypt"
_MAX_MEMORY = 256 * 1024 * 1024
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


class Role(StrEnum):
    """What a person may do on the pages: each role may do what the one before may."""

    VIEWER = "viewer"  # reads every page
    REVIEWER = "reviewer"  # also labels demands and records changes to the system
    ADMIN = "admin"  # also everything an admin page offers

    def allows(self, needed: Role) -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.VIEWER: 0, Role.REVIEWER: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Person:
    """Who is signed in, and how ('account' or 'proxy')."""

    username: str
    role: Role
    via: str = "account"


@dataclass(frozen=True)
class AccountRecord:
    username: str
    role: Role
    password_hash: str
    created_at: datetime
    disabled_at: datetime | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None


def check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise ValueError(
            "a username is 1-64 lower-case letters, digits and . _ @ -, starting with a letter "
            f"or digit; got {username!r}"
        )
    kind = personal_data_kind(username)
    if kind is not None:  # it is stored as who recorded a change: a staff id, not an address
        raise ValueError(f"the username {refusal_reason(kind)}")
    return username


def check_password(password: str) -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValueError(
            f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    return password


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEMORY, dklen=_HASH_BYTES
    )


def hash_password(password: str) -> str:
    """The stored form of a password: scheme, cost, salt and hash (slow on purpose)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, _N, _R, _P)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one behind ``stored``, compared in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME or len(password) > MAX_PASSWORD_LENGTH:
            return False
        computed = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(computed, _unb64(digest))


@functools.cache
def decoy_hash() -> str:
    """Verified against when the username is unknown, so that an unknown name takes as long
    to refuse as a wrong password (nobody learns which accounts exist from the timing)."""
    return hash_password(secrets.token_urlsafe(16))
