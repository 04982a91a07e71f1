"""`python -m devstack setup`: the system packages that the stack, the tests and the benches need.

The one place that installs system packages (``make setup``, which ``make run`` and ``make test``
run first). The test fixtures and ``devstack up`` only look for the binaries. Idempotent and
quick when everything is there: it looks, says what it found, and installs only what is missing.

Installing needs root and ``apt-get``. Around the install it puts a ``/usr/sbin/policy-rc.d``
that forbids Debian's maintainer scripts from starting the packaged services (a system-wide
PostgreSQL or Prometheus would take the ports our own instances use), and removes it again;
a policy that was already there (a container's ``exit 101``) is left alone.

Java and Maven are required (the Kafka broker cannot run without them); PostgreSQL,
Prometheus, Alertmanager's amtool (the routing tests of deploy/alertmanager) and Chromium (the
pages' browser tests) are optional on a developer's machine (their tests are skipped loudly
without them) and required under ``CI=true``, where their tests fail instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack import postgres, prometheus
from devstack.kafka import MIN_JAVA_MAJOR
from devstack.process import run_to_completion

__all__ = [
    "POLICY_RC_D",
    "Requirement",
    "apt_install",
    "can_apt_install",
    "in_ci",
    "requirements",
    "services_not_started",
    "setup",
]

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

# Finds what a requirement provides: (where it is, None) or (None, why it does not count).
Finder = Callable[[], tuple[str | None, str]]
# Installs Debian packages: None on success, else what went wrong.
Installer = Callable[[Sequence[str]], str | None]


@dataclass(frozen=True)
class Requirement:
    name: str
    package: str  # the Debian package that provides it
    needed_for: str
    required: bool  # False: optional outside CI
    find: Finder


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("CI", "").strip().lower() in {"1", "true", "yes"}


# ---------------------------------------------------------------------------------------------
# what the stack needs
# ---------------------------------------------------------------------------------------------


def _find_java() -> tuple[str | None, str]:
    exe = shutil.which("java")
    if exe is None:
        return None, "not on PATH"
    try:
        out = run_to_completion([exe, "-version"], timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"`{exe} -version` failed: {error}"
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stdout)
    if match is None:
        return None, f"cannot read the version of {exe}"
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        return None, f"{exe} is Java {major}; Kafka needs {MIN_JAVA_MAJOR} or newer"
    return f"Java {major} at {exe}", ""


def _find_maven() -> tuple[str | None, str]:
    exe = shutil.which("mvn")
    return (exe, "") if exe else (None, "mvn is not on PATH")


def _find_postgresql() -> tuple[str | None, str]:
    bin_dir = postgres.find_bin_dir()
    return (str(bin_dir), "") if bin_dir else (None, "no initdb/pg_ctl found")


def _find_prometheus() -> tuple[str | None, str]:
    server = prometheus.find_binary()
    if server is None:
        return None, "prometheus is not on PATH"
    promtool = shutil.which("promtool") or str(server.with_name("promtool"))
    if not Path(promtool).is_file():
        return None, f"{server} has no promtool beside it"
    return f"{server} (and {promtool})", ""


def _find_amtool() -> tuple[str | None, str]:
    exe = shutil.which("amtool")
    return (exe, "") if exe else (None, "amtool is not on PATH")


def _find_chromium() -> tuple[str | None, str]:
    exe = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None
    )
    return (exe, "") if exe else (None, "chromium is not on PATH")


def requirements() -> list[Requirement]:
    return [
        Requirement("java", "default-jre-headless", "the Kafka broker", True, _find_java),
        Requirement("maven", "maven", "fetching the Kafka jars", True, _find_maven),
        Requirement(
            "postgresql", "postgresql", "PostgreSQL tests and benchmarks", False, _find_postgresql
        ),
        Requirement(
            "prometheus", "prometheus", "make run's Prometheus, rule tests", False, _find_prometheus
        ),
        Requirement(
            "amtool",
            "prometheus-alertmanager",
            "the Alertmanager routing tests",
            False,
            _find_amtool,
        ),
        Requirement(
            "chromium", "chromium", "the pages' browser tests (Playwright)", False, _find_chromium
        ),
    ]


# ---------------------------------------------------------------------------------------------
# installing
# ---------------------------------------------------------------------------------------------


def can_apt_install() -> bool:
    """We are root on a machine with apt-get, so a missing package can be installed."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


@contextlib.contextmanager
def services_not_started(policy: Path = POLICY_RC_D) -> Iterator[None]:
    """Forbid Debian's maintainer scripts from starting packaged services while inside."""
    if policy.exists():  # somebody else's policy stays, and already says no
        yield
        return
    policy.write_text("#!/bin/sh\n# demandscope: do not start services during apt-get\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return run_to_completion(["apt-get", *args], timeout=900, env=env)


def apt_install(packages: Sequence[str]) -> str | None:
    """Install Debian packages without prompts; None on success, else the output's tail.

    Package lists may be missing or stale on a fresh machine, so a failed install is retried
    once after ``apt-get update``.
    """
    install = ("install", "-y", "-q", "--no-install-recommends", *packages)
    with services_not_started():
        out = _apt(*install)
        if out.returncode == 0:
            return None
        update = _apt("update", "-q")
        out = _apt(*install)
    if out.returncode == 0:
        return None
    return "\n".join((update.stdout + out.stdout).splitlines()[-30:])


# ---------------------------------------------------------------------------------------------
# the step
# ---------------------------------------------------------------------------------------------


def setup(
    wanted: Sequence[Requirement],
    *,
    installer: Installer | None,
    echo: Callable[[str], None],
    ci: bool,
) -> int:
    """Look for each requirement, install the missing ones with ``installer``; the exit code.

    Non-zero when a required one (any one under CI) is still missing afterwards.
    """
    width = max(len(r.name) for r in wanted)
    missing: list[tuple[Requirement, str]] = []
    for requirement in wanted:
        where, why = requirement.find()
        if where is None:
            missing.append((requirement, why))
        else:
            echo(f"ok         {requirement.name:<{width}}  {where}")
    if not missing:
        return 0

    failure = ""
    if installer is not None:
        packages = sorted({r.package for r, _ in missing})
        echo(f"installing {', '.join(packages)} (apt-get; packaged services are not started) ...")
        failure = installer(packages) or ""

    code = 0
    for requirement, why in missing:
        where, still = requirement.find() if installer is not None else (None, why)
        if where is not None:
            echo(f"installed  {requirement.name:<{width}}  {where}")
            continue
        how = f"`sudo apt-get install -y {requirement.package}`, or `make setup` as root"
        fatal = requirement.required or ci
        state = "MISSING   " if fatal else "missing   "
        what = (
            f"{state} {requirement.name:<{width}}  {still}; needed for {requirement.needed_for}. "
            f"Install it with {how}."
        )
        if not fatal:
            what += " Its tests are skipped until then (under CI=true they fail)."
        echo(what)
        code = code or (1 if fatal else 0)
    if failure:
        echo(f"apt-get failed:\n{failure}")
    return code
