"""The session's broker data removed in the background: out of the way at once, then gone."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.removal import remove_in_background, resume_removals
from tests.support.waiting import wait_until


def _tree(root: Path, files: int = 200) -> Path:
    for i in range(files):
        folder = root / f"topic-{i % 20}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:08d}.log").write_bytes(b"x" * 64)
    return root


async def _emptied(folder: Path) -> list[Path]:
    return await asyncio.to_thread(lambda: sorted(folder.iterdir()) if folder.exists() else [])


async def test_a_removed_directory_is_out_of_the_way_at_once_and_then_gone(
    tmp_path: Path,
) -> None:
    data = _tree(tmp_path / ".run" / "test-kafka-1")

    remove_in_background(data)

    assert not data.exists()  # its name is free for the next session straight away
    await wait_until(
        lambda: _emptied(tmp_path / ".run" / ".removing"),
        accept=lambda left: not left,
        what="the moved directory deleted",
    )


async def test_a_removal_left_unfinished_is_resumed(tmp_path: Path) -> None:
    aside = tmp_path / ".run" / ".removing"
    _tree(aside / "test-kafka-2-0123abcd")

    resume_removals(tmp_path / ".run")

    await wait_until(lambda: _emptied(aside), accept=lambda left: not left, what="resumed")


def test_the_background_removal_holds_no_pipe_of_the_session_open(tmp_path: Path) -> None:
    # A pipe reading the session (pytest -s | tee) must end when the session does, not when
    # the rm does. The rm is swapped for a long sleep spawned the same way: were its
    # descriptors the session's, the pipe would stay open as long as the sleep.
    data = _tree(tmp_path / "data", files=20)
    script = (
        "import os\n"
        "from pathlib import Path\n"
        "import tests.support.removal as removal\n"
        "spawn = os.posix_spawnp\n"
        "def sleeping(_file, _argv, env, **kwargs):\n"
        "    pid = spawn('sleep', ['sleep', '120'], env, **kwargs)\n"
        "    print(pid, flush=True)\n"
        "    return pid\n"
        "removal.os.posix_spawnp = sleeping\n"
        f"removal.remove_in_background(Path({str(data)!r}))\n"
    )
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE)
    assert child.stdout is not None
    sleeper = int(child.stdout.readline())
    try:
        assert child.wait(timeout=60) == 0
        readable, _, _ = select.select([child.stdout], [], [], 10)
        assert readable, "the spawned process holds the session's pipe open"
        assert child.stdout.read() == b""
    finally:
        os.kill(sleeper, signal.SIGKILL)
        child.stdout.close()
