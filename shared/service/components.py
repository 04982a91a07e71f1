"""``ServiceComponents``: what a service's ``build`` opens, typed, in one object.

Each service subclasses it (``IntakeComponents``...) with its own clients and stores, and
lists its background tasks; the skeleton runs them under one ``Supervisor``. Routes get the
components through a typed dependency (``components_dependency``), never ``app.state.*``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request
from prometheus_client import CollectorRegistry

from shared.auth.store import ApiKeyStore
from shared.service.problems import ProblemError
from shared.service.readiness import ReadinessCheck
from shared.service.supervisor import BackgroundTask

C = TypeVar("C", bound="ServiceComponents")


@dataclass(kw_only=True)
class ServiceComponents:
    registry: CollectorRegistry
    key_store: ApiKeyStore
    background: list[BackgroundTask] = field(default_factory=list)

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        """Named checks /readyz runs besides the background tasks (databases, broker)."""
        return {}

    async def before_scrape(self) -> None:
        """Called by /metrics before it writes the registry: a service whose gauges are
        read from a shared store brings them up to date here (never raises)."""


def components_dependency(kind: type[C]) -> Callable[[Request], Awaitable[C]]:
    """A FastAPI dependency returning the running service's components, typed as ``kind``.

    A coroutine on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a
    thread hop on every request for what is an attribute lookup.
    """

    async def running_components(request: Request) -> C:
        components = getattr(request.app.state, "components", None)
        if not isinstance(components, kind):
            raise ProblemError(503, "Service unavailable", detail="The service is starting.")
        return components

    return running_components
