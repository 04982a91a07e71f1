"""BodyLimit's body timeout: a chunk the server already holds is handed over without a
timer; a receive that has to wait is under the deadline, and a stalled body (slowloris,
before the first chunk or between chunks) is cut off with the same 408 problem."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CollectorRegistry
from starlette.types import Message

from shared.auth.store import ApiKeyStore
from shared.service.app import service_app
from shared.service.components import ServiceComponents
from shared.service.settings import ServiceSettings
from tests.support.apps import json_request_scope

TIMEOUT_S = 0.3
router = APIRouter()


@router.post("/v1/raw")
async def raw(request: Request) -> dict[str, Any]:
    body = await request.body()
    return {"bytes": len(body), "text": body.decode()}


def toy_app() -> FastAPI:
    async def build(settings: ServiceSettings, stack: AsyncExitStack) -> ServiceComponents:
        return ServiceComponents(
            registry=CollectorRegistry(), key_store=ApiKeyStore("sqlite+aiosqlite://")
        )

    return service_app(
        service="toy",
        settings=ServiceSettings(http_body_timeout_s=TIMEOUT_S),
        build=build,
        title="toy",
        summary="a toy service",
        routers=[router],
    )


@asynccontextmanager
async def running() -> AsyncIterator[FastAPI]:
    app = toy_app()
    async with app.router.lifespan_context(app):
        yield app


Receive = Callable[[], Awaitable[Message]]


async def call(app: FastAPI, receive: Receive) -> tuple[int, dict[str, str], Any]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = json_request_scope("POST", "/v1/raw")
    with contextlib.suppress(RuntimeError):  # Starlette re-raises after answering a 500
        await asyncio.wait_for(app(scope, receive, send), 10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), headers, json.loads(body)


class Timers:
    """Counts asyncio.timeout's uses (the deadline BodyLimit sets for a waiting receive)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = asyncio.timeout

        def counting(delay: float | None) -> asyncio.Timeout:
            self.count += 1
            return real(delay)

        monkeypatch.setattr(asyncio, "timeout", counting)


def held(*chunks: bytes) -> Receive:
    """A server that holds the whole body already: every receive returns at once."""
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # after the body: only a disconnect would come
        raise AssertionError("unreachable")

    return receive


async def test_a_body_the_server_holds_is_read_without_a_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running() as app:
        timers = Timers(monkeypatch)
        status, _, answer = await call(app, held(b'{"a":', b" 1}"))
    assert (status, answer) == (200, {"bytes": 8, "text": '{"a": 1}'})
    assert timers.count == 0


async def test_a_chunk_that_comes_in_time_is_waited_for_under_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each chunk arrives a little after it is asked for (well inside the timeout): the
    # receive suspends, is resumed with the chunk, and each wait had its deadline.
    chunks = [b'{"late":', b' "yes"}']

    async def receive() -> Message:
        arrived = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, arrived.set_result, chunks.pop(0))
        body: bytes = await arrived
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    async with running() as app:
        timers = Timers(monkeypatch)
        status, _, answer = await call(app, receive)
    assert (status, answer["text"]) == (200, '{"late": "yes"}')
    assert timers.count == 2


@pytest.mark.parametrize("before_stall", [[], [b"{"]], ids=["no chunk", "one chunk"])
async def test_a_stalled_body_is_cut_off_with_a_408(before_stall: list[bytes]) -> None:
    # Slowloris: the headers (and maybe a first chunk, at once), then nothing.
    messages = [
        {"type": "http.request", "body": chunk, "more_body": True} for chunk in before_stall
    ]
    cancelled: list[BaseException] = []

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        try:
            await asyncio.Event().wait()
        except BaseException as error:  # the deadline's cancellation reaches the receive
            cancelled.append(error)
            raise
        raise AssertionError("unreachable")

    async with running() as app:
        status, headers, problem = await call(app, receive)
    assert status == 408
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/problem+json"
    assert problem["title"] == "Request timeout"
    assert problem["detail"] == f"the request body stalled for more than {TIMEOUT_S:g}s"
    assert [type(error) for error in cancelled] == [asyncio.CancelledError]


async def test_a_disconnect_while_waiting_is_passed_on() -> None:
    messages: list[Message] = [{"type": "http.request", "body": b"{", "more_body": True}]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(0.01)  # suspends: the disconnect comes through the wait
        return {"type": "http.disconnect"}

    async with running() as app:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        scope = json_request_scope("POST", "/v1/raw")
        await asyncio.wait_for(app(scope, receive, send), 10)
    # Starlette's request.body() turns the disconnect into ClientDisconnect: no 408.
    statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
    assert 408 not in statuses
