"""Keep the local stack running: restart a part that dies, give up on one that keeps dying.

A part is anything that can be started, waited for and stopped (``Part``): a child process
whose output is relayed with its name in front (``ProcessPart``: the three services), or a
server that runs detached with a pid file (``ServerPart``: the Kafka broker, Prometheus).

``Supervisor.run`` starts the parts in order and watches them. A part that exits while the
stack is not stopping is restarted after a back-off (``RestartPolicy``: the delay doubles with
each restart inside the window), and the console says which part, how it ended and when it
comes back. A part that exits more than ``max_restarts`` times within ``window`` seconds stops
everything, with a message naming it (exit code 1). ``stop`` (Ctrl-C, SIGTERM) stops every part
in reverse order (exit code 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Part",
    "ProcessPart",
    "RestartPolicy",
    "ServerPart",
    "Supervisor",
    "describe_exit",
]

Echo = Callable[[str], None]


class Part(Protocol):
    name: str

    async def start(self) -> None:
        """Start it (return once it runs; readiness is the caller's business)."""

    async def wait(self) -> int | None:
        """Return when it has exited: its exit code (negative: the signal), None if unknown."""

    async def stop(self) -> None:
        """Stop it if it runs (SIGTERM, then SIGKILL) and wait until it has."""


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (exit code unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} ({-code})"
    return f"exited with code {code}"


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 1.0  # seconds before the first restart; doubles with each one after
    max_delay: float = 30.0
    max_restarts: int = 5  # restarts allowed within `window`; one more exit gives up
    window: float = 120.0

    def delay(self, restarts_in_window: int) -> float:
        doublings = max(restarts_in_window - 1, 0)
        return min(self.first_delay * 2.0**doublings, self.max_delay)


# ---------------------------------------------------------------------------------------------
# parts
# ---------------------------------------------------------------------------------------------


class ProcessPart:
    """A child process in its own session, its output relayed line by line as ``name | line``.

    Its own session: a Ctrl-C in the terminal reaches the supervisor only, which stops the
    parts itself (otherwise a child ended by the terminal's SIGINT would look like a crash).
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        echo: Echo,
        width: int = 10,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stop_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.command = tuple(command)
        self._echo = echo
        self._width = width
        self._cwd = cwd
        self._env = env
        self._stop_timeout = stop_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._relay: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self._cwd,
            env=self._env,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        self._relay = asyncio.create_task(self._relay_lines(self._process.stdout))

    async def _relay_lines(self, stream: asyncio.StreamReader) -> None:
        with contextlib.suppress(ValueError):  # a line longer than the stream's limit
            while line := await stream.readline():
                text = line.decode(errors="replace").rstrip("\n")
                self._echo(f"{self.name:<{self._width}} | {text}")

    async def wait(self) -> int | None:
        assert self._process is not None, "wait() before start()"
        code = await self._process.wait()
        if self._relay is not None:
            await asyncio.gather(self._relay, return_exceptions=True)
        return code

    async def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._stop_timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._relay is not None:
            await asyncio.gather(self._relay, return_exceptions=True)


class ServerPart:
    """A server that runs detached with a pid file (the broker, Prometheus), driven by the
    blocking start/stop of its devstack module; its exit is noticed by polling its pid."""

    def __init__(
        self,
        name: str,
        *,
        start: Callable[[], object],
        stop: Callable[[], object],
        running_pid: Callable[[], int | None],
        exit_code: Callable[[int], int | None],
        poll_interval: float = 0.5,
    ) -> None:
        self.name = name
        self._start, self._stop = start, stop
        self._running_pid, self._exit_code = running_pid, exit_code
        self._poll_interval = poll_interval
        self._pid: int | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self._start)
        self._pid = self._running_pid()

    async def wait(self) -> int | None:
        while (pid := self._running_pid()) is not None:
            self._pid = pid
            await asyncio.sleep(self._poll_interval)
        return None if self._pid is None else self._exit_code(self._pid)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)


# ---------------------------------------------------------------------------------------------
# the supervisor
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Exit:
    code: int | None


class Supervisor:
    def __init__(
        self,
        parts: Sequence[Part],
        *,
        echo: Echo,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``echo`` prints the supervisor's messages: a part exited, is restarted, it gives up."""
        self.parts = list(parts)
        self.policy = policy or RestartPolicy()
        self._echo = echo
        self._clock = clock
        self._stopping = asyncio.Event()
        self._failure: str | None = None
        self.restarts: dict[str, int] = {part.name: 0 for part in self.parts}

    @property
    def failure(self) -> str | None:
        """Why the supervisor gave up; None while it has not."""
        return self._failure

    def stop(self) -> None:
        """Stop every part (signal handlers call this)."""
        if not self._stopping.is_set():
            self._echo("stopping everything ...")
        self._stopping.set()

    def fail(self, message: str) -> None:
        """Stop every part because of ``message`` (run() then returns 1)."""
        if self._failure is None:
            self._failure = message
            self._echo(message)
        self._stopping.set()

    async def run(self, on_started: Callable[[], Coroutine[Any, Any, None]] | None = None) -> int:
        """Start the parts, keep them running until stop() or fail(); 0, or 1 after a failure."""
        started: list[Part] = []
        try:
            for part in self.parts:
                if self._stopping.is_set():
                    break
                try:
                    await part.start()
                except Exception as error:  # its own error type; the message says why
                    self.fail(f"{part.name} did not start: {error}; stopping everything")
                    break
                started.append(part)
            if not self._stopping.is_set():
                watchers = [asyncio.create_task(self._watch(part)) for part in started]
                extra: list[asyncio.Task[None]] = []
                if on_started is not None:
                    extra.append(asyncio.create_task(on_started()))
                await self._stopping.wait()
                for task in extra:
                    task.cancel()
                # A watcher in the middle of a restart finishes it, so that nothing is left
                # running that the stop below does not know about.
                await asyncio.gather(*watchers, *extra, return_exceptions=True)
        finally:
            for part in reversed(started):
                try:
                    await part.stop()
                except Exception as error:
                    self._echo(f"could not stop {part.name}: {error}")
        return 0 if self._failure is None else 1

    async def _exit_or_stop(self, part: Part) -> _Exit | None:
        """How the part exited, or None once the stack is stopping."""
        exited = asyncio.create_task(part.wait())
        stopping = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if exited not in done:
            exited.cancel()
            await asyncio.gather(exited, return_exceptions=True)
            return None
        stopping.cancel()
        return _Exit(exited.result())

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; False when the stack started stopping meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return not self._stopping.is_set()

    async def _watch(self, part: Part) -> None:
        exits: deque[float] = deque()
        policy = self.policy
        while True:
            ended = await self._exit_or_stop(part)
            if ended is None or self._stopping.is_set():
                return
            how = describe_exit(ended.code)
            while True:  # until it is started again
                now = self._clock()
                exits.append(now)
                while exits and now - exits[0] > policy.window:
                    exits.popleft()
                if len(exits) > policy.max_restarts:
                    self.fail(
                        f"{part.name} {how}: {len(exits)} exits within {policy.window:.0f}s, "
                        f"more than the {policy.max_restarts} restarts allowed; giving up: "
                        "stopping everything"
                    )
                    return
                delay = policy.delay(len(exits))
                self._echo(
                    f"{part.name} {how}; restarting it in {delay:.1f}s "
                    f"(restart {len(exits)} of at most {policy.max_restarts} "
                    f"within {policy.window:.0f}s)"
                )
                if not await self._pause(delay):
                    return
                try:
                    await part.start()
                except Exception as error:
                    how = f"did not start again ({error})"
                    continue
                self.restarts[part.name] += 1
                self._echo(f"{part.name} restarted")
                break
