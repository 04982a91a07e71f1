"""Readiness checks shared by every service: is a database reachable (the broker checks live
with the producer and the consumer, which know whether they can publish and make progress)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]


async def is_reachable(engine: AsyncEngine, *, timeout_s: float = 2.0) -> bool:
    """True when a ``SELECT 1`` comes back within ``timeout_s``."""

    async def ping() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(ping(), timeout_s)
    except Exception as error:
        log.debug("database %s not reachable: %r", engine.url.render_as_string(), error)
        return False
    return True


def reachable(engine: AsyncEngine) -> ReadinessCheck:
    """``is_reachable`` bound to an engine, for a readiness-check table."""

    async def check() -> bool:
        return await is_reachable(engine)

    return check
