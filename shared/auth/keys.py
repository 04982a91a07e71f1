"""API keys for the systems that send demands: made, stored as a hash, checked, scoped.

A key reads ``<prefix>_<key_id>_<secret>``. The key id is public (it finds the stored
record and can appear in logs); only the hash of the whole key is stored.

Why SHA-256 and not bcrypt or argon2: slow hashes protect low-entropy passwords from
guessing after a database leak. A secret here is 256 random bits, so guessing is hopeless
however fast the hash is, while a slow hash would cost tens of milliseconds on every one
of thousands of requests a second. Hashing the whole key binds the secret to its key id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

_SECRET_BYTES = 32  # 256 bits
_KEY_ID_BYTES = 8
_HASH_SCHEME = "sha256$"  # names the scheme so stored hashes can be migrated later
_DIGEST_BYTES = 32
_PREFIX = re.compile(r"^[a-z][a-z0-9]*$")
# token_urlsafe(32) gives 43 characters of [A-Za-z0-9_-]; the key id is hex, so the first
# two underscores always separate the parts even when the secret holds underscores.
_KEY = re.compile(r"^[a-z][a-z0-9]*_(?P<key_id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")


class Scope(StrEnum):
    DEMANDS_WRITE = "demands:write"
    LABELS_WRITE = "labels:write"
    READ = "read"
    # Changes the model that classifies everyone's demands (POST /v1/retrain on the
    # classifier): an operator's scope, never a sending system's.
    MODEL_WRITE = "model:write"
    # Reaches every source's data (docs/architecture.md, "Sources and the organisation"):
    # without it a key reads and labels only its own source's demands. For the
    # organisation's dashboards, BI and operators, never for a sending system.
    SOURCES_ALL = "sources:all"


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    source: str  # the sending system this key belongs to, e.g. "genesys-eu"
    scopes: frozenset[Scope]
    hash: str
    created_at: datetime
    revoked_at: datetime | None = None

    def allows(self, scope: Scope) -> bool:
        """A revoked key allows nothing; a write scope does not imply ``read``."""
        return self.revoked_at is None and scope in self.scopes

    @property
    def reach(self) -> str | None:
        """The one source whose data this key reads and labels, or None for every source
        (an organisation-wide key, with ``sources:all``)."""
        return None if self.allows(Scope.SOURCES_ALL) else self.source


def generate_key(prefix: str = "ds") -> tuple[str, str]:
    """A new key as ``(plaintext, key_id)``; show the plaintext once, store its hash."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"prefix must be lower-case letters and digits, got {prefix!r}")
    key_id = secrets.token_hex(_KEY_ID_BYTES)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    return f"{prefix}_{key_id}_{secret}", key_id


def parse_key(plaintext: str) -> tuple[str, str] | None:
    """``(key_id, secret)``, or None when the text is not shaped like one of our keys."""
    match = _KEY.match(plaintext)
    if match is None:
        return None
    return match.group("key_id"), match.group("secret")


def hash_secret(key: str) -> str:
    """The stored form of a plaintext key."""
    return _HASH_SCHEME + hashlib.sha256(key.encode()).hexdigest()


def verify(plaintext: str, stored_hash: str) -> bool:
    """Whether ``plaintext`` is the key behind ``stored_hash``, compared in constant time."""
    if parse_key(plaintext) is None:
        return False
    return hmac.compare_digest(hash_secret(plaintext).encode(), stored_hash.encode())


def stored_digest(stored_hash: str) -> bytes | None:
    """The SHA-256 digest a stored hash names, or None when it is not one ``hash_secret``
    writes (another scheme, or not its lower-case hex): no key verifies against it."""
    if not stored_hash.startswith(_HASH_SCHEME):
        return None
    try:
        digest = bytes.fromhex(stored_hash[len(_HASH_SCHEME) :])
    except ValueError:
        return None
    return digest if len(digest) == _DIGEST_BYTES and hash_of(digest) == stored_hash else None


def hash_of(digest: bytes) -> str:
    return _HASH_SCHEME + digest.hex()


def matches(plaintext: str, digest: bytes) -> bool:
    """``verify`` for a key already parsed, against its stored hash's ``stored_digest``:
    the raw digests compared in constant time, without writing either out as hex (what
    every request paid, ~1 µs of the 1.3 of ``verify``, measured)."""
    return hmac.compare_digest(hashlib.sha256(plaintext.encode()).digest(), digest)
