"""Run directories owned by a process (a test session's broker and clusters), and reaping the
ones whose owner died without cleaning up (a killed pytest, a crashed benchmark).

``claim(run_dir)`` creates the directory with an ``owner.pid`` file naming this process.
``reap_leftovers(run_root)`` stops the broker and the PostgreSQL clusters of every claimed
directory under ``run_root`` whose owner no longer exists, and deletes the directory. A
directory of a live process is never touched, so concurrent sessions do not disturb each other;
one whose owner's pid was recycled is left for later (the cheap, safe side).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from devstack import kafka, postgres
from devstack.process import pid_exists, read_pid

__all__ = ["OWNER_FILE", "claim", "owner", "reap_leftovers"]

OWNER_FILE = "owner.pid"


def claim(run_dir: Path) -> Path:
    """Create ``run_dir`` (if needed) as this process's; returns it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / OWNER_FILE).write_text(f"{os.getpid()}\n")
    return run_dir


def owner(run_dir: Path) -> int | None:
    """The pid that claimed ``run_dir``; None when it was not claimed."""
    return read_pid(run_dir / OWNER_FILE)


def reap_leftovers(run_root: Path) -> list[str]:
    """Stop and remove what dead owners left under ``run_root``; a line per directory reaped."""
    reaped: list[str] = []
    if not run_root.is_dir():
        return reaped
    for run_dir in sorted(p for p in run_root.iterdir() if p.is_dir()):
        pid = owner(run_dir)
        if pid is None or pid == os.getpid() or pid_exists(pid):
            continue
        problems: list[str] = []
        try:
            kafka.stop(kafka.LocalKafkaConfig(root=run_root.parent, run_dir=run_dir))
        except kafka.LocalKafkaError as error:
            problems.append(str(error))
        try:
            postgres.stop(postgres.LocalPostgresConfig(root=run_root.parent, run_dir=run_dir))
        except postgres.LocalPostgresError as error:
            problems.append(str(error))
        if problems:
            reaped.append(f"left {run_dir} of dead process {pid}: {'; '.join(problems)}")
            continue
        shutil.rmtree(run_dir, ignore_errors=True)
        reaped.append(f"removed {run_dir}, left over by process {pid}")
    return reaped
