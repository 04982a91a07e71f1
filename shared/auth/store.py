"""ApiKeyStore: create, list, revoke and authenticate keys, with a short memory.

Authenticating hits the database once per key id per ``cache_ttl_s`` (5 s by default),
not once per request: at thousands of requests a second the key table would otherwise be
the busiest table in the system. The price is that a revocation made by another process
takes effect within ``cache_ttl_s``; one made through this store takes effect at once.

What is remembered per key id is its record and the raw SHA-256 digest its stored hash
names (never a plaintext key): a request's key is hashed once and compared with it in
constant time. A key created or revoked through this store drops its entry, so the
next request reads the table again; revocation semantics are the cache's, above.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.auth import repository
from shared.auth.keys import (
    ApiKeyRecord,
    Scope,
    generate_key,
    hash_secret,
    matches,
    parse_key,
    stored_digest,
)
from shared.database.engine import create_engine
from shared.privacy import personal_data_kind, refusal_reason

# A source names a sending system and is compared with each event's `source`.
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}$")
# Unknown key ids are remembered too (so a flood of bad keys does not reach the
# database), which is why the memory is bounded.
_MAX_CACHED = 10_000

# A key id's record (None: unknown), until when it may be used, and the digest its stored
# hash names (None: no key verifies against it).
_Cached = tuple[ApiKeyRecord | None, float, bytes | None]


class ApiKeyStore:
    def __init__(
        self,
        engine: AsyncEngine | str,
        *,
        cache_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._owns_engine = isinstance(engine, str)
        self._engine = create_engine(engine) if isinstance(engine, str) else engine
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._in_flight: dict[str, asyncio.Future[_Cached]] = {}

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def create(
        self, source: str, scopes: Iterable[Scope], *, prefix: str = "ds"
    ) -> tuple[str, ApiKeyRecord]:
        """A new key for ``source``: the plaintext (show it once) and what is stored."""
        if not _SOURCE.match(source):
            raise ValueError(f"source must be an identifier like 'genesys-eu', got {source!r}")
        kind = personal_data_kind(source)
        if kind is not None:
            # Sources travel on every event and in every key's record: never personal data.
            raise ValueError(f"source {refusal_reason(kind)}")
        chosen = frozenset(scopes)
        if not chosen:
            raise ValueError("a key needs at least one scope")
        plaintext, key_id = generate_key(prefix)
        record = ApiKeyRecord(
            key_id=key_id,
            source=source,
            scopes=chosen,
            hash=hash_secret(plaintext),
            created_at=datetime.now(UTC),
        )
        async with self._sessions.begin() as session:
            await repository.insert_key(session, record)
        self._cache.pop(key_id, None)
        return plaintext, record

    async def list_keys(self, *, source: str | None = None) -> list[ApiKeyRecord]:
        async with self._session() as session:
            return await repository.all_keys(session, source=source)

    async def find(self, key_id: str) -> ApiKeyRecord | None:
        async with self._session() as session:
            return await repository.find_key(session, key_id)

    async def revoke(self, key_id: str) -> bool:
        """True when the key existed and was live; it stops working here at once."""
        async with self._sessions.begin() as session:
            revoked = await repository.mark_revoked(session, key_id, datetime.now(UTC))
        self._cache.pop(key_id, None)
        return revoked

    async def authenticate(self, plaintext: str) -> ApiKeyRecord | None:
        """The live key behind ``plaintext``, or None (malformed, unknown, wrong or revoked)."""
        parsed = parse_key(plaintext)
        if parsed is None:
            return None
        cached = self._cache.get(parsed[0])
        if cached is None or cached[1] <= self._clock():
            cached = await self._lookup(parsed[0])
        record, _, digest = cached
        if record is None or record.revoked_at is not None or digest is None:
            return None
        return record if matches(plaintext, digest) else None

    async def close(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()

    async def _lookup(self, key_id: str) -> _Cached:
        # Single flight: the hundred requests that arrive while a key is being looked up
        # (at start, or as its entry expires) share one query instead of a hundred.
        pending = self._in_flight.get(key_id)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(key_id))
            self._in_flight[key_id] = pending
            pending.add_done_callback(lambda _done: self._in_flight.pop(key_id, None))
        return await asyncio.shield(pending)

    async def _fetch(self, key_id: str) -> _Cached:
        record = await self.find(key_id)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        digest = None if record is None else stored_digest(record.hash)
        cached = self._cache[key_id] = (record, self._clock() + self._ttl, digest)
        return cached

    def _session(self) -> AsyncSession:
        return self._sessions()
