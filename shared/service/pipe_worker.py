"""A service's helper process on pipes (the metrics decoding worker, the classifier's model
worker): its command, start and end, and the frames both sides read and write. Each message
is its length, then its pickle. What a worker does and how its answers are checked stay with
the worker (services/metrics/live_decode.py says why a child on pipes and not a pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import struct
import sys
from typing import IO, Any

FRAME = struct.Struct("!I")  # each message: its length, then its pickle
# The answers are read as they come (the reader task), not only when awaited: an answer
# never waits in the pipe for the one before it to be written.
READ_LIMIT = 64 * 1024 * 1024
END_WAIT_S = 5.0  # a worker that has not ended this long after end of file is killed


# -- the service's side ---------------------------------------------------------------------


def command(module: str) -> list[str]:
    """``python -P -c`` running ``module``'s ``_serve`` from the service's own sys.path,
    absolute ('' is the service's working directory), so the worker runs the service's code
    wherever it starts; -P: its working directory is not put first. No PYTHONPATH prepended
    (it would come before the stdlib)."""
    path = [p or os.getcwd() for p in sys.path]
    code = f"import sys; sys.path[:] = {path!r}; from {module} import _serve; _serve()"
    return [sys.executable, "-P", "-c", code]


async def spawn(argv: list[str]) -> asyncio.subprocess.Process:
    """The worker, on pipes (stdin: requests, stdout: answers); OSError if it cannot start."""
    return await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=READ_LIMIT
    )


def send(process: asyncio.subprocess.Process, message: Any) -> None:
    """One message to the worker: buffered by the transport, never awaited (drain), so the
    answers are read meanwhile."""
    assert process.stdin is not None
    body = pickle.dumps(message, protocol=5)
    process.stdin.write(FRAME.pack(len(body)) + body)


async def receive(stdout: asyncio.StreamReader) -> Any:
    """The worker's next message (IncompleteReadError at its end)."""
    (size,) = FRAME.unpack(await stdout.readexactly(FRAME.size))
    return pickle.loads(await stdout.readexactly(size))


async def end(process: asyncio.subprocess.Process, *, kill: bool = False) -> None:
    """End the worker: end of file on its stdin, then a kill if it lingers; ``kill``: at
    once (one still in its imports has been sent nothing and reads nothing yet)."""
    if kill and process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), END_WAIT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


# -- the worker's side ----------------------------------------------------------------------


def worker_pipes() -> tuple[IO[bytes], IO[bytes]]:
    """The worker's requests and answers. Ctrl-C, or a SIGTERM to the whole group
    (systemd's control-group kill), reaches it too: it ignores both and ends on end of file,
    after its service. Anything printed goes to stderr, never into the answers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return sys.stdin.buffer, answers


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The next request's pickle; None at end of file (the service has gone)."""
    head = stream.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    (size,) = FRAME.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: IO[bytes], body: bytes) -> None:
    """One answer (a pickle made by the caller, who may count its cost), flushed."""
    stream.write(FRAME.pack(len(body)) + body)
    stream.flush()
