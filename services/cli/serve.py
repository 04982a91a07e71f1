"""Serve one service's app with uvicorn, JSON logs and the settings it was built with."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from shared.observability.logging import configure_logging


def serve(app: FastAPI, *, host: str, port: int, log_level: str, json_logs: bool) -> None:
    configure_logging(log_level, json=json_logs)
    # uvicorn handles SIGINT/SIGTERM: the lifespan's finally stops consumers and flushes producers.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )
