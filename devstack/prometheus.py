"""Run a local Prometheus (Debian's ``prometheus`` package) that scrapes the demandscope stack.

The configuration is ``deploy/prometheus/prometheus.yml`` with its targets, intervals and rule
files replaced by the ones in ``LocalPrometheusConfig`` (``render_config``), so the local
instance runs exactly the jobs, relabelling and rules that a deployment ships with.
Everything lives under ``cfg.run_dir`` (default ``<root>/.run/prometheus``)::

    run_dir/prometheus.yml   generated config
    run_dir/data/            the TSDB
    run_dir/prometheus.log   stdout/stderr of the server
    run_dir/prometheus.pid   pid of the running server

``fetch_jmx_exporter`` downloads the Prometheus JMX exporter agent that lets the local Kafka
broker (``LocalKafkaConfig.jmx_exporter_port``) serve its own metrics.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devstack.process import (
    StartedServers,
    StartupOutcome,
    command_line,
    read_pid,
    reap_if_zombie,
    tail,
    terminate,
    wait_for_startup,
)

__all__ = [
    "DEFAULT_TARGETS",
    "NOT_INSTALLED_HINT",
    "LocalPrometheusConfig",
    "LocalPrometheusError",
    "PrometheusStatus",
    "exit_code",
    "fetch_jmx_exporter",
    "find_binary",
    "render_config",
    "running_pid",
    "start",
    "start_if_installed",
    "status",
    "stop",
]

NOT_INSTALLED_HINT = (
    "Prometheus is not installed, so it was not started. Add it with `make setup` "
    "(`python -m devstack setup`: Debian's prometheus package); `make run` then starts it."
)

# Scrape job -> targets: the defaults of the services' settings and of the broker's JMX exporter.
DEFAULT_TARGETS: Mapping[str, Sequence[str]] = {
    "demandscope-intake": ("127.0.0.1:8000",),
    "demandscope-classifier": ("127.0.0.1:8001",),
    "demandscope-metrics": ("127.0.0.1:8002",),
    "kafka": ("127.0.0.1:9404",),
}


class LocalPrometheusError(Exception):
    """Expected failure with a human-readable message (no traceback needed)."""


@dataclass
class LocalPrometheusConfig:
    """Where and how to run the local Prometheus. Every field can be overridden."""

    root: Path
    run_dir: Path | None = None  # default: <root>/.run/prometheus
    host: str = "127.0.0.1"
    port: int = 9090
    targets: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    retention: str = "7d"
    binary: str = "prometheus"
    template: Path | None = None  # default: <root>/deploy/prometheus/prometheus.yml

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.run_dir = Path(self.run_dir or self.root / ".run" / "prometheus").resolve()
        self.template = Path(
            self.template or self.root / "deploy" / "prometheus" / "prometheus.yml"
        )

    @property
    def run_path(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir

    @property
    def template_path(self) -> Path:
        assert self.template is not None
        return self.template

    @property
    def config_file(self) -> Path:
        return self.run_path / "prometheus.yml"

    @property
    def data_dir(self) -> Path:
        return self.run_path / "data"

    @property
    def log_file(self) -> Path:
        return self.run_path / "prometheus.log"

    @property
    def pid_file(self) -> Path:
        return self.run_path / "prometheus.pid"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class PrometheusStatus:
    running: bool
    pid: int | None
    url: str
    config_file: Path

    def __str__(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "stopped"
        return f"prometheus: {state}\n  url:    {self.url}\n  config: {self.config_file}"


# ---------------------------------------------------------------------------------------------
# binaries
# ---------------------------------------------------------------------------------------------


def find_binary(binary: str = "prometheus") -> Path | None:
    """The Prometheus server binary on PATH, or None when it is not installed."""
    found = shutil.which(binary)
    return Path(found) if found else None


def fetch_jmx_exporter(jar: Path, *, pom: Path, mvn: str = "mvn") -> Path:
    """Download the JMX exporter java agent (``pom``) to ``jar`` with Maven, once."""
    if jar.is_file():
        return jar
    exe = shutil.which(mvn)
    if exe is None:
        raise LocalPrometheusError(f"Maven ('{mvn}') is needed to fetch the JMX exporter agent")
    tmp = jar.parent / f".fetch-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [exe, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
    cmd += [f"-DoutputDirectory={tmp}", "-DexcludeTransitive=true"]
    proc = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False
    )
    fetched = sorted(tmp.glob("jmx_prometheus_javaagent-*.jar"))
    if proc.returncode != 0 or not fetched:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LocalPrometheusError(
            f"Maven could not fetch the JMX exporter:\n{proc.stdout[-2000:]}"
        )
    jar.parent.mkdir(parents=True, exist_ok=True)
    fetched[-1].replace(jar)  # atomic: a concurrent reader sees the whole jar or none
    shutil.rmtree(tmp, ignore_errors=True)
    return jar


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


def render_config(template: Mapping[str, Any], cfg: LocalPrometheusConfig) -> dict[str, Any]:
    """The shipped config with this instance's targets, intervals and absolute rule paths.

    Jobs of the template without targets in ``cfg.targets`` are dropped; a job in
    ``cfg.targets`` that the template lacks is an error (its relabelling would be missing).
    """
    config = dict(template)
    config["global"] = {
        **dict(template.get("global") or {}),
        "scrape_interval": cfg.scrape_interval,
        "evaluation_interval": cfg.evaluation_interval,
    }
    rules_dir = cfg.template_path.parent
    config["rule_files"] = [str(rules_dir / pattern) for pattern in template.get("rule_files", [])]
    jobs = {job["job_name"]: job for job in template.get("scrape_configs", [])}
    unknown = sorted(set(cfg.targets) - set(jobs))
    if unknown:
        raise LocalPrometheusError(f"no scrape job named {', '.join(unknown)} in the template")
    config["scrape_configs"] = [
        {**job, "static_configs": [{"targets": list(cfg.targets[name])}]}
        for name, job in jobs.items()
        if name in cfg.targets
    ]
    config.pop("alerting", None)  # no Alertmanager locally: alerts are read at /api/v1/alerts
    return config


def _write_config(cfg: LocalPrometheusConfig) -> None:
    try:
        template = yaml.safe_load(cfg.template_path.read_text())
    except OSError as error:
        raise LocalPrometheusError(f"cannot read {cfg.template_path}: {error}") from error
    cfg.run_path.mkdir(parents=True, exist_ok=True)
    rendered = render_config(template, cfg)
    header = "# generated by devstack/prometheus.py - edits are overwritten on start\n"
    cfg.config_file.write_text(header + yaml.safe_dump(rendered, sort_keys=False))


# ---------------------------------------------------------------------------------------------
# process
# ---------------------------------------------------------------------------------------------


# The servers this process started: their liveness comes from poll().
_started = StartedServers()


def _is_ours(pid: int, cfg: LocalPrometheusConfig) -> bool:
    """Alive and started with this run_dir's config (a recycled pid is somebody else)."""
    started = _started.alive(pid)
    if started is not None:
        return started
    args = command_line(pid)
    if args is None or reap_if_zombie(pid):
        return False
    return f"--config.file={cfg.config_file}" in args


