"""What code an external check measured: the commit, and whether the code it imports differs.

Printed in the header of every external check (``external_twcs``, ``external_complaints``,
``external_banking77``) so that a figure names the code behind it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def code_state(where: Path | None = None) -> str:
    """The commit measured, and whether the code the run imports differs from it: the
    classifier's files and ``bench/`` (the scripts, ``judgement``'s variants). Notes (``*.md``,
    e.g. EVALUATION.md under services/classifier) do not count. ``where``: the ``bench``
    directory of the checkout (this one by default). Read it at the start of a run: the code
    that was imported, not what the tree holds when the run ends."""
    where = BENCH if where is None else where

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    changed = git(
        "status", "--porcelain", "--", "../services/classifier", ".", ":(top,exclude)*.md"
    )
    if head is None or changed is None:  # not a git checkout, no commit, or no git
        return "commit unknown, code not checked (not a git checkout)"
    return f"commit {head}, services/classifier and bench " + (
        "as committed" if not changed else f"CHANGED ({len(changed.splitlines())} files)"
    )
