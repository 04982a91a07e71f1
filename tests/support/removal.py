"""Removing a test broker's data without making the session wait for it."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

# Beside the run directories, but not one of them: devstack.leftovers reaps only directories
# that name an owner process, so it leaves this one to the removals under way.
_ASIDE = ".removing"


def remove_in_background(path: Path) -> None:
    """Move ``path`` aside and delete it in a process of its own that nobody waits for.

    A session's broker holds thousands of partition directories by the end (about 20 s to
    delete on this machine); the next session does not need them gone, only out of its way.
    """
    if not path.exists():
        return
    aside = path.parent / _ASIDE / f"{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        aside.parent.mkdir(exist_ok=True)
        path.rename(aside)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        _spawn_rm(aside)
    except OSError:
        shutil.rmtree(aside, ignore_errors=True)


def resume_removals(run_root: Path) -> None:
    """Start again every removal a stopped machine or a killed ``rm`` left unfinished (two
    ``rm`` at one directory only make each other's work shorter)."""
    aside = run_root / _ASIDE
    if aside.is_dir():
        for leftover in aside.iterdir():
            _spawn_rm(leftover)


def _spawn_rm(path: Path) -> None:
    # posix_spawn leaves no Popen object behind to warn that its child still runs; the
    # descriptors go to /dev/null so that no pipe reading this session waits for the rm.
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    os.posix_spawnp(
        "rm", ["rm", "-rf", "--", str(path)], dict(os.environ), file_actions=quiet, setsid=True
    )
