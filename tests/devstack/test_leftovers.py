"""Run directories that a killed test session left behind are reaped; a live session's never."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devstack import kafka
from devstack.leftovers import OWNER_FILE, claim, owner, reap_leftovers
from devstack.process import command_line, pid_alive, wait_while

SLEEP = "import time; time.sleep(600)"


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_claimed_directory_names_its_owner(tmp_path: Path) -> None:
    run_dir = claim(tmp_path / "test-kafka-1")
    assert owner(run_dir) is not None
    assert (run_dir / OWNER_FILE).read_text().strip().isdigit()
    assert owner(tmp_path) is None


def test_a_dead_sessions_broker_is_stopped_and_its_directory_removed(tmp_path: Path) -> None:
    run_root = tmp_path / ".run"
    left = run_root / "test-kafka-gw0-1"
    left.mkdir(parents=True)
    gone = dead_pid()
    (left / OWNER_FILE).write_text(f"{gone}\n")
    config = kafka.LocalKafkaConfig(root=tmp_path, run_dir=left)
    # Stands in for the broker: what devstack.kafka recognises as its broker is the main class
    # and this run_dir's properties file on the command line.
    broker = subprocess.Popen(
        [sys.executable, "-c", SLEEP, kafka.KAFKA_MAIN_CLASS, str(config.properties_file)],
        start_new_session=True,
    )
    try:
        # Until the child has exec'd, its command line is still pytest's, which the reaper
        # rightly does not take for a broker (a loaded machine made that window visible).
        assert not wait_while(
            lambda: kafka.KAFKA_MAIN_CLASS not in (command_line(broker.pid) or []),
            timeout=30,
        )
        config.pid_file.write_text(f"{broker.pid}\n")
        live = claim(run_root / "test-kafka-2")  # ours: alive
        unclaimed = run_root / "kafka"  # `make run`'s broker: no owner
        unclaimed.mkdir()

        reaped = reap_leftovers(run_root)

        assert reaped == [f"removed {left}, left over by process {gone}"]
        assert not left.exists()
        assert not wait_while(lambda: broker.poll() is None, timeout=30)
        assert live.is_dir()
        assert unclaimed.is_dir()
    finally:
        if broker.poll() is None:
            broker.kill()
        broker.wait()
    assert not pid_alive(broker.pid)
