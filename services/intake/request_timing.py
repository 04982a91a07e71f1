"""Request latency by route template: a plain ASGI middleware (no per-request task).

The histogram belongs to the running components (built in the lifespan, with their
registry), so the middleware finds it on the app the request came to; before the lifespan
has run, or after it ended, nothing is recorded.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.intake.components import IntakeComponents

_UNMATCHED = "unmatched"  # a path no route knows: one label, not one per path tried


class RequestTiming:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

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
            components = getattr(scope["app"].state, "components", None)
            if isinstance(components, IntakeComponents):
                route = scope.get("route")
                template = getattr(route, "path", _UNMATCHED)
                histogram = components.metrics.request_seconds
                histogram.labels(template, str(status)).observe(time.perf_counter() - started)
