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

The direct routes are also found before the router: ``_DirectDispatch`` sits right inside
Starlette's ``ExceptionMiddleware`` (so the same handlers answer the same errors) and ahead
of FastAPI's ``AsyncExitStackMiddleware`` (an exit stack a request, for closing uploaded
files, which a direct route never opens) and the router (its scope checks and its walk of
the routes). It sets the scope as the router would (``router``, ``route`` and the route's
child scope) and calls the same ``DirectRoute.handle``; any other request goes on to the
router, where the direct routes stay first, as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[..., Awaitable[Any]]


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
    """Serves the direct routes ahead of ``app`` (FastAPI's AsyncExitStackMiddleware and the
    router): a request they match is handled as the router would handle it, the scope set
    alike; any other goes on to ``app``. ``routes``: the direct routes, by path."""

    def __init__(self, app: ASGIApp, router: Router, routes: dict[str, list[DirectRoute]]):
        self.app = app
        self.router = router
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes.get(get_route_path(scope), ()):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    # What Router.app does with the first route that matches in full (its
                    # scope["route"] = route is replaced at once: the child scope names the
                    # documented route).
                    if "router" not in scope:
                        scope["router"] = self.router
                    scope.update(child_scope)
                    # route.handle(scope, receive, send), inline: one coroutine frame less
                    # that each resumption of the request's task passes through.
                    request = Request(scope, receive, send)
                    arguments: dict[str, Any] = {route.request_param: request}
                    for name, dependency, takes in route.dependencies:
                        arguments[name] = await dependency(**{takes: request})
                    response = await route.endpoint(**arguments)
                    if not isinstance(response, Response):
                        raise TypeError(
                            f"{route.path}: a directly served endpoint must return a Response"
                        )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _dispatch_ahead_of_the_router(app: FastAPI, direct: list[DirectRoute]) -> None:
    """Puts a ``_DirectDispatch`` between the ExceptionMiddleware and what it wraps (FastAPI's
    AsyncExitStackMiddleware around the router) when the app builds its middleware stack.
    The stack is checked now: an app built otherwise is refused, not served differently."""
    routes: dict[str, list[DirectRoute]] = {}
    for route in direct:
        routes.setdefault(route.path, []).append(route)
    build = app.build_middleware_stack

    def build_with_dispatch() -> ASGIApp:
        stack = build()
        handling = _exception_middleware(stack, app.router)
        handling.app = _DirectDispatch(handling.app, app.router, routes)
        return stack

    _exception_middleware(build(), app.router)  # the stack's shape, checked once here
    # The app's own method, wrapped for this app only (Starlette calls it once, lazily).
    app.build_middleware_stack = build_with_dispatch  # type: ignore[method-assign]


def _exception_middleware(stack: ASGIApp, router: Router) -> ExceptionMiddleware:
    """The ExceptionMiddleware of a built stack, which must wrap AsyncExitStackMiddleware
    around ``router`` (with no middleware of its own): what the dispatch skips for a direct
    route, and nothing else."""
    layer: Any = stack
    while layer is not None and not isinstance(layer, ExceptionMiddleware):
        layer = getattr(layer, "app", None)
    inner = getattr(layer, "app", None)
    if (
        not isinstance(layer, ExceptionMiddleware)
        or not isinstance(inner, AsyncExitStackMiddleware)
        or inner.app is not router
        or router.middleware_stack != router.app
    ):
        raise ValueError("the direct routes need FastAPI's middleware stack as it was built")
    return layer


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
