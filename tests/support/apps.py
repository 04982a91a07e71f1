"""Run a service's FastAPI app in-process, lifespan included, and talk to it over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def ready(client: httpx.AsyncClient, timeout: float = 60.0) -> None:
    """Until the app answers /readyz with 200: its consumer polls and its producer is
    connected (a write that publishes before then is a 503)."""
    from tests.support.waiting import wait_until

    async def status() -> int:
        return (await client.get("/readyz")).status_code

    await wait_until(status, accept=lambda code: code == 200, timeout=timeout, what="/readyz")
