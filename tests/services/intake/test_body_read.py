"""Intake reads a request's body as Starlette's request.body() does, without its async
generator: the same bytes for any chunking, and a client gone mid-body is ClientDisconnect."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from services.intake.api import _body

SCOPE = {"type": "http", "method": "POST", "headers": []}


def request_of(messages: list[Message]) -> Request:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    return Request(SCOPE, receive)


def chunked(chunks: list[bytes]) -> list[Message]:
    return [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]


@given(st.lists(st.binary(max_size=30), min_size=1, max_size=6))
@settings(max_examples=200, deadline=None)
def test_the_body_is_what_request_body_reads(chunks: list[bytes]) -> None:
    async def both() -> tuple[bytes, bytes]:
        return await _body(request_of(chunked(chunks))), await request_of(chunked(chunks)).body()

    ours, starlettes = asyncio.run(both())
    assert ours == starlettes == b"".join(chunks)


async def test_a_body_without_a_body_key_is_empty() -> None:
    assert await _body(request_of([{"type": "http.request"}])) == b""


async def test_a_client_gone_mid_body_is_a_client_disconnect() -> None:
    messages = [*chunked([b"{", b"}"])[:1], {"type": "http.disconnect"}]
    with pytest.raises(ClientDisconnect):
        await _body(request_of(messages))
