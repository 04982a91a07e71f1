"""devstack's process plumbing, shared by the local Kafka, Prometheus and PostgreSQL servers."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

from devstack.process import (
    StartedServers,
    StartupOutcome,
    command_line,
    pick_free_port,
    pid_alive,
    pid_exists,
    port_is_free,
    read_pid,
    reap_if_zombie,
    run_to_completion,
    tail,
    terminate,
    wait_for_startup,
    wait_while,
)


def test_read_pid_takes_the_first_line_and_refuses_garbage(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    assert read_pid(pid_file) is None
    pid_file.write_text("4242\n/var/lib/data\n")
    assert read_pid(pid_file) == 4242
    pid_file.write_text("")
    assert read_pid(pid_file) is None
    pid_file.write_text("not a pid\n")
    assert read_pid(pid_file) is None


def test_tail_keeps_the_last_lines_or_says_it_could_not_read(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert tail(log, 3) == "line 47\nline 48\nline 49"
    assert tail(log).splitlines()[0] == "line 20"
    assert tail(tmp_path / "missing.log") == ""
    assert tail(tmp_path / "missing.log", unreadable="(no log output)") == "(no log output)"


def test_this_process_is_alive_and_shows_its_command_line() -> None:
    me = os.getpid()
    assert pid_exists(me)
    assert pid_alive(me)
    assert not reap_if_zombie(me)
    args = command_line(me)
    assert args is not None
    assert any("pytest" in arg for arg in args)


def test_a_listening_port_is_taken_and_a_picked_one_is_free() -> None:
    port = pick_free_port("127.0.0.1")
    assert 0 < port < 65536
    assert port_is_free("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert not port_is_free("127.0.0.1", taken)


def test_startup_outcomes_ask_whether_it_runs_before_whether_it_is_ready() -> None:
    asked: list[str] = []

    def running() -> bool:
        asked.append("running")
        return False

    def ready() -> bool:
        asked.append("ready")
        return True

    assert wait_for_startup(running=running, ready=ready, timeout=10) is StartupOutcome.EXITED
    assert asked == ["running"]
    outcome = wait_for_startup(running=lambda: True, ready=lambda: True, timeout=10)
    assert outcome is StartupOutcome.READY
    outcome = wait_for_startup(running=lambda: True, ready=lambda: False, timeout=0)
    assert outcome is StartupOutcome.TIMED_OUT


def test_run_to_completion_merges_the_output_and_keeps_the_exit_code(tmp_path: Path) -> None:
    code = "import os, sys; print(os.getcwd()); print('oops', file=sys.stderr); sys.exit(3)"
    done = run_to_completion([sys.executable, "-c", code], cwd=tmp_path, timeout=60)
    assert done.returncode == 3
    assert done.stdout.splitlines() == [str(tmp_path), "oops"]


def test_wait_while_returns_the_last_value_of_the_condition() -> None:
    assert wait_while(lambda: False, timeout=10) is False
    assert wait_while(lambda: True, timeout=0) is True


def test_a_spawned_server_is_tracked_stopped_and_reaped(tmp_path: Path) -> None:
    servers = StartedServers()
    pid_file, output = tmp_path / "server.pid", tmp_path / "server.out"
    code = "import sys, time; print('up', flush=True); time.sleep(600)"
    pid = servers.spawn(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        output=output,
        pid_file=pid_file,
        banner="==== start ====\n",
    )
    assert read_pid(pid_file) == pid
    assert servers.alive(pid) is True
    assert servers.exit_code(pid) is None  # still running
    assert servers.alive(os.getpid()) is None  # not started by this registry

    def running() -> bool:
        return servers.alive(pid) is True

    assert wait_while(lambda: "up" not in output.read_text(), timeout=30) is False
    assert terminate(pid, running, timeout=30, whole_group=True) is False  # SIGTERM sufficed
    assert servers.alive(pid) is None  # exited, reaped and forgotten
    assert servers.exit_code(pid) == -signal.SIGTERM  # how it ended is remembered
    assert not pid_alive(pid)
    servers.release(pid)
    assert output.read_text().splitlines()[:2] == ["==== start ====", "up"]
