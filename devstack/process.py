"""Process plumbing shared by devstack's local servers (Kafka, Prometheus, PostgreSQL).

Pid files, liveness checks that see through zombies and recycled pids, port checks, startup
waits with a deadline, SIGTERM-then-SIGKILL and log tails. Each server module keeps its own
error type and messages; the helpers here report outcomes, not failures. Stdlib only,
environment-variable free.

Why not mirakuru: see docs/development.md. In short, ``devstack kafka start`` leaves a broker
running after the command exits and a later ``devstack kafka stop`` finds it by its pid file;
mirakuru's executors belong to the interpreter that started them, and its exit hook kills them.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "StartedServers",
    "StartupOutcome",
    "command_line",
    "pick_free_port",
    "pick_free_ports",
    "pid_alive",
    "pid_exists",
    "port_is_free",
    "read_pid",
    "reap_if_zombie",
    "run_to_completion",
    "tail",
    "terminate",
    "wait_for_startup",
    "wait_while",
]


# ---------------------------------------------------------------------------------------------
# pids
# ---------------------------------------------------------------------------------------------


def read_pid(pid_file: Path) -> int | None:
    """The pid on the first line of ``pid_file``; None when it is missing or garbled."""
    try:
        return int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_exists(pid: int) -> bool:
    """A process with this pid exists (zombies and other users' processes included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_if_zombie(pid: int) -> bool:
    """True when ``pid`` is a zombie (reaped if it is our child); False when not or unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name in parentheses, which may itself contain ") ".
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else ""
    if state != "Z":
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return True


def pid_alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie has, and is reaped if it is ours)."""
    return pid_exists(pid) and not reap_if_zombie(pid)


def command_line(pid: int) -> list[str] | None:
    """The arguments ``pid`` was started with; None without procfs or once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [arg.decode(errors="replace") for arg in raw.split(b"\0")]


class StartedServers:
    """The servers this interpreter started, so that their liveness comes from ``poll()``.

    Right after ``Popen`` returns, ``/proc/<pid>/cmdline`` can still be empty (the exec is not
    complete), and an exited child must be waited for or it stays a zombie.
    """

    def __init__(self) -> None:
        self._by_pid: dict[int, subprocess.Popen[bytes]] = {}
        self._exit_codes: dict[int, int] = {}

    def spawn(
        self, cmd: Sequence[str], *, cwd: Path, output: Path, pid_file: Path, banner: str = ""
    ) -> int:
        """Start ``cmd`` detached in its own session (pgid == pid), appending its output."""
        with open(output, "ab") as out:
            if banner:
                out.write(banner.encode())
                out.flush()
            process = subprocess.Popen(
                cmd,
                cwd=str(cwd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self._by_pid[process.pid] = process
        self._exit_codes.pop(process.pid, None)
        pid_file.write_text(f"{process.pid}\n")
        return process.pid

    def alive(self, pid: int) -> bool | None:
        """Whether our child ``pid`` still runs; None when this interpreter did not start it."""
        child = self._by_pid.get(pid)
        if child is None:
            return None
        code = child.poll()
        if code is None:
            return True
        del self._by_pid[pid]
        self._exit_codes[pid] = code
        return False

    def exit_code(self, pid: int) -> int | None:
        """How our child ``pid`` exited (negative: the signal); None while it runs or unknown."""
        self.alive(pid)
        return self._exit_codes.get(pid)

    def release(self, pid: int, timeout: float | None = None) -> None:
        """Forget ``pid``, waiting up to ``timeout`` seconds (None: for ever) to reap it."""
        child = self._by_pid.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=timeout)


def run_to_completion(
    cmd: Sequence[str],
    *,
    timeout: float,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a tool without input, its stdout and stderr together as text; any exit code.

    Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds.
    """
    return subprocess.run(
        cmd,
        cwd=None if cwd is None else str(cwd),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
        start_new_session=new_session,
    )


# ---------------------------------------------------------------------------------------------
# ports
# ---------------------------------------------------------------------------------------------


def port_is_free(host: str, port: int) -> bool:
    """Nothing listens on host:port (a port in TIME_WAIT counts as free, as for a server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_free_port(host: str) -> int:
    """A port on ``host`` that is free right now (the kernel's choice)."""
    return pick_free_ports(host, 1)[0]


def pick_free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports on ``host`` that are free right now.

    All the sockets stay bound until every port is chosen, so the kernel cannot hand out the
    same port twice (as successive single picks may).
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


# ---------------------------------------------------------------------------------------------
# waiting, stopping
# ---------------------------------------------------------------------------------------------


class StartupOutcome(enum.Enum):
    READY = "ready"
    EXITED = "exited"
    TIMED_OUT = "timed out"


def wait_for_startup(
    *, running: Callable[[], bool], ready: Callable[[], bool], timeout: float
) -> StartupOutcome:
    """Poll until the server is ready, has exited or ``timeout`` seconds have passed.

    ``running`` is asked first: a server that exited is never taken as ready because something
    else answers on its address.
    """
    deadline = time.monotonic() + timeout
    while True:
        if not running():
            return StartupOutcome.EXITED
        if ready():
            return StartupOutcome.READY
        if time.monotonic() >= deadline:
            return StartupOutcome.TIMED_OUT
        time.sleep(0.2)


def wait_while(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it is false or ``timeout`` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def _send(pid: int, sig: signal.Signals, *, whole_group: bool) -> None:
    if not whole_group:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            os.killpg(pid, sig)  # started with start_new_session: pgid == pid
        except ProcessLookupError:
            os.kill(pid, sig)


def terminate(pid: int, running: Callable[[], bool], timeout: float, *, whole_group: bool) -> bool:
    """SIGTERM ``pid`` (or its process group), SIGKILL it if still running after ``timeout``.

    Returns True when SIGKILL had to be sent. A process that is already gone is fine; with
    ``whole_group`` one that may not be signalled is passed over too.
    """
    _send(pid, signal.SIGTERM, whole_group=whole_group)
    if not wait_while(running, timeout):
        return False
    _send(pid, signal.SIGKILL, whole_group=whole_group)
    return True


# ---------------------------------------------------------------------------------------------
# logs
# ---------------------------------------------------------------------------------------------


def tail(path: Path, lines: int = 30, *, unreadable: str = "") -> str:
    """The last ``lines`` lines of a log file, or ``unreadable`` when it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return unreadable