def running_pid(cfg: LocalPrometheusConfig) -> int | None:
    """Pid of this run_dir's Prometheus if it is alive (ready or not), else None."""
    pid = read_pid(cfg.pid_file)
    return pid if pid is not None and _is_ours(pid, cfg) else None


def exit_code(pid: int) -> int | None:
    """How a Prometheus this interpreter started exited (negative: the signal); None if unknown."""
    return _started.exit_code(pid)


def _answers_ready(cfg: LocalPrometheusConfig) -> bool:
    try:
        with urllib.request.urlopen(f"{cfg.url}/-/ready", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(cfg: LocalPrometheusConfig) -> str:
    return tail(cfg.log_file, 20, unreadable="(no log output)")


def _wait_ready(cfg: LocalPrometheusConfig, pid: int, timeout: float) -> None:
    outcome = wait_for_startup(
        running=lambda: _is_ours(pid, cfg), ready=lambda: _answers_ready(cfg), timeout=timeout
    )
    if outcome is StartupOutcome.EXITED:
        cfg.pid_file.unlink(missing_ok=True)
        raise LocalPrometheusError(f"Prometheus exited during startup:\n{_log_tail(cfg)}")
    if outcome is StartupOutcome.TIMED_OUT:
        raise LocalPrometheusError(
            f"Prometheus (pid {pid}) was not ready at {cfg.url} within {timeout:.0f}s:\n"
            f"{_log_tail(cfg)}"
        )


def start(cfg: LocalPrometheusConfig, timeout: float = 30) -> PrometheusStatus:
    """Write the config, start Prometheus in the background and wait until it is ready.

    Idempotent: a running instance of this run_dir is restarted with the new config.
    Raises LocalPrometheusError (with NOT_INSTALLED_HINT) when the binary is missing.
    """
    binary = find_binary(cfg.binary)
    if binary is None:
        raise LocalPrometheusError(NOT_INSTALLED_HINT)
    stop(cfg)
    _write_config(cfg)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(binary),
        f"--config.file={cfg.config_file}",
        f"--storage.tsdb.path={cfg.data_dir}",
        f"--storage.tsdb.retention.time={cfg.retention}",
        f"--web.listen-address={cfg.host}:{cfg.port}",
        "--web.enable-lifecycle",  # POST /-/reload picks up edited rules without a restart
    ]
    pid = _started.spawn(cmd, cwd=cfg.run_path, output=cfg.log_file, pid_file=cfg.pid_file)
    _wait_ready(cfg, pid, timeout)
    return status(cfg)


def start_if_installed(cfg: LocalPrometheusConfig) -> str:
    """For `devstack up`: start Prometheus when the binary exists; the line to print.

    Never raises: without Prometheus the stack runs as before and the line says how to add it.
    """
    if find_binary(cfg.binary) is None:
        return NOT_INSTALLED_HINT
    try:
        start(cfg)
    except LocalPrometheusError as error:
        return f"Prometheus did not start (the rest runs without it): {error}"
    return f"prometheus {cfg.url} (config {cfg.config_file})"


def stop(cfg: LocalPrometheusConfig, timeout: float = 15) -> bool:
    """SIGTERM (then SIGKILL) this run_dir's Prometheus. True if one was running."""
    pid = running_pid(cfg)
    if pid is None:
        cfg.pid_file.unlink(missing_ok=True)
        return False
    terminate(pid, lambda: _is_ours(pid, cfg), timeout, whole_group=False)
    _started.release(pid)
    cfg.pid_file.unlink(missing_ok=True)
    return True


def status(cfg: LocalPrometheusConfig) -> PrometheusStatus:
    pid = running_pid(cfg)
    running = pid is not None and _answers_ready(cfg)
    return PrometheusStatus(running=running, pid=pid, url=cfg.url, config_file=cfg.config_file)
