"""The development key `make run` writes to .run/api-key, for the README's curl examples."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from shared.auth.keys import Scope
from shared.auth.migrate import upgrade
from shared.auth.store import ApiKeyStore

DEV_SOURCE = "demo"
DEV_SCOPES = frozenset({Scope.DEMANDS_WRITE, Scope.LABELS_WRITE, Scope.READ})


def ensure_dev_key(auth_database_url: str, path: Path) -> str:
    """The key in ``path`` if it is still a live demo key with every scope, else a new one.

    Blocking (migrates the auth database first): call it before starting the services.
    """
    upgrade(auth_database_url)
    existing = path.read_text().strip() if path.exists() else None
    key, created = asyncio.run(_live_or_new(auth_database_url, existing))
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A secret: created readable by its owner only, and tightened if it existed.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key + "\n")
        path.chmod(0o600)
    return key


async def _live_or_new(auth_database_url: str, existing: str | None) -> tuple[str, bool]:
    store = ApiKeyStore(auth_database_url, cache_ttl_s=0)
    try:
        if existing:
            record = await store.authenticate(existing)
            if record is not None and record.source == DEV_SOURCE and record.scopes >= DEV_SCOPES:
                return existing, False
        plaintext, _ = await store.create(DEV_SOURCE, DEV_SCOPES)
        return plaintext, True
    finally:
        await store.close()
