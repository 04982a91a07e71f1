"""Fixtures of the deployment tests: Prometheus (Debian's package, `make setup` installs it).

Like the PostgreSQL fixture: when Prometheus is not installed, its tests are skipped with a loud
message, or fail when ``CI=true``. Nothing is installed from here.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest

from devstack import prometheus as local_prometheus

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(what: str, error: Exception) -> None:
    message = "\n" + "!" * 78 + f"\n!!! {what} is NOT available, its tests are SKIPPED: {error}\n"
    message += "!" * 78
    if _in_ci():
        pytest.fail(message, pytrace=False)
    warnings.warn(message, pytest.PytestWarning, stacklevel=2)
    pytest.skip(message)


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    """The prometheus server binary (installed by `make setup`, never from here)."""
    found = local_prometheus.find_binary()
    if found is None:
        reason = "prometheus is not on PATH; install it with `make setup` (devstack setup)"
        _unavailable("Prometheus", FileNotFoundError(reason))
        raise AssertionError("unreachable: _unavailable skips or fails")
    return found


@pytest.fixture(scope="session")
def promtool(prometheus_binary: Path) -> Path:
    """promtool, which Debian's prometheus package ships beside the server."""
    found = shutil.which("promtool") or str(prometheus_binary.with_name("promtool"))
    if not Path(found).is_file():
        pytest.fail(f"prometheus is installed at {prometheus_binary} but promtool is missing")
    return Path(found)


@pytest.fixture(scope="session")
def amtool() -> Path:
    """amtool, from Debian's prometheus-alertmanager (installed by `make setup`, never here)."""
    found = shutil.which("amtool")
    if found is None:
        reason = "amtool is not on PATH; install prometheus-alertmanager with `make setup`"
        _unavailable("amtool", FileNotFoundError(reason))
        raise AssertionError("unreachable: _unavailable skips or fails")
    return Path(found)


@pytest.fixture(scope="session")
def alertmanager_binary() -> Path:
    """Alertmanager itself, from Debian's prometheus-alertmanager (beside amtool)."""
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        reason = "prometheus-alertmanager is not on PATH; install it with `make setup`"
        _unavailable("Alertmanager", FileNotFoundError(reason))
        raise AssertionError("unreachable: _unavailable skips or fails")
    return Path(found)
