"""The process entrypoint of a service: logging, uvicorn with bounded connections and
timeouts, and an exit code that says whether the service died.

Interpreter tuning and process-wide settings belong here, never in ``create_app``.
"""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn
from fastapi import FastAPI

from shared.observability.logging import configure_logging
from shared.service.settings import ServiceSettings

log = logging.getLogger(__name__)

EXIT_FATAL = 70  # EX_SOFTWARE: a background task died for good


def instance_name(instance_id: str | None, port: int) -> str | None:
    """A consumer group member's static name (KIP-345) for a served process: the configured
    one (empty: none), else <host name>:<port>. The port this process binds makes the name
    unique on its host, and a restart of the same instance (the same container or unit)
    finds the same name again."""
    if instance_id is None and port:
        return f"{socket.gethostname()}:{port}"
    return instance_id


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run ``app`` until SIGINT/SIGTERM (clean stop, exit 0) or a fatal error (exit 70)."""
    configure_logging(settings.log_level, json=settings.json_logs)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # A stop finishes the batch in hand (shutdown_timeout_s) and flushes producers.
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s) + 5,
        timeout_keep_alive=settings.http_keep_alive_s,
        limit_concurrency=settings.http_limit_concurrency,
    )
    server = uvicorn.Server(config)
    died = False

    def on_fatal() -> None:
        nonlocal died
        died = True
        server.should_exit = True

    app.state.on_fatal = on_fatal
    server.run()
    if died:
        log.critical("stopped because a background task died; exiting with %d", EXIT_FATAL)
        sys.exit(EXIT_FATAL)
