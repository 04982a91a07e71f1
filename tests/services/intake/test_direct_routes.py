"""The hot endpoints (single and batch demands) are served by ``DirectRoute``: the documented
routes' own endpoints and dependencies, called without FastAPI's per-request machinery. The
route OpenAPI documents and the route served are the same, in code and in behaviour."""

from __future__ import annotations

import json
import logging
import types
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from fastapi.responses import FileResponse, JSONResponse
from starlette.middleware import exceptions
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from services.intake import direct_routes
from services.intake.api import post_demand, post_demand_batch
from services.intake.config import IntakeSettings
from services.intake.direct_routes import DirectRoute, _DirectDispatch, api_routes, serve_directly
from services.intake.main import create_app
from shared.auth.dependencies import scope_required_by
from shared.auth.keys import Scope as KeyScope
from shared.auth.store import ApiKeyStore
from tests.support.apps import ready, running
from tests.support.factories import cloudevent_body, demand_body
from tests.support.waiting import wait_until


def test_the_served_routes_are_the_documented_ones() -> None:
    app = create_app()
    direct = [route for route in app.router.routes if isinstance(route, DirectRoute)]
    assert app.router.routes[: len(direct)] == direct  # ahead of every other route
    assert {(route.path, route.endpoint) for route in direct} == {
        ("/v1/demands", post_demand),
        ("/v1/demands:batch", post_demand_batch),
    }
    documented = app.openapi()["paths"]
    for route in direct:
        [api_route] = [r for r in api_routes(app.routes) if r.endpoint is route.endpoint]
        assert route.route is api_route
        assert route.methods == {"POST"} == api_route.methods
        # The same dependencies, in FastAPI's order: the components, then the scoped key.
        assert [(name, call) for name, call, _ in route.dependencies] == [
            (dependency.name, dependency.call) for dependency in api_route.dependant.dependencies
        ]
        scopes = [scope_required_by(call) for _, call, _ in route.dependencies]
        assert KeyScope.DEMANDS_WRITE in scopes
        operation = documented[route.path]["post"]
        assert operation["security"] == [{"HTTPBearer": []}]
        assert {"401", "403", "413", "415", "422", "503"} <= set(operation["responses"])
        assert "application/json" in operation["requestBody"]["content"]


def test_a_route_that_needs_more_than_the_request_is_not_served_directly() -> None:
    async def needs_nothing_else(request: Request) -> str:
        return "ok"

    app = FastAPI()

    @app.post("/with-query")
    async def with_query(request: Request, page: int) -> JSONResponse:
        return JSONResponse({})

    @app.post("/plain")
    async def plain(
        request: Request, dependency: str = Depends(needs_nothing_else)
    ) -> JSONResponse:
        return JSONResponse({})

    with pytest.raises(ValueError, match="only an endpoint of the request"):
        serve_directly(app, [with_query])
    with pytest.raises(ValueError, match="one route"):
        serve_directly(app, [needs_nothing_else])
    [route] = serve_directly(app, [plain])
    assert route.dependencies == (("dependency", needs_nothing_else, "request"),)


# --- dispatched ahead of the router ----------------------------------------------------------


def _dispatch_of(stack: ASGIApp) -> _DirectDispatch:
    layer: Any = stack
    while not isinstance(layer, _DirectDispatch):
        layer = layer.app
    return layer


