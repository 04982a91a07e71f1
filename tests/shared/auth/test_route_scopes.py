"""Every route of every service demands an API key with a scope (issue 10, item 10), or, for a
page, a signed-in person with a role (issue 12), except the probes and /metrics, the API
documentation and the sign-in page. A new route cannot slip through: this walks the routes
of the apps as built, not a list kept by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pytest
from fastapi import Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from shared.auth.accounts import Role
from shared.auth.dependencies import require_person, role_required_by, scope_required_by
from shared.auth.keys import Scope

# The sign-in page must be reachable before signing in; it shows no data.
OPEN_PATHS = {"/healthz", "/readyz", "/metrics", "/pages/sign-in"}


def _apps() -> dict[str, Callable[[], FastAPI]]:
    from services.classifier.main import create_app as classifier
    from services.intake.main import create_app as intake
    from services.metrics.main import create_app as metrics

    return {"intake": intake, "classifier": classifier, "metrics": metrics}


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute, also those of included routers (FastAPI keeps those apart)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from _api_routes(nested.routes)


def _scopes(dependant: Dependant) -> Iterator[Scope | Role]:
    """The API-key scopes and the page roles a route demands."""
    for dependency in dependant.dependencies:
        scope = scope_required_by(dependency.call)
        if scope is not None:
            yield scope
        role = role_required_by(dependency.call)
        if role is not None:
            yield role
        yield from _scopes(dependency)


@pytest.mark.parametrize("service", ["intake", "classifier", "metrics"])
def test_every_route_demands_a_scoped_key(service: str) -> None:
    app = _apps()[service]()
    routes = list(_api_routes(app.routes))
    assert len(routes) > 3, "the walk found only the probes: it would prove nothing"
    unguarded = [
        f"{sorted(route.methods or ())} {route.path}"
        for route in routes
        if route.path not in OPEN_PATHS and not list(_scopes(route.dependant))
    ]
    assert unguarded == [], f"{service} routes without an API-key scope or a role: {unguarded}"


def test_the_walk_finds_a_route_without_a_scope() -> None:
    app = FastAPI()

    @app.get("/v1/leak")
    async def leak() -> dict[str, str]:
        return {}

    [route] = list(_api_routes(app.routes))
    assert list(_scopes(route.dependant)) == []


def test_a_page_route_is_guarded_by_its_role() -> None:
    app = FastAPI()
    guard = require_person(Role.REVIEWER)

    @app.post("/pages/thing", dependencies=[Depends(guard)])
    async def thing() -> dict[str, str]:
        return {}

    [route] = list(_api_routes(app.routes))
    assert list(_scopes(route.dependant)) == [Role.REVIEWER]


def test_the_metrics_pages_are_walked() -> None:
    from services.metrics.main import create_app

    paths = {route.path for route in _api_routes(create_app().routes)}
    assert {"/pages/overview", "/pages/changes", "/pages/failure-flow"} <= paths
