"""Which engines check a pooled connection before handing it out."""

from __future__ import annotations

import pytest

from shared.database.engine import create_engine


@pytest.mark.parametrize(
    ("url", "checked"),
    [
        ("sqlite+aiosqlite:///:memory:", False),
        ("postgresql+asyncpg://user:secret@127.0.0.1:5432/demandscope", True),
    ],
)
async def test_only_a_server_connection_is_pinged_on_checkout(url: str, checked: bool) -> None:
    engine = create_engine(url)
    try:
        assert engine.pool._pre_ping is checked  # the pool keeps no public flag
    finally:
        await engine.dispose()
