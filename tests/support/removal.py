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
    aside_dir = path.parent / _ASIDE
    aside = aside_dir / f"{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        aside_dir.mkdir(exist_ok=True)
        path.rename(aside)
        # posix_spawn leaves no Popen object behind to warn that its child still runs.
        os.posix_spawnp("rm", ["rm", "-rf", "--", str(aside)], dict(os.environ), setsid=True)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
