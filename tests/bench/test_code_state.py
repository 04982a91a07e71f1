"""bench/code_state.py: the code an external check names in its header."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.code_state import code_state


def test_code_changes_in_the_classifier_and_bench_count_but_notes_do_not(
    tmp_path: Path,
) -> None:
    bench = tmp_path / "bench"
    assert code_state(bench.parent) == ("commit unknown, code not checked (not a git checkout)")

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    files = {
        "bench/external_banking77.py": "x = 1\n",
        "services/classifier/model.py": "y = 1\n",
        "services/classifier/EVALUATION.md": "notes\n",
        "services/other.py": "z = 1\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git("init", "-q")
    assert code_state(bench) == "commit unknown, code not checked (not a git checkout)"
    git("add", ".")
    git("commit", "-q", "-m", "start")
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.strip()
    committed = f"commit {head}, services/classifier and bench as committed"

    (tmp_path / "services/classifier/EVALUATION.md").write_text("more notes\n")
    (tmp_path / "services/other.py").write_text("z = 2\n")
    assert code_state(bench) == committed  # notes and other services do not count
    (tmp_path / "bench/external_banking77.py").write_text("x = 2\n")
    (tmp_path / "services/classifier/model.py").write_text("y = 2\n")
    assert code_state(bench) == (f"commit {head}, services/classifier and bench CHANGED (2 files)")


def test_git_refusing_is_an_unknown_state_not_a_changed_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # git's refusal ("not a git repository") is not a changed file.
    def refused(args: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 128, "", "fatal: not a git repository")

    monkeypatch.setattr(subprocess, "run", refused)
    assert code_state() == ("commit unknown, code not checked (not a git checkout)")
