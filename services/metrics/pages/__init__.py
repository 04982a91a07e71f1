"""The pages people read (issue 12): server-rendered HTML from the metrics service, which
holds the read model. ``routers()`` and ``install(app, settings)`` wire them into the app;
web.py is what any page (the review and audit queues too) builds on.

Both import the routes only when called: config.py imports ``pages.settings``, and the
routes import the API (and so the config), which would otherwise be a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

    from services.metrics.pages.settings import PagesSettings


def routers() -> list[APIRouter]:
    from services.metrics.pages import wiring

    return wiring.routers()


def install(app: FastAPI, settings: PagesSettings) -> None:
    from services.metrics.pages import wiring

    wiring.install(app, settings)
