"""Request bodies are bounded in size and in time, for every service: one ASGI middleware,
``BodyLimit``, that ``service_app`` installs (one wrapper around every request, not one per
concern: each layer of receive/send closures costs every request a few microseconds):

- it counts a body as the app reads it and answers 413 as soon as it passes
  ``max_body_bytes`` (or, when the app starts reading, if the declared Content-Length already
  does): a large body is never held in memory. It reads nothing itself, so a route that
  checks the key first answers 401 without reading a byte.
- it answers 408 when the next chunk takes longer than the timeout: a slow client must not
  hold a connection (and a file descriptor) as long as it likes. uvicorn bounds idle
  keep-alive and the number of connections (``shared.service.serve``) but has no body read
  timeout. Header read timeouts belong to the reverse proxy in front (docs/operations.md).
  A chunk the server already holds (most bodies arrive whole with the headers) is handed
  over without a timer: only a receive that has to wait is put under the deadline.
- given ``observe``, it reports each request's status and duration (intake's latency
  histogram), so timing needs no wrapper of its own.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Callable, Generator
from typing import Any, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.service.problems import ProblemError

# Told each answered request's scope (with the route matched, if any), status and seconds.
RequestObserver = Callable[[Scope, int, float], None]


class BodyTooLarge(ProblemError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413, "Content too large", detail=f"The body is larger than the limit of {limit} bytes."
        )


class BodyLimit:
    """413 once a body passes ``max_bytes``; 408 when its next chunk is ``timeout_s`` late."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        timeout_s: float,
        observe: RequestObserver | None = None,
    ) -> None:
        self.app = app  # named as Starlette's middleware name the app they wrap
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        limit, timeout_s = self._max_bytes, self._timeout_s
        declared = _content_length(scope["headers"])
        too_large_declared = declared is not None and declared > limit
        received = 0
        body_done = False
        responding = False
        status = 500

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done or responding:
                # After the body, or once the answer has started, receive() only waits for
                # a disconnect: no deadline and no count there.
                return await receive()
            if too_large_declared:
                raise BodyTooLarge(limit)
            # receive()'s first step, taken here: a chunk the server holds already comes back
            # at once (uvicorn's wait on its message event returns without suspending), and
            # asyncio.timeout's timer (4.7 µs a call under uvloop, measured) is only set up
            # for a receive that has to wait for the client.
            steps = receive().__await__()
            try:
                waiting_on = steps.send(None)
            except StopIteration as done:
                message = cast(Message, done.value)
            else:
                try:
                    async with asyncio.timeout(timeout_s):  # no task per chunk, unlike wait_for
                        message = await _rest(steps, waiting_on)
                except TimeoutError:
                    raise ProblemError(
                        408,
                        "Request timeout",
                        detail=f"the request body stalled for more than {timeout_s:g}s",
                        headers={"Connection": "close"},
                    ) from None
            if message["type"] != "http.request":
                body_done = True
                return message
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            if not message.get("more_body", False):
                body_done = True
            return message

        async def noting_send(message: Message) -> None:
            nonlocal responding, status
            if message["type"] == "http.response.start":
                responding = True
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, bounded_receive, noting_send)
        finally:
            if self._observe is not None:
                self._observe(scope, status, time.perf_counter() - started)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


# An awaitable's steps, as ``await`` takes them: what its ``__await__`` gives.
_Steps = Generator[Any, None, Message]


@types.coroutine
def _rest(steps: _Steps, waiting_on: Any) -> _Steps:
    """Awaits what is left of ``steps``, whose first step was taken and yielded
    ``waiting_on``: what ``await`` would have done from there (``yield from``), with every
    value, exception (a cancellation by the deadline) and close passed on to it."""
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as error:
            try:
                waiting_on = steps.throw(error)
            except StopIteration as done:
                return cast(Message, done.value)
        else:
            try:
                waiting_on = steps.send(sent)
            except StopIteration as done:
                return cast(Message, done.value)