def test_the_direct_routes_are_dispatched_around_the_exception_middleware(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On the FastAPI and Starlette installed: the dispatch is in place (a release that moved
    what it stands in for would be served through the router, silently but for a warning:
    this is where CI notices)."""
    stack = create_app().build_middleware_stack()
    assert not [r for r in caplog.records if "served through the router" in r.getMessage()]
    layer: Any = stack
    while not isinstance(layer, _DirectDispatch):
        layer = layer.app
    # Around the error handlers (whose handlers it uses), FastAPI's exit stack and the router.
    handling = layer.app
    assert isinstance(handling, ExceptionMiddleware)
    assert isinstance(handling.app, AsyncExitStackMiddleware)
    assert layer.handlers[0] is handling._exception_handlers
    assert layer.handlers[1] is handling._status_handlers
    assert set(layer.routes) == {"/v1/demands", "/v1/demands:batch"}


_REUSED = KeyError("handled")


class _StartsThenFails(JSONResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise KeyError("after the start")


class _StartsThenFailsUnhandled(JSONResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise LookupError("nobody handles this after the start")


class _OnArithmetic:
    """An exception handler that is an object with an ``async def __call__``."""

    async def __call__(self, request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"handled": str(error)}, status_code=422)


def _app_with_handlers(seen: list[Scope]) -> tuple[FastAPI, list[DirectRoute]]:
    """An app whose directly served endpoints raise what each kind of handler answers."""
    app = FastAPI()

    @app.post("/plain")
    async def plain(request: Request) -> JSONResponse:
        seen.append(dict(request.scope))
        return JSONResponse({"ok": True}, status_code=202)

    @app.post("/by-class")
    async def by_class(request: Request) -> JSONResponse:
        raise _REUSED  # one instance, raised again and again

    @app.post("/by-plain-def")
    async def by_plain_def(request: Request) -> JSONResponse:
        raise ValueError("in the thread pool")

    @app.post("/by-status")
    async def by_status(request: Request) -> JSONResponse:
        raise HTTPException(409, "taken")

    @app.post("/unhandled")
    async def unhandled(request: Request) -> JSONResponse:
        raise LookupError("nobody handles this")

    @app.post("/after-start")
    async def after_start(request: Request) -> JSONResponse:
        return _StartsThenFails({})

    @app.post("/unhandled-after-start")
    async def unhandled_after_start(request: Request) -> JSONResponse:
        return _StartsThenFailsUnhandled({})

    @app.post("/by-callable-object")
    async def by_callable_object(request: Request) -> JSONResponse:
        raise ArithmeticError("by an object")

    @app.post("/missing-file")
    async def missing_file(request: Request) -> FileResponse:
        # FileResponse looks for its file before it sends anything: a RuntimeError, handled.
        return FileResponse("/nonexistent/demandscope/file.txt")

    async def on_key_error(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"handled": str(error), "path": request.url.path}, status_code=418)

    def on_value_error(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"handled": str(error)}, status_code=400)

    async def on_409(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"status": 409}, status_code=409, headers={"X-By": "status"})

    app.add_exception_handler(KeyError, on_key_error)
    app.add_exception_handler(ValueError, on_value_error)

    async def on_runtime_error(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"handled": "runtime"}, status_code=409)

    app.add_exception_handler(409, on_409)
    app.add_exception_handler(ArithmeticError, _OnArithmetic())
    app.add_exception_handler(RuntimeError, on_runtime_error)
    endpoints: list[Callable[..., Awaitable[Any]]] = [
        plain,
        by_class,
        by_plain_def,
        by_status,
        unhandled,
        after_start,
    ]
    endpoints += [unhandled_after_start, by_callable_object, missing_file]
    direct = serve_directly(app, endpoints)
    return app, direct


async def _outcome(client: httpx.AsyncClient, method: str, path: str) -> tuple[Any, ...]:
    try:
        answer = await client.request(method, path)
    except Exception as error:  # what reaches the server (ServerErrorMiddleware: a 500)
        return type(error).__name__, str(error)
    return answer.status_code, answer.headers.get("x-by"), answer.text


async def test_a_dispatched_request_is_handled_as_the_router_would() -> None:
    """Each outcome (an answer, each kind of exception handler, an error nobody handles, a
    handled error once the response started, another method or path) is the same through
    the dispatch as through the ExceptionMiddleware and the router; the scope the endpoint
    sees is the router's, without the exit stack the dispatch skips."""
    seen: list[Scope] = []
    app, direct = _app_with_handlers(seen)
    transport = httpx.ASGITransport(app=app)
    requests = [("POST", path) for path in ("/plain", "/by-class", "/by-plain-def")]
    requests += [("POST", path) for path in ("/by-status", "/unhandled", "/after-start")]
    requests += [("POST", path) for path in ("/unhandled-after-start", "/by-callable-object")]
    requests += [("POST", "/missing-file"), ("GET", "/plain"), ("POST", "/elsewhere")]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        dispatched = [await _outcome(client, method, path) for method, path in requests]
        assert _REUSED.__traceback__ is None  # cleared once handled, as Starlette clears it
        assert app.middleware_stack is not None
        dispatch = _dispatch_of(app.middleware_stack)
        dispatch.routes = {}
        routed = [await _outcome(client, method, path) for method, path in requests]
    assert dispatched == routed
    assert dispatched[:9] == [
        (202, None, '{"ok":true}'),
        (418, None, '{"handled":"\'handled\'","path":"/by-class"}'),
        (400, None, '{"handled":"in the thread pool"}'),
        (409, "status", '{"status":409}'),
        ("LookupError", "nobody handles this"),
        ("RuntimeError", "Caught handled exception, but response already started."),
        ("LookupError", "nobody handles this after the start"),  # raised on, started or not
        (422, None, '{"handled":"by an object"}'),
        (409, None, '{"handled":"runtime"}'),  # not started: FileResponse found no file
    ]
    assert [outcome[0] for outcome in dispatched[9:]] == [405, 404]  # the router's answers
    dispatched_scope, routed_scope = seen
    assert dispatched_scope["route"] is direct[0].route  # the documented route
    assert dispatched_scope["router"] is app.router
    assert dispatched_scope["endpoint"] is direct[0].endpoint
    assert dispatched_scope["path_params"] == {}
    assert "fastapi_middleware_astack" not in dispatched_scope  # the exit stack was skipped
    assert "fastapi_middleware_astack" in routed_scope
    assert (
        dispatched_scope["starlette.exception_handlers"]
        == routed_scope["starlette.exception_handlers"]
    )
    for name in ("route", "router", "endpoint", "path_params", "app", "path", "type"):
        assert dispatched_scope[name] == routed_scope[name], name


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [record.getMessage() for record in caplog.records]
    return [message for message in messages if "served through the router" in message]


def _has_dispatch(stack: ASGIApp | None) -> bool:
    layer: Any = stack
    while layer is not None and not isinstance(layer, _DirectDispatch):
        layer = getattr(layer, "app", None)
    return layer is not None


async def test_a_stack_built_otherwise_is_served_through_the_router_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    served = [0]

    @app.post("/plain")
    async def plain(request: Request) -> JSONResponse:
        served[0] += 1
        return JSONResponse({"ok": True}, status_code=202)

    [route] = serve_directly(app, [plain])

    async def own_middleware(scope: Scope, receive: Receive, send: Send) -> None:
        await app.router.app(scope, receive, send)

    app.router.middleware_stack = own_middleware  # a router with middleware of its own
    handled = [0]

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        handled[0] += 1
        await DirectRoute.handle(route, scope, receive, send)

    route.handle = counted  # type: ignore[method-assign]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answers = [await client.post("/plain") for _ in range(2)]
    assert [answer.status_code for answer in answers] == [202, 202]
    assert handled[0] == served[0] == 2  # the direct route, found by the router
    assert not _has_dispatch(app.middleware_stack)
    assert _warnings(caplog) == [
        "direct routes served through the router: the router has middleware of its own"
    ]


def _handlers_kept_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    original = exceptions.ExceptionMiddleware.__init__

    def kept_elsewhere(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._status_handlers = types.MappingProxyType(self._status_handlers)  # not a dict

    monkeypatch.setattr(exceptions.ExceptionMiddleware, "__init__", kept_elsewhere)


def _lookup_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if the import had failed (the names are imported guarded, None when not found).
    monkeypatch.setattr(direct_routes, "_lookup_exception_handler", None)


@pytest.mark.integration
@pytest.mark.parametrize("change", [_handlers_kept_elsewhere, _lookup_gone])
async def test_on_a_framework_of_another_shape_intake_starts_and_answers_through_the_router(
    intake_settings: IntakeSettings,
    demo_key: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    change: Callable[[pytest.MonkeyPatch], None],
) -> None:
    change(monkeypatch)
    handled = [0]
    handle = DirectRoute.handle

    async def counted(self: DirectRoute, scope: Scope, receive: Receive, send: Send) -> None:
        handled[0] += 1
        await handle(self, scope, receive, send)

    monkeypatch.setattr(DirectRoute, "handle", counted)
    caplog.set_level(logging.WARNING, logger=direct_routes.__name__)
    app = create_app(intake_settings)
    async with running(app) as intake:
        intake.headers["Authorization"] = f"Bearer {demo_key}"
        await ready(intake)
        answer = await intake.post("/v1/demands", json=demand_body(id="fallback-1"))
        problem = await intake.post("/v1/demands", json=demand_body(id="x", channel="fax"))
    assert answer.status_code == 202, answer.text
    assert problem.status_code == 422
    assert problem.headers["content-type"] == "application/problem+json"
    assert handled[0] == 2  # both served by the direct route, through the router
    assert not _has_dispatch(app.middleware_stack)
    assert len(_warnings(caplog)) == 1


# --- the same answers either way --------------------------------------------------------------

Send_ = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


def _post(
    path: str, body: Any, *, raw: bool = False, headers: dict[str, str] | None = None
) -> Send_:
    """A request whose event ids carry ``{id}``, filled in per run so both runs are fresh."""
    text = body if raw else json.dumps(body)

    async def send(client: httpx.AsyncClient, tag: str) -> httpx.Response:
        content = text.replace("{id}", tag)
        return await client.post(
            path,
            content=content,
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    return send


def _cases(reader_key: str) -> dict[str, list[Send_]]:
    """Each case: requests sent in order (a repeat after its first), the last one compared."""
    valid = demand_body(id="{id}-1")
    mixed = [
        demand_body(id="{id}-2"),
        demand_body(id="{id}-3", text="   "),
        demand_body(id="{id}-2"),
        demand_body(id="{id}-4", channel="pigeon"),
        {"id": 5},
    ]
    return {
        "accepted": [_post("/v1/demands", valid)],
        "duplicate": [_post("/v1/demands", valid), _post("/v1/demands", valid)],
        "no key": [_post("/v1/demands", valid, headers={"Authorization": ""})],
        "unknown key": [
            _post("/v1/demands", valid, headers={"Authorization": "Bearer ds_nonsense"})
        ],
        "no scope": [
            _post("/v1/demands", valid, headers={"Authorization": f"Bearer {reader_key}"})
        ],
        "other source": [_post("/v1/demands", demand_body(id="{id}-6", source="genesys"))],
        "invalid": [_post("/v1/demands", demand_body(id="{id}-7", channel="fax"))],
        "personal id": [_post("/v1/demands", demand_body(id="jo@example.com"))],
        "not json": [_post("/v1/demands", "{not json", raw=True)],
        "media type": [_post("/v1/demands", valid, headers={"Content-Type": "text/plain"})],
        "too large": [_post("/v1/demands:batch", [demand_body(id="{id}-8")] * 400)],
        "batch": [_post("/v1/demands:batch", mixed)],
        "cloudevents batch": [
            _post(
                "/v1/demands:batch",
                [cloudevent_body(id="{id}-9"), {"id": 1}],
                headers={"Content-Type": "application/cloudevents-batch+json"},
            )
        ],
        "structured": [
            _post(
                "/v1/demands",
                cloudevent_body(id="{id}-10"),
                headers={"Content-Type": "application/cloudevents+json"},
            )
        ],
    }


def _answer(response: httpx.Response, tag: str) -> tuple[Any, ...]:
    headers = {
        name: response.headers.get(name)
        for name in ("content-type", "www-authenticate", "retry-after", "location")
    }
    return response.status_code, headers, response.text.replace(tag, "{id}")


@pytest.mark.integration
async def test_the_direct_and_the_documented_route_answer_alike(
    intake_settings: IntakeSettings,
    demo_key: str,
    key_store: ApiKeyStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader_key, _ = await key_store.create("demo", [KeyScope.READ])
    served = [0]

    class Counted(Request):
        """The request a direct route (dispatched or routed) makes: counted."""

        def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
            served[0] += 1
            super().__init__(scope, receive, send)

    # Only the direct routes' module: FastAPI's own route makes its requests elsewhere.
    monkeypatch.setattr(direct_routes, "Request", Counted)
    app = create_app(intake_settings)
    async with running(app) as intake:
        intake.headers["Authorization"] = f"Bearer {demo_key}"
        await wait_until(lambda: _status(intake, "/readyz"), accept=lambda s: s == 200)
        await _compare(app, intake, _cases(reader_key), lambda: served[0])


async def _compare(
    app: FastAPI,
    intake: httpx.AsyncClient,
    cases: dict[str, list[Send_]],
    served: Callable[[], int],
) -> None:
    """Each case through the direct routes (dispatched ahead of the router, then found by
    the router), then through FastAPI's alone: the same answer."""
    routes = app.router.routes
    direct = [route for route in routes if isinstance(route, DirectRoute)]
    assert len(direct) == 2
    fastapi_only = [route for route in routes if not isinstance(route, DirectRoute)]
    assert app.middleware_stack is not None  # built by the readiness requests
    dispatch = _dispatch_of(app.middleware_stack)
    dispatched = dispatch.routes
    ways: tuple[tuple[str, list[Any], dict[str, list[DirectRoute]]], ...] = (
        ("dispatched", routes, dispatched),
        ("routed", routes, {}),
        ("fastapi", fastapi_only, {}),
    )
    for name, requests in cases.items():
        answers = []
        for way, served_routes, dispatching in ways:
            tag = f"{way}-{name.replace(' ', '-')}"
            app.router.routes = served_routes
            dispatch.routes = dispatching
            before = served()
            for send in requests:
                response = await send(intake, tag)
            assert (served() > before) == (way != "fastapi"), name
            answers.append(_answer(response, tag))
        app.router.routes = routes
        dispatch.routes = dispatched
        dispatched_answer, routed_answer, fastapi_answer = answers
        assert dispatched_answer == routed_answer == fastapi_answer, name


async def _status(client: httpx.AsyncClient, path: str) -> int:
    return (await client.get(path)).status_code
