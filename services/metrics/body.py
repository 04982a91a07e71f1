"""Request bodies: bounded while they stream, and read only after the key was checked.

``BodyLimit`` (ASGI middleware) counts every body as the app reads it and raises a 413
problem as soon as it passes ``max_bytes`` (or, when the app starts reading, if the declared
Content-Length already does): a large body is never held in memory. It reads nothing
itself, so a route that checks the key first (every route here: the body is a dependency
declared after the scope, see ``api.py``) answers 401 without reading a byte.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.service.problems import ProblemError


class BodyTooLarge(ProblemError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413, "Content too large", detail=f"The body is larger than the limit of {limit} bytes."
        )


class BodyLimit:
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
