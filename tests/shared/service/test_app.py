"""service_app: build runs in the lifespan only, probes tell the truth, one error format,
stalled bodies are cut off and a client hanging up is not an error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, Request
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.types import Message

from shared.auth.store import ApiKeyStore
from shared.service.app import service_app
from shared.service.components import ServiceComponents, components_dependency
from shared.service.problems import ProblemError
from shared.service.settings import ServiceSettings
from shared.service.supervisor import BackgroundTask, Policy
from tests.support.apps import json_request_scope, running
from tests.support.waiting import wait_until


@dataclass(kw_only=True)
class ToyComponents(ServiceComponents):
    closed: list[str] = field(default_factory=list)
    trip: asyncio.Event = field(default_factory=asyncio.Event)


class Body(BaseModel):
    n: int


Toy = Annotated[ToyComponents, Depends(components_dependency(ToyComponents))]
router = APIRouter()


@router.post("/v1/echo")
async def echo(body: Body, components: Toy) -> dict[str, int]:
    return {"n": body.n, "tasks": len(components.background)}


@router.post("/v1/raw")
async def raw(request: Request) -> dict[str, int]:
    return {"bytes": len(await request.body())}


@router.get("/v1/teapot")
async def teapot() -> None:
    raise ProblemError(418, "I'm a teapot", detail="short and stout")


@router.get("/v1/crash")
async def crash() -> None:
    raise RuntimeError("secret internals")


def toy_app(*, policy: Policy = Policy.RESTART, built: list[str] | None = None) -> Any:
    async def build(settings: ServiceSettings, stack: AsyncExitStack) -> ToyComponents:
        if built is not None:
            built.append("built")
        components = ToyComponents(
            registry=CollectorRegistry(), key_store=ApiKeyStore("sqlite+aiosqlite://")
        )
        stack.callback(components.closed.append, "closed")

        async def watcher() -> None:
            await components.trip.wait()
            raise RuntimeError("the watcher broke")

        components.background.append(BackgroundTask("watcher", watcher, policy=policy))
        return components

    return service_app(
        service="toy",
        settings=ServiceSettings(http_body_timeout_s=0.5),
        build=build,
        title="toy",
        summary="a toy service",
        routers=[router],
    )


async def test_create_app_builds_nothing_and_the_lifespan_opens_and_closes() -> None:
    built: list[str] = []
    app = toy_app(built=built)
    assert built == []
    async with running(app) as client:
        assert built == ["built"]
        components = app.state.components
        assert (await client.post("/v1/echo", json={"n": 2})).json() == {"n": 2, "tasks": 1}
    assert components.closed == ["closed"]


async def test_a_dying_task_turns_readiness_false_and_a_fatal_one_liveness() -> None:
    app = toy_app(policy=Policy.STOP)
    fatal: list[str] = []
    app.state.on_fatal = lambda: fatal.append("exit")
    async with running(app) as client:
        await wait_until(lambda: _status(client, "/readyz"), accept=lambda s: s == 200)
        app.state.components.trip.set()
        await wait_until(lambda: _status(client, "/healthz"), accept=lambda s: s == 503)
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["tasks"] == {"watcher": "failed"}
        assert "the watcher broke" in (await client.get("/healthz")).json()["reason"]
    assert fatal == ["exit"]


async def test_errors_are_problem_documents() -> None:
    async with running(toy_app()) as client:
        invalid = await client.post("/v1/echo", json={"n": "many"})
        assert invalid.status_code == 422
        assert invalid.headers["content-type"] == "application/problem+json"
        assert invalid.json()["errors"][0]["field"] == "body.n"
        missing = await client.get("/v1/nowhere")
        assert (missing.status_code, missing.json()["title"]) == (404, "Not found")
        teapot = await client.get("/v1/teapot")
        assert teapot.json() == {
            "type": "about:blank",
            "title": "I'm a teapot",
            "status": 418,
            "detail": "short and stout",
            "errors": [],
        }


async def test_an_unexpected_error_is_a_500_problem_without_internals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    app = toy_app()
    async with app.router.lifespan_context(app):
        status, body = await _call(app, "GET", "/v1/crash", [])
    assert status == 500
    assert b"secret internals" not in body
    assert any("secret internals" in r.getMessage() for r in caplog.records)


async def test_a_stalled_body_gets_a_408_and_a_client_hanging_up_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = toy_app()
    caplog.set_level(logging.INFO)
    stall: list[Message] = [{"type": "http.request", "body": b"{", "more_body": True}]
    gone: list[Message] = [
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.disconnect"},
    ]
    async with app.router.lifespan_context(app):
        status, _ = await _call(app, "POST", "/v1/raw", stall)
        assert status == 408
        await _call(app, "POST", "/v1/raw", gone)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("client disconnected" in r.getMessage() for r in caplog.records)


async def _status(client: Any, path: str) -> int:
    return int((await client.get(path)).status_code)


async def _call(app: Any, method: str, path: str, messages: list[Message]) -> tuple[int, bytes]:
    """Drive the ASGI app with the given body messages; then wait for ever (a stalled client)."""
    queue = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = json_request_scope(method, path)
    # Starlette re-raises an unexpected error after answering, for the server to log.
    with contextlib.suppress(RuntimeError):
        await asyncio.wait_for(app(scope, receive, send), 10)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return (int(start["status"]) if start else 0), body
