"""Request bodies are bounded in size and in time, for every service (ASGI middleware that
``service_app`` installs):

- ``BodyLimit`` counts a body as the app reads it and answers 413 as soon as it passes
  ``max_body_bytes`` (or, when the app starts reading, if the declared Content-Length already
  does): a large body is never held in memory. It reads nothing itself, so a route that
  checks the key first answers 401 without reading a byte.
- ``BodyReadTimeout`` answers 408 when the next chunk takes longer than the timeout: a slow
  client must not hold a connection (and a file descriptor) as long as it likes. uvicorn
  bounds idle keep-alive and the number of connections (``shared.service.serve``) but has no
  body read timeout. Header read timeouts belong to the reverse proxy in front
  (docs/operations.md).
"""

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


class BodyTooLarge(ProblemError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413, "Content too large", detail=f"The body is larger than the limit of {limit} bytes."
        )


class BodyLimit:
    """Answer 413 once a request body passes ``max_bytes``, while it streams."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self._max_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        too_large_declared = declared.isdigit() and int(declared) > limit
        received = 0
        responding = False

        async def bounded_receive() -> Message:
            nonlocal received
            # Once the answer has started, the app only listens for a disconnect: let it.
            if too_large_declared and not responding:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request" and not responding:
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def noting_send(message: Message) -> None:
            nonlocal responding
            if message["type"] == "http.response.start":
                responding = True
            await send(message)

        await self._app(scope, bounded_receive, noting_send)
