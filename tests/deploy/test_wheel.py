"""The wheel ships the services and the shared library, not the development stack.

Built offline with hatchling (the project's build backend, a dev dependency) in a few seconds;
`uv build --wheel` produces the same file list.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(out: Path) -> Path:
    code = "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out / done.stdout.strip().splitlines()[-1]


def test_the_wheel_has_no_development_stack(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        sources = {n: archive.read(n).decode() for n in names if n.endswith(".py")}
        entry_points = next(
            archive.read(n).decode() for n in names if n.endswith("entry_points.txt")
        )

    assert "services/cli/main.py" in names
    assert any(n.startswith("shared/kafka/") for n in names)
    assert [n for n in names if n.startswith("devstack/")] == []
    assert [n for n in names if re.search(r"(^|/)local_[^/]*\.py$", n)] == []
    assert [n for n in names if n.endswith(("cli/stack.py", "cli/kafka_commands.py"))] == []
    importers = [
        n for n, text in sources.items() if re.search(r"^\s*(from|import) devstack", text, re.M)
    ]
    assert importers == [], "production code must not import the development stack"
    assert "demandscope = services.cli.main:app" in entry_points
