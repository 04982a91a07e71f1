"""Run a service's FastAPI app in-process, lifespan included, and talk to it over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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


def json_request_scope(method: str, path: str) -> dict[str, Any]:
    """The ASGI scope of a JSON request, for driving an app with a ``receive`` of one's own
    (bodies that arrive in pieces, late, or never)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
