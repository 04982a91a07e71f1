"""Request latency by route template, reported by the skeleton's one request middleware
(``BodyLimit``'s ``observe``: no wrapper of its own around every request).

The histogram belongs to the running components (built in the lifespan, with their
registry), so it is found on the app the request came to; before the lifespan has run, or
after it ended, nothing is recorded.
"""

from __future__ import annotations

from starlette.types import Scope

from services.intake.components import IntakeComponents

_UNMATCHED = "unmatched"  # a path no route knows: one label, not one per path tried


def observe_request(scope: Scope, status: int, seconds: float) -> None:
    components = getattr(scope["app"].state, "components", None)
    if isinstance(components, IntakeComponents):
        template = getattr(scope.get("route"), "path", _UNMATCHED)
        metrics = components.metrics
        metrics.request_seconds.labels(template, str(status)).observe(seconds)
