"""One supervisor for every background task of a service (consumer loop, producer upkeep,
publisher, ledger purge, model watch).

Why a supervisor rather than bare ``asyncio.create_task``: a bare task that raises dies with
no log until it is garbage-collected, and nothing tells the readiness probe. Here:

- every task runs in one ``asyncio.TaskGroup`` owned by the supervisor;
- a task that raises (any ``Exception``), or returns although it should run for ever, is
  logged with its traceback and counted, and readiness turns false *at once*;
- by its policy it is then restarted with exponential back-off (``RESTART``), or the process
  is declared dead (``STOP``): liveness turns false and ``on_fatal`` asks the server to exit,
  so that Kubernetes (or ``make run``) starts a fresh one;
- a ``RESTART`` task that fails ``max_failures`` times in a row without ever running
  ``healthy_after_s`` is treated like ``STOP``: it cannot recover by itself;
- on stop, each task's graceful ``stop`` hook is called (finish the batch in hand), then
  whatever is still running after ``shutdown_timeout_s`` is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)


class Policy(enum.StrEnum):
    RESTART = "restart"  # log, back off, run it again
    STOP = "stop"  # log, declare the process dead


class TaskState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    BACKING_OFF = "backing off"
    FINISHED = "finished"  # a one-shot task that completed, or any task after stop
    FAILED = "failed"  # died for good: the process is not live


@dataclass(frozen=True)
class BackgroundTask:
    """A coroutine the service runs for its whole life (or once, with ``forever=False``)."""

    name: str
    run: Callable[[], Awaitable[None]]
    policy: Policy = Policy.RESTART
    # Asks ``run`` to return soon (finish the work in hand); without it, stop cancels.
    stop: Callable[[], None] | None = None
    forever: bool = True
    max_failures: int | None = None


@dataclass
class _Tracked:
    task: BackgroundTask
    state: TaskState = TaskState.PENDING
    consecutive_failures: int = 0
    last_error: str | None = None
    handle: asyncio.Task[None] | None = None
    stop_requested: bool = False


@dataclass
class SupervisorMetrics:
    failures: Counter
    up: Gauge

    @classmethod
    def register(cls, registry: CollectorRegistry) -> SupervisorMetrics:
        return cls(
            failures=Counter(
                "demandscope_background_task_failures_total",
                "Background tasks that raised or ended unexpectedly.",
                ["task"],
                registry=registry,
            ),
            up=Gauge(
                "demandscope_background_task_up",
                "1 while a background task runs, 0 while it backs off or has failed.",
                ["task"],
                registry=registry,
            ),
        )


@dataclass
class Supervisor:
    service: str
    metrics: SupervisorMetrics | None = None
    on_fatal: Callable[[], None] | None = None
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    healthy_after_s: float = 30.0
    shutdown_timeout_s: float = 20.0
    _tracked: list[_Tracked] = field(default_factory=list)
    _main: asyncio.Task[None] | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _fatal: str | None = None

    def add(self, task: BackgroundTask) -> None:
        if self._main is not None:
            raise RuntimeError("add background tasks before the supervisor starts")
        if any(t.task.name == task.name for t in self._tracked):
            raise ValueError(f"two background tasks named {task.name!r}")
        self._tracked.append(_Tracked(task))

    async def __aenter__(self) -> Supervisor:
        self._main = asyncio.create_task(self._run_all(), name=f"{self.service}-supervisor")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- probes ----------------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Every task that should be running is running (none backing off or failed)."""
        if self._main is None or self._stopping.is_set() or self._fatal is not None:
            return False
        return all(t.state in (TaskState.RUNNING, TaskState.FINISHED) for t in self._tracked)

    def is_live(self) -> bool:
        """False once a task has died for good: only a fresh process can recover."""
        return self._fatal is None

    def status(self) -> dict[str, str]:
        return {t.task.name: t.state.value for t in self._tracked}

    @property
    def fatal_reason(self) -> str | None:
        return self._fatal

    # -- running ---------------------------------------------------------------------------

    async def _run_all(self) -> None:
        async with asyncio.TaskGroup() as group:
            for tracked in self._tracked:
                tracked.handle = group.create_task(
                    self._guard(tracked), name=f"{self.service}:{tracked.task.name}"
                )

    async def _guard(self, tracked: _Tracked) -> None:
        task = tracked.task
        delay = self.initial_backoff_s
        while not self._stopping.is_set():
            self._set_state(tracked, TaskState.RUNNING)
            started = time.monotonic()
            error: Exception | None = None
            try:
                await task.run()
            except asyncio.CancelledError:
                self._set_state(tracked, TaskState.FINISHED)
                raise
            except Exception as raised:
                error = raised
            if self._stopping.is_set() or (error is None and tracked.stop_requested):
                break
            if error is None and not task.forever:
                self._set_state(tracked, TaskState.FINISHED)
                return
            # Not ready from this very moment, before anything else can run.
            self._set_state(tracked, TaskState.BACKING_OFF)
            if time.monotonic() - started >= self.healthy_after_s:
                tracked.consecutive_failures = 0
                delay = self.initial_backoff_s
            tracked.consecutive_failures += 1
            tracked.last_error = repr(error) if error is not None else "returned unexpectedly"
            if self.metrics is not None:
                self.metrics.failures.labels(task.name).inc()
            if error is not None:
                log.error(
                    "background task %s of %s died: %r",
                    task.name,
                    self.service,
                    error,
                    exc_info=error,
                )
            else:
                log.error("background task %s of %s ended unexpectedly", task.name, self.service)
            gave_up = (
                task.max_failures is not None and tracked.consecutive_failures >= task.max_failures
            )
            if task.policy is Policy.STOP or gave_up:
                self._set_state(tracked, TaskState.FAILED)
                self._declare_fatal(
                    f"{task.name}: {tracked.last_error}"
                    + (f" ({tracked.consecutive_failures} failures in a row)" if gave_up else "")
                )
                return
            log.warning("restarting %s of %s in %.1fs", task.name, self.service, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self.max_backoff_s)
        self._set_state(tracked, TaskState.FINISHED)

    def _set_state(self, tracked: _Tracked, state: TaskState) -> None:
        tracked.state = state
        if self.metrics is not None:
            self.metrics.up.labels(tracked.task.name).set(1 if state is TaskState.RUNNING else 0)

    def _declare_fatal(self, reason: str) -> None:
        if self._fatal is not None:
            return
        self._fatal = reason
        log.critical("%s cannot recover (%s); asking the process to stop", self.service, reason)
        if self.on_fatal is not None:
            try:
                self.on_fatal()
            except Exception:
                log.exception("the fatal-error hook of %s failed", self.service)

    def stop_task(self, name: str) -> None:
        """Ask one task to finish (its stop hook, else cancel); its return then counts as done."""
        [tracked] = [t for t in self._tracked if t.task.name == name]
        tracked.stop_requested = True
        if tracked.task.stop is not None:
            tracked.task.stop()
        elif tracked.handle is not None:
            tracked.handle.cancel()

    async def stop(self) -> None:
        """Ask every task to finish, wait ``shutdown_timeout_s``, then cancel the rest."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for tracked in self._tracked:
            if tracked.state is not TaskState.RUNNING:
                continue
            if tracked.task.stop is None:
                # Nothing in hand to finish (a periodic loop): cancel it now.
                if tracked.handle is not None:
                    tracked.handle.cancel()
                continue
            try:
                tracked.task.stop()
            except Exception:
                log.exception("stopping %s of %s failed", tracked.task.name, self.service)
                if tracked.handle is not None:
                    tracked.handle.cancel()
        main = self._main
        if main is None:
            return
        done, _ = await asyncio.wait({main}, timeout=self.shutdown_timeout_s)
        if not done:
            log.warning(
                "background tasks of %s still running after %.0fs: cancelling %s",
                self.service,
                self.shutdown_timeout_s,
                [t.task.name for t in self._tracked if t.state is TaskState.RUNNING],
            )
            main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main
