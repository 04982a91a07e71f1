"""The hot endpoints served without FastAPI's per-request machinery, as documented.

A ``DirectRoute`` sits ahead of FastAPI's routes for the same path and method and calls the
documented route's own endpoint with its own dependencies: the route (``APIRoute``) stays
what OpenAPI describes and what a request would reach without it, and only the way its
arguments are found changes. FastAPI resolves dependencies generically on every request
(introspecting each one, building query parameters, exit stacks and a request scope: a
fifth of a single-event request at intake, docs/performance.md); an endpoint whose
arguments are the request and dependencies that read only the request needs none of that:
here each dependency is called with the request, in the order FastAPI calls them.

What stays the same, because the route is served inside the same app: the middleware
(``BodyLimit``: size, body timeout, the request histogram, which finds the documented route
in the scope) and the error handlers (a ``ProblemError`` from a dependency or the endpoint
is answered by the app's handler, exactly as on FastAPI's path). A route that needs more
than the request (path, query, header or body parameters, a dependency of a dependency, one
with ``yield``) is refused when the app is built, never served half-resolved.

The direct routes are also found before the router, and before Starlette's
``ExceptionMiddleware``: ``_DirectDispatch`` sits right outside it and serves a request
they match itself, so that request skips FastAPI's ``AsyncExitStackMiddleware`` (an exit
stack a request, for closing uploaded files, which a direct route never opens), the router
(its scope checks and its walk of the routes) and the ExceptionMiddleware's own wrapping (a
second Request, two closures and a wrapper around every message sent). What that wrapping
does is done here with the same handlers, in the same steps (Starlette's
``wrap_app_handling_exceptions``): an error a handler is registered for is answered by it,
any other goes on up to ``ServerErrorMiddleware``, and one raised once the response has
started is a RuntimeError. The scope is set as the ExceptionMiddleware and the router set
it (the handlers, ``router``, the route's child scope). Any other request goes on to the
ExceptionMiddleware and the router, where the direct routes stay first, as before.

FastAPI and Starlette are not pinned, and some of what the dispatch stands in for is private
to them. A release that moves a name, keeps the handlers otherwise or builds the stack
otherwise does not stop intake: the stack is left as built, one warning says why, and the
direct routes are served through the router (where they are first), as before the dispatch.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Endpoint = Callable[..., Awaitable[Any]]
ExceptionHandlers = dict[Any, Callable[..., Any]]
StatusHandlers = dict[int, Callable[..., Any]]
_Lookup = Callable[[ExceptionHandlers, Exception], Callable[..., Any] | None]

log = logging.getLogger(__name__)

# FastAPI and Starlette are not pinned, and what the dispatch stands in for is theirs, some of
# it private: each name is imported where it is today, and one a release moves or drops makes
# the direct routes served through the router (one warning), never stops intake starting.
_missing: list[str] = []
_lookup_exception_handler: _Lookup | None = None
is_async_callable: Callable[[Any], bool] | None = None
AsyncExitStackMiddleware: type[Any] | None = None
try:
    from starlette._exception_handler import _lookup_exception_handler as _lookup

    _lookup_exception_handler = _lookup
except ImportError:  # each missing one is named when the stack is built
    pass
try:
    from starlette._utils import is_async_callable as _is_async_callable

    is_async_callable = _is_async_callable
except ImportError:
    pass
try:
    from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware as _ExitStack

    AsyncExitStackMiddleware = _ExitStack
except ImportError:
    pass
try:
    from starlette._utils import get_route_path
except ImportError:  # the router's own matching is then unknown: this is Starlette's today
    _missing.append("starlette._utils.get_route_path")

    def get_route_path(scope: Scope) -> str:
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if not root_path or not path.startswith(root_path):
            return path
        if path == root_path:
            return ""
        return path[len(root_path) :] if path[len(root_path)] == "/" else path


class DirectRoute(BaseRoute):
    """Serves ``route`` (an app's ``APIRoute``) for its path and methods, ahead of FastAPI."""

    def __init__(self, route: APIRoute) -> None:
        self.route = route
        self.path = route.path
        self.path_format = route.path_format  # what FastAPI's router reports as the route
        self.methods = frozenset(route.methods or ())
        self.endpoint = route.endpoint
        self.request_param, self.dependencies = _request_only(route.dependant, route.path)
        self._child_scope: dict[str, Any] = {
            "route": route,
            "endpoint": route.endpoint,
            "path_params": {},
        }

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if (
            scope["type"] == "http"
            and scope["method"] in self.methods
            and get_route_path(scope) == self.path
        ):
            return Match.FULL, self._child_scope
        # Any other method or path: FastAPI's routes answer it (405, 404, redirects).
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        arguments: dict[str, Any] = {self.request_param: request}
        for name, dependency, takes in self.dependencies:
            arguments[name] = await dependency(**{takes: request})
        response = await self.endpoint(**arguments)
        if not isinstance(response, Response):
            raise TypeError(f"{self.path}: a directly served endpoint must return a Response")
        await response(scope, receive, send)


def serve_directly(app: FastAPI, endpoints: Iterable[Endpoint]) -> list[DirectRoute]:
    """Puts a ``DirectRoute`` ahead of the app's routes for each route of ``endpoints``."""
    wanted = list(endpoints)
    routes = [route for route in api_routes(app.routes) if route.endpoint in wanted]
    if {route.endpoint for route in routes} != set(wanted) or len(routes) != len(wanted):
        raise ValueError("each endpoint served directly must be the endpoint of one route")
    direct = [DirectRoute(route) for route in routes]
    app.router.routes[:0] = direct
    _dispatch_ahead_of_the_router(app, direct)
    return direct


class _DirectDispatch:
    """Serves the direct routes ahead of ``app`` (the app's ExceptionMiddleware, around
    FastAPI's AsyncExitStackMiddleware and the router): a request they match is handled as
    those would handle it, its errors by ``handlers`` (the ExceptionMiddleware's: by class,
    and HTTPException's by status); any other goes on to ``app``. ``routes``: the direct
    routes, by path."""

    def __init__(
        self,
        app: ASGIApp,
        router: Router,
        routes: dict[str, list[DirectRoute]],
        handlers: tuple[ExceptionHandlers, StatusHandlers],
        lookup: _Lookup,
        is_async: Callable[[Any], bool],
    ) -> None:
        self.app = app
        self.router = router
        self.routes = routes
        self.handlers = handlers
        self.lookup = lookup  # Starlette's own: a handler by the exception's class
        self.is_async = is_async

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes.get(get_route_path(scope), ()):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    await self._serve(route, child_scope, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self, route: DirectRoute, child_scope: Scope, scope: Scope, receive: Receive, send: Send
    ) -> None:
        # What the ExceptionMiddleware and Router.app put in the scope (the router's
        # scope["route"] = route is replaced at once: the child scope names the documented
        # route).
        scope["starlette.exception_handlers"] = self.handlers
        if "router" not in scope:
            scope["router"] = self.router
        scope.update(child_scope)
        request = Request(scope, receive, send)
        started = False
        try:
            # DirectRoute.handle's steps.
            arguments: dict[str, Any] = {route.request_param: request}
            for name, dependency, takes in route.dependencies:
                arguments[name] = await dependency(**{takes: request})
            response = await route.endpoint(**arguments)
            if not isinstance(response, Response):
                raise TypeError(f"{route.path}: a directly served endpoint must return a Response")
            if type(response).__call__ is Response.__call__:
                # Starlette's wrapper notes the start message as it is sent; Response's own
                # __call__ sends it first, so from here on the response has started.
                started = True
                await response(scope, receive, send)
            else:  # one of its own (FileResponse checks its file first): noted as it is sent
                noting = _NotingSend(send)
                try:
                    await response(scope, receive, noting)
                finally:
                    started = noting.started
        except Exception as exc:
            # wrap_app_handling_exceptions' steps, with the same handlers.
            exception_handlers, status_handlers = self.handlers
            handler = None
            if isinstance(exc, HTTPException):
                handler = status_handlers.get(exc.status_code)
            if handler is None:
                handler = self.lookup(exception_handlers, exc)
            if handler is None:
                raise exc
            if started:
                message = "Caught handled exception, but response already started."
                raise RuntimeError(message) from exc
            if self.is_async(handler):
                answer = await handler(request, exc)
            else:
                answer = await run_in_threadpool(handler, request, exc)
            if answer is not None:
                await answer(scope, receive, send)
            exc.__traceback__ = None  # as Starlette: a reused exception's traceback grows


class _NotingSend:
    """``send``, noting the start message as Starlette's wrapper notes it (before sending)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


def _dispatch_ahead_of_the_router(app: FastAPI, direct: list[DirectRoute]) -> None:
    """Puts a ``_DirectDispatch`` around the app's ExceptionMiddleware (which wraps FastAPI's
    AsyncExitStackMiddleware around the router) when the app builds its middleware stack
    (once, lazily, at its first call: the lifespan's). A stack or a framework not of the
    shape the dispatch stands in for is left as built, with one warning: the direct routes
    are then served through the router, where they are first."""
    routes: dict[str, list[DirectRoute]] = {}
    for route in direct:
        routes.setdefault(route.path, []).append(route)
    build = app.build_middleware_stack

    def build_with_dispatch() -> ASGIApp:
        stack = build()
        lookup, is_async = _lookup_exception_handler, is_async_callable
        found = _exception_middleware(stack, app.router)
        if isinstance(found, str) or lookup is None or is_async is None:
            reason = found if isinstance(found, str) else "Starlette's helpers not found"
            log.warning("direct routes served through the router: %s", reason)
            return stack
        outer, handling = found
        handlers = (handling._exception_handlers, handling._status_handlers)
        outer.app = _DirectDispatch(handling, app.router, routes, handlers, lookup, is_async)
        return stack

    # The app's own method, wrapped for this app only.
    app.build_middleware_stack = build_with_dispatch  # type: ignore[method-assign]


def _exception_middleware(stack: ASGIApp, router: Router) -> tuple[Any, ExceptionMiddleware] | str:
    """The ExceptionMiddleware of a built stack and the layer around it (an ASGI middleware
    naming it ``app``), or why not. It must wrap AsyncExitStackMiddleware around ``router``
    (with no middleware of its own), and keep its handlers where Starlette keeps them: what
    the dispatch stands in for, and nothing else."""
    optional = {
        "starlette._exception_handler._lookup_exception_handler": _lookup_exception_handler,
        "starlette._utils.is_async_callable": is_async_callable,
        "fastapi.middleware.asyncexitstack.AsyncExitStackMiddleware": AsyncExitStackMiddleware,
    }
    missing = _missing + [name for name, value in optional.items() if value is None]
    if missing:
        return f"{', '.join(missing)} not found"
    outer: Any = None
    layer: Any = stack
    while layer is not None and not isinstance(layer, ExceptionMiddleware):
        outer, layer = layer, getattr(layer, "app", None)
    if outer is None or layer is None:
        return "no middleware around an ExceptionMiddleware"
    for name in ("_exception_handlers", "_status_handlers"):
        if type(getattr(layer, name, None)) is not dict:
            return f"the ExceptionMiddleware's {name} is not a dict"
    inner = getattr(layer, "app", None)
    if AsyncExitStackMiddleware is None or not isinstance(inner, AsyncExitStackMiddleware):
        return "the ExceptionMiddleware does not wrap FastAPI's AsyncExitStackMiddleware"
    if getattr(inner, "app", None) is not router:
        return "the AsyncExitStackMiddleware does not wrap the router"
    if getattr(router, "middleware_stack", None) != getattr(router, "app", None):
        return "the router has middleware of its own"
    return outer, layer


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute of an app, also those of included routers (FastAPI keeps those apart)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from api_routes(nested.routes)


# A dependency: the endpoint's parameter it fills, the callable, and its request parameter.
_Dependency = tuple[str, Callable[..., Awaitable[Any]], str]


def _request_only(dependant: Dependant, path: str) -> tuple[str, tuple[_Dependency, ...]]:
    """The endpoint's request parameter and its dependencies, if it needs nothing else."""
    if dependant.request_param_name is None or _takes_more(dependant):
        raise ValueError(f"{path}: only an endpoint of the request and its dependencies")
    dependencies: list[_Dependency] = []
    for dependency in dependant.dependencies:
        call, takes = dependency.call, dependency.request_param_name
        if (
            dependency.name is None
            or call is None
            or takes is None
            or dependency.dependencies
            or _takes_more(dependency)
            or not _is_coroutine_function(call)
        ):
            raise ValueError(f"{path}: dependency {dependency.name} needs more than the request")
        dependencies.append((dependency.name, call, takes))
    return dependant.request_param_name, tuple(dependencies)


def _takes_more(dependant: Dependant) -> bool:
    return bool(
        dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
    )


def _is_coroutine_function(call: Callable[..., Any]) -> bool:
    # A dependency with yield, or a plain def FastAPI would run in its thread pool, is not
    # served here: only ``async def`` functions and objects with an ``async def __call__``.
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)
