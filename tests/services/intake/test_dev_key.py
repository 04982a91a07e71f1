"""ensure_dev_key: the key `make run` writes for the README's curl examples."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.intake.cli import DEV_SCOPES, ensure_dev_key
from shared.auth.store import ApiKeyStore


def test_makes_a_demo_key_once_and_reuses_it_while_it_is_live(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    path = tmp_path / ".run" / "api-key"
    first = ensure_dev_key(url, path)
    assert path.read_text() == first + "\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_dev_key(url, path) == first

    async def check_and_revoke() -> None:
        store = ApiKeyStore(url, cache_ttl_s=0)
        record = await store.authenticate(first)
        assert record is not None
        assert (record.source, record.scopes) == ("demo", DEV_SCOPES)
        await store.revoke(record.key_id)
        await store.close()

    asyncio.run(check_and_revoke())
    replacement = ensure_dev_key(url, path)
    assert replacement != first
    assert path.read_text().strip() == replacement
