"""ApiKeyStore and require_scope on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from shared.auth import repository
from shared.auth.dependencies import _presented_key, require_scope
from shared.auth.keys import ApiKeyRecord, Scope, generate_key, hash_secret
from shared.auth.migrate import upgrade
from shared.auth.store import ApiKeyStore
from shared.service.problems import install_problem_handlers

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_keys_are_created_listed_authenticated_and_revoked(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    clock = Clock()
    store = ApiKeyStore(database_url, cache_ttl_s=5.0, clock=clock)
    other_process = ApiKeyStore(database_url, cache_ttl_s=5.0, clock=clock)
    try:
        plaintext, record = await store.create("genesys-eu", [Scope.DEMANDS_WRITE])
        assert (await store.authenticate(plaintext)) == record
        assert (
            await store.authenticate(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B"))
            is None
        )
        assert [key.key_id for key in await store.list_keys()] == [record.key_id]
        assert (await other_process.authenticate(plaintext)) == record  # now cached there

        assert await store.revoke(record.key_id)
        assert not await store.revoke(record.key_id)
        assert await store.authenticate(plaintext) is None  # at once where it was revoked
        assert (await other_process.authenticate(plaintext)) == record  # within the TTL
        clock.now += 5.1
        assert await other_process.authenticate(plaintext) is None  # after the TTL
        (listed,) = await store.list_keys(source="genesys-eu")
        assert listed.revoked_at is not None
        with pytest.raises(ValueError, match="source"):
            await store.create("no spaces please", [Scope.READ])
        with pytest.raises(ValueError, match="looks like an e-mail") as refused:
            await store.create("jo@example.com", [Scope.READ])
        assert "jo@example.com" not in str(refused.value)
    finally:
        await store.close()
        await other_process.close()


async def test_a_key_is_checked_against_its_stored_hash(sqlite_url: str) -> None:
    # Each request's key is hashed and compared with the digest its row's hash names,
    # remembered with the row: a wrong secret for a known key id is refused from the
    # memory too, and a row whose hash is not hash_secret's lets no key in.
    await asyncio.to_thread(upgrade, sqlite_url)
    store = ApiKeyStore(sqlite_url)
    try:
        plaintext, record = await store.create("crm", [Scope.DEMANDS_WRITE])
        key_id = record.key_id
        wrong = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
        assert await store.authenticate(wrong) is None  # first read of the row
        assert await store.authenticate(plaintext) == record  # from the memory
        assert await store.authenticate(wrong) is None  # from the memory
        for _ in range(3):
            assert await store.authenticate(plaintext) == record

        other, _ = generate_key()
        upper = ApiKeyRecord(
            key_id=other.split("_")[1],
            source="crm",
            scopes=frozenset({Scope.DEMANDS_WRITE}),
            hash=hash_secret(other).upper(),
            created_at=record.created_at,
        )
        async with store._sessions.begin() as session:
            await repository.insert_key(session, upper)
        assert await store.authenticate(other) is None
        assert key_id != upper.key_id
    finally:
        await store.close()


async def test_require_scope_answers_401_403_as_problems(sqlite_url: str) -> None:
    await asyncio.to_thread(upgrade, sqlite_url)
    store = ApiKeyStore(sqlite_url)
    app = FastAPI()
    app.state.components = SimpleNamespace(key_store=store)
    install_problem_handlers(app)

    @app.get("/read")
    async def read(key: ApiKeyRecord = Depends(require_scope(Scope.READ))) -> dict[str, str]:
        return {"source": key.source}

    reader, _ = await store.create("dash", [Scope.READ])
    writer, _ = await store.create("crm", [Scope.DEMANDS_WRITE])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.get("/read", headers={"X-API-Key": reader})
        assert ok.json() == {"source": "dash"}
        assert (await client.get("/read", headers={"Authorization": f"Bearer {reader}"})).is_success
        missing = await client.get("/read")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.headers["www-authenticate"] == 'Bearer realm="demandscope"'
        assert missing.json()["status"] == 401
        forbidden = await client.get("/read", headers={"X-API-Key": writer})
        assert forbidden.status_code == 403
        assert forbidden.json()["title"] == "Forbidden"
    await store.close()


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"authorization", b"Bearer abc")],
        [(b"authorization", b"bearer  abc  ")],
        [(b"authorization", b"BEARER abc"), (b"authorization", b"Bearer other")],
        [(b"authorization", b"Basic abc"), (b"x-api-key", b" key ")],
        [(b"authorization", b"Bearer "), (b"x-api-key", b"key")],
        [(b"authorization", b""), (b"x-api-key", b"key")],
        [(b"x-api-key", b"first"), (b"x-api-key", b"second")],
        [(b"x-api-key", b"  ")],
        [(b"x-api-key", "caf\u00e9".encode("latin-1")), (b"host", b"t")],
        [(b"authorization", b"Bearer"), (b"x-api-key", b"key")],
    ],
)
def test_the_presented_key_is_what_the_headers_say(headers: list[tuple[bytes, bytes]]) -> None:
    # As read through Starlette's Headers (the first of each name; another scheme in
    # Authorization counts as none).
    request = Request({"type": "http", "headers": headers})
    expected = ""
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            expected = credentials.strip()
    if not expected:
        expected = (request.headers.get("x-api-key") or "").strip()
    assert _presented_key(request) == expected
