"""`python -m devstack setup`: looks first, installs only what is missing, says so per package.
Nothing here runs apt-get or writes a system file: the installer and the policy path are fakes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from devstack.system_packages import Requirement, in_ci, services_not_started, setup

ROOT = Path(__file__).resolve().parents[2]


class FakeMachine:
    """Packages that are installed, and an installer that records what it was asked for."""

    def __init__(self, installed: set[str], *, installable: bool = True) -> None:
        self.installed = installed
        self.installable = installable
        self.asked: list[list[str]] = []

    def requirement(self, name: str, *, required: bool) -> Requirement:
        def find() -> tuple[str | None, str]:
            return (f"/usr/bin/{name}", "") if name in self.installed else (None, "not on PATH")

        return Requirement(name, f"deb-{name}", f"the {name} tests", required, find)

    def install(self, packages: Sequence[str]) -> str | None:
        self.asked.append(list(packages))
        if not self.installable:
            return "E: Unable to locate package"
        self.installed |= {package.removeprefix("deb-") for package in packages}
        return None


def test_when_everything_is_there_nothing_is_installed_and_each_is_named() -> None:
    machine = FakeMachine({"java", "postgresql"})
    lines: list[str] = []
    wanted = [
        machine.requirement("java", required=True),
        machine.requirement("postgresql", required=False),
    ]
    assert setup(wanted, installer=machine.install, echo=lines.append, ci=True) == 0
    assert machine.asked == []
    assert lines == [
        "ok         java        /usr/bin/java",
        "ok         postgresql  /usr/bin/postgresql",
    ]


def test_only_the_missing_packages_are_installed_in_one_go() -> None:
    machine = FakeMachine({"java"})
    lines: list[str] = []
    wanted = [
        machine.requirement("java", required=True),
        machine.requirement("postgresql", required=False),
        machine.requirement("prometheus", required=False),
    ]
    assert setup(wanted, installer=machine.install, echo=lines.append, ci=False) == 0
    assert machine.asked == [["deb-postgresql", "deb-prometheus"]]
    assert "installed  postgresql  /usr/bin/postgresql" in lines
    assert "installed  prometheus  /usr/bin/prometheus" in lines
    # a second run finds everything and installs nothing
    assert setup(wanted, installer=machine.install, echo=lines.append, ci=False) == 0
    assert len(machine.asked) == 1


def test_an_optional_package_that_cannot_be_had_is_a_warning_but_fails_under_ci() -> None:
    machine = FakeMachine(set())
    wanted = [machine.requirement("prometheus", required=False)]
    lines: list[str] = []
    assert setup(wanted, installer=None, echo=lines.append, ci=False) == 0
    [line] = lines
    assert line.startswith("missing    prometheus  not on PATH; needed for the prometheus tests.")
    assert "`sudo apt-get install -y deb-prometheus`" in line
    assert "skipped until then" in line

    lines.clear()
    assert setup(wanted, installer=None, echo=lines.append, ci=True) == 1
    assert lines[0].startswith("MISSING    prometheus")


def test_a_required_package_whose_install_fails_fails_with_apt_gets_words() -> None:
    machine = FakeMachine(set(), installable=False)
    lines: list[str] = []
    code = setup(
        [machine.requirement("java", required=True)],
        installer=machine.install,
        echo=lines.append,
        ci=False,
    )
    assert code == 1
    assert any(line.startswith("MISSING    java  not on PATH") for line in lines)
    assert lines[-1] == "apt-get failed:\nE: Unable to locate package"


def test_the_policy_forbids_starting_services_only_while_installing(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    with services_not_started(policy):
        assert policy.read_text().rstrip().endswith("exit 101")
        assert policy.stat().st_mode & 0o111
    assert not policy.exists()

    policy.write_text("#!/bin/sh\nexit 101 # the container's own\n")
    with services_not_started(policy):
        pass
    assert policy.read_text() == "#!/bin/sh\nexit 101 # the container's own\n"


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("", False)])
def test_ci_is_read_as_the_fixtures_read_it(value: str, expected: bool) -> None:
    assert in_ci({"CI": value}) is expected


def test_no_fixture_or_test_installs_packages_or_writes_system_files() -> None:
    """Only `devstack setup` may run apt-get or write policy-rc.d."""
    allowed = {ROOT / "devstack" / "system_packages.py", Path(__file__).resolve()}
    pattern = re.compile(r"""["']apt-get["']|policy-rc\.d|\bapt_install\(""")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("devstack", "tests", "services", "shared", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if path.resolve() not in allowed and pattern.search(path.read_text(errors="replace"))
    ]
    assert offenders == []
