"""Wait-until with a deadline: tests never sleep a fixed time and hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    *,
    accept: Callable[[T], bool] = bool,
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
    show: Callable[[T], str] = repr,
) -> T:
    """Probe until ``accept`` takes the value; fail after ``timeout`` seconds, naming ``what``
    and the last value (as ``show`` writes it)."""
    deadline = time.monotonic() + timeout
    shown = "none (never probed)"
    while time.monotonic() < deadline:
        last = await probe()
        if accept(last):
            return last
        shown = show(last)
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {shown}")
