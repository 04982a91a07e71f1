"""`devstack up`'s supervisor on small fake children: a part that dies is restarted and named, one
that keeps dying stops everything, and SIGTERM stops all cleanly. No Kafka, no services."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from devstack.process import StartedServers, pid_alive
from devstack.supervisor import (
    ProcessPart,
    RestartPolicy,
    ServerPart,
    Supervisor,
    describe_exit,
)
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
# Says its pid, then runs until stopped.
SLEEPER = (
    sys.executable,
    "-c",
    "import os, time; print('up', os.getpid(), flush=True); time.sleep(600)",
)
QUICK = RestartPolicy(first_delay=0.1, max_delay=0.4, max_restarts=3, window=60)
T = TypeVar("T")


class Console:
    """What the parts and the supervisor printed, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    async def wait_for(self, text: str, timeout: float = 30) -> None:
        async def seen() -> bool:
            return any(text in line for line in self.lines)

        try:
            await wait_until(seen, timeout=timeout, what=repr(text))
        except AssertionError as error:
            raise AssertionError(f"{error}; the console said:\n" + "\n".join(self.lines)) from None

    def pids(self, name: str) -> list[int]:
        """The pids that part ``name`` announced, oldest first."""
        prefix = f"{name} | up "
        return [int(line[len(prefix) :]) for line in self.lines if line.startswith(prefix)]


def sleeper(name: str, console: Console) -> ProcessPart:
    return ProcessPart(name, SLEEPER, echo=console, width=len(name), stop_timeout=10)


async def test_a_killed_part_is_restarted_and_the_console_names_it() -> None:
    console = Console()
    worker, other = sleeper("worker", console), sleeper("other", console)
    supervisor = Supervisor([worker, other], echo=console, policy=QUICK)
    running = asyncio.create_task(supervisor.run())
    try:
        await wait_until(lambda: _now(console.pids("worker")), what="worker up")
        await wait_until(lambda: _now(console.pids("other")), what="other up")
        [first] = console.pids("worker")
        os.kill(first, signal.SIGKILL)

        await console.wait_for("worker restarted")
        await wait_until(
            lambda: _now(len(console.pids("worker")) == 2), what="the new worker's output"
        )
        assert (
            "worker was killed by SIGKILL (9); restarting it in 0.1s "
            "(restart 1 of at most 3 within 60s)"
        ) in console.lines
        second = console.pids("worker")[-1]
        assert second != first
        assert pid_alive(second)
        assert supervisor.restarts == {"worker": 1, "other": 0}
        assert len(console.pids("other")) == 1  # the other part was left alone
    finally:
        supervisor.stop()
        code = await asyncio.wait_for(running, 30)
    assert code == 0
    assert supervisor.failure is None
    assert not any(pid_alive(pid) for pid in console.pids("worker") + console.pids("other"))


async def test_a_part_that_keeps_dying_stops_everything_and_is_named() -> None:
    console = Console()
    crasher = ProcessPart(
        "crasher", (sys.executable, "-c", "raise SystemExit(3)"), echo=console, width=7
    )
    steady = sleeper("steady", console)
    supervisor = Supervisor(
        [steady, crasher],
        echo=console,
        policy=RestartPolicy(first_delay=0.01, max_delay=0.05, max_restarts=2, window=60),
    )
    code = await asyncio.wait_for(supervisor.run(), 60)

    assert code == 1
    assert supervisor.failure is not None
    assert supervisor.failure == (
        "crasher exited with code 3: 3 exits within 60s, more than the 2 restarts allowed; "
        "giving up: stopping everything"
    )
    assert supervisor.failure in console.lines
    restarts = [line for line in console.lines if line.startswith("crasher exited with code 3;")]
    assert len(restarts) == 2  # restarted twice, then given up on
    assert restarts[0].endswith("(restart 1 of at most 2 within 60s)")
    [steady_pid] = console.pids("steady")
    assert not pid_alive(steady_pid), "the other parts are stopped too"


async def test_a_part_that_cannot_start_stops_what_did() -> None:
    console = Console()
    steady = sleeper("steady", console)
    missing = ProcessPart("missing", ("/nonexistent/demandscope-part",), echo=console)
    supervisor = Supervisor([steady, missing], echo=console, policy=QUICK)
    code = await asyncio.wait_for(supervisor.run(), 30)
    assert code == 1
    assert supervisor.failure is not None
    assert supervisor.failure.startswith("missing did not start:")
    assert steady.pid is not None
    assert not pid_alive(steady.pid)


async def test_a_detached_server_that_dies_is_restarted_with_its_exit_signal(
    tmp_path: Path,
) -> None:
    """The broker and Prometheus run detached with a pid file: a ServerPart polls the pid."""
    console = Console()
    servers = StartedServers()
    pid_file = tmp_path / "server.pid"
    current: list[int] = []

    def start() -> None:
        current.append(
            servers.spawn(SLEEPER, cwd=tmp_path, output=tmp_path / "out", pid_file=pid_file)
        )

    def running_pid() -> int | None:
        return current[-1] if current and servers.alive(current[-1]) else None

    def stop() -> None:
        pid = running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            servers.release(pid, timeout=10)

    server = ServerPart(
        "broker",
        start=start,
        stop=stop,
        running_pid=running_pid,
        exit_code=servers.exit_code,
        poll_interval=0.05,
    )
    supervisor = Supervisor([server], echo=console, policy=QUICK)
    running = asyncio.create_task(supervisor.run())
    try:
        await wait_until(lambda: _now(len(current) == 1), what="the server started")
        os.kill(current[0], signal.SIGKILL)
        await console.wait_for("broker restarted")
        assert any(line.startswith("broker was killed by SIGKILL (9);") for line in console.lines)
        assert len(current) == 2
        assert pid_alive(current[1])
    finally:
        supervisor.stop()
        assert await asyncio.wait_for(running, 30) == 0
    assert not pid_alive(current[-1])


def test_sigterm_stops_the_stack_and_its_parts(tmp_path: Path) -> None:
    """`devstack up`'s signal handling, on fake parts: SIGTERM stops all, exit code 0."""
    script = tmp_path / "stack.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys
            from devstack.stack import supervise
            from devstack.supervisor import ProcessPart

            sleeper = {SLEEPER!r}
            parts = [ProcessPart(n, sleeper, echo=print, width=2) for n in ("p1", "p2")]
            sys.exit(asyncio.run(supervise(parts, [], ready_timeout=30)))
            """
        )
    )
    stack = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=_collect, args=(stack, lines), daemon=True)
    reader.start()
    try:

        def up_lines() -> list[str]:
            if stack.poll() is not None:
                pytest.fail(f"the stack exited early:\n{''.join(lines)}")
            ups = [line for line in lines if " | up " in line]
            return ups if len(ups) == 2 and any("Press Ctrl-C" in x for x in lines) else []

        ups = _wait_sync(up_lines, timeout=60, what="both parts up")
        pids = [int(line.split()[-1]) for line in ups]
        assert all(pid_alive(pid) for pid in pids)
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
    output = "".join(lines)
    assert stack.returncode == 0, output
    assert "restarting" not in output, "a part stopped on purpose is not restarted"
    assert not any(pid_alive(pid) for pid in pids)


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-9) == "was killed by SIGKILL (9)"
    assert describe_exit(None) == "exited (exit code unknown)"


def test_the_restart_delay_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(first_delay=1, max_delay=5)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]


# ---------------------------------------------------------------------------------------------


async def _now(value: T) -> T:
    return value


def _wait_sync(probe: Callable[[], list[str]], *, timeout: float, what: str) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _collect(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
