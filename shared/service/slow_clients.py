"""A request body that stalls is cut off: a slow client must not hold a connection (and a file
descriptor) for as long as it likes. uvicorn bounds idle keep-alive and the number of
connections (``shared.service.serve``) but has no body read timeout; this adds one. Header
read timeouts belong to the reverse proxy in front (docs/operations.md)."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.service.problems import ProblemError


class BodyReadTimeout:
    """Answer 408 when the next chunk of a request body takes longer than ``timeout_s``."""

    def __init__(self, app: ASGIApp, *, timeout_s: float) -> None:
        self._app = app
        self._timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                # After the body, receive() only waits for a disconnect: no deadline there.
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self._timeout_s)
            except TimeoutError:
                raise ProblemError(
                    408,
                    "Request timeout",
                    detail=f"the request body stalled for more than {self._timeout_s:g}s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self._app(scope, timed_receive, send)
