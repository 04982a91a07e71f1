"""Request latency by route template: a plain ASGI middleware (no per-request task)."""

from __future__ import annotations

import time

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_UNMATCHED = "unmatched"  # a path no route knows: one label, not one per path tried


class RequestTiming:
    def __init__(self, app: ASGIApp, *, histogram: Histogram) -> None:
        self._app = app
        self._histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", _UNMATCHED)
            self._histogram.labels(template, str(status)).observe(time.perf_counter() - started)
