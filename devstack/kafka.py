"""Run a real single-node Apache Kafka broker (KRaft, broker+controller) locally, without Docker.

The broker jars come from Maven Central via ``deploy/kafka/pom.xml`` (``fetch_jars``), the JVM is
started detached in its own session (``start``) and stopped with SIGTERM/SIGKILL (``stop``).
Everything lives under ``cfg.run_dir`` (default ``<root>/.run/kafka``)::

    run_dir/server.properties   generated broker config
    run_dir/data/               log.dirs (KRaft metadata + topic data)
    run_dir/logs/server.log     broker log (log4j2, see deploy/kafka/log4j2.yaml)
    run_dir/broker.out          JVM stdout/stderr (crash output, ERRORs)
    run_dir/kafka.pid           pid of the running broker

Readiness is an aiokafka metadata request with a short timeout (``is_ready``), callable from
sync code and from inside a running event loop. Environment variables are *not* read here;
``devstack.cli`` maps settings onto ``LocalKafkaConfig``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import contextvars
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devstack.process import (
    StartedServers,
    StartupOutcome,
    command_line,
    pick_free_ports,
    pid_alive,
    port_is_free,
    read_pid,
    run_to_completion,
    tail,
    terminate,
    wait_for_startup,
    wait_while,
)

__all__ = [
    "MIN_JAVA_MAJOR",
    "KafkaStatus",
    "LocalKafkaConfig",
    "LocalKafkaError",
    "exit_code",
    "fetch_jars",
    "is_ready",
    "running_pid",
    "start",
    "status",
    "stop",
    "wipe",
]

MIN_JAVA_MAJOR = 17
KAFKA_MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
NODE_ID = 1
_STAMP_NAME = ".pom.sha256"
_HEAP_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")


class LocalKafkaError(Exception):
    """Expected failure with a human-readable message (no traceback needed)."""


@dataclass
class LocalKafkaConfig:
    """Where and how to run the local broker. Every field can be overridden."""

    root: Path
    run_dir: Path | None = None  # default: <root>/.run/kafka
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    # Shared jar cache (default <root>/.run/kafka/libs) so a wiped/test run_dir does not refetch.
    libs_dir: Path | None = None
    pom: Path | None = None  # default: <root>/deploy/kafka/pom.xml
    log4j_config: Path | None = None  # default: <root>/deploy/kafka/log4j2.yaml
    java: str = "java"
    mvn: str = "mvn"
    num_partitions: int = 3
    auto_create_topics: bool = False
    # C1-only JIT + SerialGC: ~30% less CPU during startup on small (2 core) machines; plenty
    # fast for a dev/test broker. Replace to tune.
    jvm_opts: tuple[str, ...] = (
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-XX:+ExitOnOutOfMemoryError",
        "-XX:-UsePerfData",
        "-Djava.awt.headless=true",
    )
    extra_properties: dict[str, str] = field(default_factory=dict)
    # Prometheus JMX exporter agent: when set, the broker serves its metrics on host:port/metrics.
    # The agent jar comes from devstack.prometheus.fetch_jmx_exporter (jmx_exporter_jar below).
    jmx_exporter_port: int | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        if self.run_dir is None:
            self.run_dir = self.root / ".run" / "kafka"
        self.run_dir = Path(self.run_dir).resolve()
        if self.libs_dir is None:
            self.libs_dir = self.root / ".run" / "kafka" / "libs"
        self.libs_dir = Path(self.libs_dir).resolve()
        if self.pom is None:
            self.pom = self.root / "deploy" / "kafka" / "pom.xml"
        if self.log4j_config is None:
            self.log4j_config = self.root / "deploy" / "kafka" / "log4j2.yaml"

    @classmethod
    def on_free_ports(
        cls, *, root: Path, run_dir: Path, heap: str = "512m", jmx_exporter: bool = False
    ) -> LocalKafkaConfig:
        """A broker of its own (tests, benchmarks): ports the kernel says are free now."""
        ports = pick_free_ports("127.0.0.1", 3 if jmx_exporter else 2)
        return cls(
            root=root,
            run_dir=run_dir,
            port=ports[0],
            controller_port=ports[1],
            heap=heap,
            jmx_exporter_port=ports[2] if jmx_exporter else None,
        )

    # -- derived paths (typed as Path, never None) -------------------------------------------
    @property
    def run_path(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir

    @property
    def libs_path(self) -> Path:
        assert self.libs_dir is not None
        return self.libs_dir

    @property
    def pom_path(self) -> Path:
        assert self.pom is not None
        return Path(self.pom)

    @property
    def log4j_path(self) -> Path:
        assert self.log4j_config is not None
        return Path(self.log4j_config)

    @property
    def data_dir(self) -> Path:
        return self.run_path / "data"

    @property
    def logs_dir(self) -> Path:
        return self.run_path / "logs"

    @property
    def pid_file(self) -> Path:
        return self.run_path / "kafka.pid"

    @property
    def properties_file(self) -> Path:
        return self.run_path / "server.properties"

    @property
    def stdout_file(self) -> Path:
        return self.run_path / "broker.out"

    @property
    def jmx_exporter_jar(self) -> Path:
        return self.libs_path.parent / "jmx-exporter" / "jmx_prometheus_javaagent.jar"

    @property
    def jmx_exporter_config(self) -> Path:
        return self.root / "deploy" / "kafka" / "jmx-exporter.yaml"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class KafkaStatus:
    running: bool
    pid: int | None
    bootstrap: str
    port: int
    controller_port: int
    data_dir: Path
    log_file: Path

    def __str__(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "stopped"
        return (
            f"kafka: {state}\n"
            f"  bootstrap: {self.bootstrap} (controller port {self.controller_port})\n"
            f"  data dir:  {self.data_dir}\n"
            f"  log:       {self.log_file}"
        )


# ---------------------------------------------------------------------------------------------
# jars
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _jars_current(libs: Path, digest: str) -> bool:
    stamp = libs / _STAMP_NAME
    try:
        ok = stamp.read_text().strip() == digest
    except OSError:
        return False
    return ok and any(libs.glob("kafka_2.13-*.jar"))


def fetch_jars(cfg: LocalKafkaConfig) -> Path:
    """Download the broker jars with Maven into ``cfg.libs_dir`` (once per pom content)."""
    pom = cfg.pom_path
    if not pom.is_file():
        raise LocalKafkaError(f"Kafka pom not found at {pom}")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    libs = cfg.libs_path
    if _jars_current(libs, digest):
        return libs
    mvn = shutil.which(cfg.mvn)
    if mvn is None:
        raise LocalKafkaError(
            f"Maven ('{cfg.mvn}') is not on PATH; it is needed once to download the Kafka jars "
            "from Maven Central. Install it (e.g. `apt-get install -y maven`)."
        )
    with _file_lock(libs.parent / ".fetch.lock"):
        if _jars_current(libs, digest):  # somebody else fetched while we waited
            return libs
        tmp = libs.parent / f".libs-tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
        try:
            proc = run_to_completion(cmd, cwd=pom.parent, timeout=900)
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise LocalKafkaError(
                "Maven took more than 15 minutes to fetch the Kafka jars"
            ) from exc
        if proc.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join(proc.stdout.splitlines()[-40:])
            raise LocalKafkaError(
                f"Maven failed to fetch the Kafka jars (exit {proc.returncode}):\n"
                f"  {' '.join(cmd)}\n{tail}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        (libs / _STAMP_NAME).write_text(digest + "\n")
    return libs


# ---------------------------------------------------------------------------------------------
# java
# ---------------------------------------------------------------------------------------------


def _java_major(java: str) -> int:
    exe = shutil.which(java)
    if exe is None:
        raise LocalKafkaError(
            f"Java ('{java}') is not on PATH; Kafka needs Java {MIN_JAVA_MAJOR}+ "
            "(e.g. `apt-get install -y openjdk-17-jre-headless`)."
        )
    try:
        out = subprocess.run(
            [exe, "-version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"could not run `{exe} -version`: {exc}") from exc
    text = out.stderr + out.stdout
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if m is None:
        raise LocalKafkaError(f"could not parse the Java version from `{exe} -version`:\n{text}")
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_x" style
        major = int(m.group(2))
    return major


def _check_java(java: str) -> None:
    major = _java_major(java)
    if major < MIN_JAVA_MAJOR:
        raise LocalKafkaError(
            f"Kafka needs Java {MIN_JAVA_MAJOR} or newer but `{java}` is Java {major}; "
            "install a newer JDK/JRE or point the config at one."
        )


# ---------------------------------------------------------------------------------------------
# processes and ports
# ---------------------------------------------------------------------------------------------

# The brokers this process started: their liveness comes from poll().
_started = StartedServers()


def _pid_alive(pid: int) -> bool:
    started = _started.alive(pid)
    return pid_alive(pid) if started is None else started


def _is_our_broker(pid: int, cfg: LocalKafkaConfig) -> bool:
    args = command_line(pid)
    if args is None:
        return _pid_alive(pid)  # no procfs: trust the pid file
    return KAFKA_MAIN_CLASS in args and str(cfg.properties_file) in args


def running_pid(cfg: LocalKafkaConfig) -> int | None:
    """Pid of *our* broker process if it is alive (ready or not), else None."""
    pid = read_pid(cfg.pid_file)
    if pid is None:
        return None
    if _pid_alive(pid) and _is_our_broker(pid, cfg):
        return pid
    return None


def exit_code(pid: int) -> int | None:
    """How a broker this interpreter started exited (negative: the signal); None if unknown."""
    return _started.exit_code(pid)


# aiokafka logs every refused connection at ERROR; while a probe waits for a starting broker
# those are expected, so they are dropped for the probe's own task (and only there).
_probing: contextvars.ContextVar[bool] = contextvars.ContextVar("devstack_probing", default=False)


class _DuringProbe(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _probing.get()


for _name in ("aiokafka", "aiokafka.client", "aiokafka.conn", "aiokafka.cluster"):
    logging.getLogger(_name).addFilter(_DuringProbe())


async def _lists_a_broker(bootstrap: str, timeout: float) -> bool:
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    _probing.set(True)
    timeout_ms = max(int(timeout * 1000), 1)
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        client_id="demandscope-devstack-probe",
        request_timeout_ms=timeout_ms,
        metadata_max_age_ms=max(timeout_ms, 60_000),
    )
    try:
        async with asyncio.timeout(timeout):
            await client.bootstrap()  # a Metadata request to the bootstrap server
        return len(client.cluster.brokers()) >= 1
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def is_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if a Kafka broker on host:port answers a Metadata request and lists a broker.

    Runs its own event loop; inside a running one (an async test) it does so in a thread.
    """
    probe = _lists_a_broker(f"{host}:{port}", timeout)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(probe)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-probe") as pool:
        return pool.submit(asyncio.run, probe).result()


# ---------------------------------------------------------------------------------------------
# config + storage
# ---------------------------------------------------------------------------------------------


def _server_properties(cfg: LocalKafkaConfig) -> str:
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{cfg.host}:{cfg.controller_port}",
        "listeners": (
            f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{cfg.host}:{cfg.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(cfg.data_dir),
        "num.partitions": str(cfg.num_partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true" if cfg.auto_create_topics else "false",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "168",
        "log.segment.bytes": str(64 * 1024 * 1024),
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    }
    props.update(cfg.extra_properties)
    lines = ["# generated by devstack/kafka.py - edits are overwritten on start"]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


def _java_cmd(cfg: LocalKafkaConfig, java: str, main: str, *args: str, heap: str) -> list[str]:
    return [
        java,
        f"-Xms{heap}",
        f"-Xmx{heap}",
        *cfg.jvm_opts,
        f"-Dlog4j2.configurationFile={cfg.log4j_path}",
        f"-Dkafka.logs.dir={cfg.logs_dir}",
        "-cp",
        str(cfg.libs_path / "*"),
        main,
        *args,
    ]


def _new_cluster_id() -> str:
    # Kafka's Uuid.toString(): url-safe base64 of 16 bytes without padding. One that starts
    # with '-' would be read by the storage tool as an option, so draw again.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(cfg: LocalKafkaConfig, java: str) -> None:
    if (cfg.data_dir / "meta.properties").is_file():
        return
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    cmd = _java_cmd(
        cfg,
        java,
        STORAGE_TOOL_CLASS,
        "format",
        "--ignore-formatted",
        "-t",
        _new_cluster_id(),
        "-c",
        str(cfg.properties_file),
        heap="128m",
    )
    try:
        proc = run_to_completion(cmd, cwd=cfg.run_path, timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError("formatting the Kafka storage timed out") from exc
    if proc.returncode != 0:
        raise LocalKafkaError(
            f"formatting the Kafka storage in {cfg.data_dir} failed (exit {proc.returncode}):\n"
            + "\n".join(proc.stdout.splitlines()[-30:])
        )


def _failure_details(cfg: LocalKafkaConfig) -> str:
    parts: list[str] = []
    for path in (cfg.stdout_file, cfg.logs_dir / "server.log"):
        text = tail(path)
        if text.strip():
            parts.append(f"--- last lines of {path} ---\n{text}")
    return "\n".join(parts) if parts else "(no log output)"


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def status(cfg: LocalKafkaConfig) -> KafkaStatus:
    pid = running_pid(cfg)
    running = pid is not None and is_ready(cfg.host, cfg.port, timeout=1.0)
    return KafkaStatus(
        running=running,
        pid=pid,
        bootstrap=cfg.bootstrap,
        port=cfg.port,
        controller_port=cfg.controller_port,
        data_dir=cfg.data_dir,
        log_file=cfg.logs_dir / "server.log",
    )


def _wait_ready(cfg: LocalKafkaConfig, pid: int, timeout: float) -> None:
    outcome = wait_for_startup(
        running=lambda: _pid_alive(pid),
        ready=lambda: is_ready(cfg.host, cfg.port, timeout=1.0),
        timeout=timeout,
    )
    if outcome is StartupOutcome.EXITED:
        cfg.pid_file.unlink(missing_ok=True)
        raise LocalKafkaError(
            f"the Kafka broker (pid {pid}) exited during startup.\n{_failure_details(cfg)}"
        )
    if outcome is StartupOutcome.TIMED_OUT:
        raise LocalKafkaError(
            f"the Kafka broker (pid {pid}) did not become ready on {cfg.bootstrap} within "
            f"{timeout:.0f}s; it is still running (stop it with `stop`).\n"
            f"{_failure_details(cfg)}"
        )


def start(cfg: LocalKafkaConfig, timeout: float = 90) -> None:
    """Start the broker (fetching jars / formatting storage if needed) and wait until it answers.

    Idempotent: returns quickly when this run_dir's broker is already running.
    """
    pid = running_pid(cfg)
    if pid is not None:
        _wait_ready(cfg, pid, timeout)
        return
    cfg.pid_file.unlink(missing_ok=True)

    if not _HEAP_RE.match(cfg.heap):
        raise LocalKafkaError(f"invalid heap size {cfg.heap!r} (expected e.g. 512m or 1g)")
    _check_java(cfg.java)
    java = shutil.which(cfg.java) or cfg.java
    if not cfg.log4j_path.is_file():
        raise LocalKafkaError(f"log4j2 config not found at {cfg.log4j_path}")
    if cfg.port == cfg.controller_port:
        raise LocalKafkaError("the Kafka port and the controller port must differ")
    for port, what, env in (
        (cfg.port, "", "DEMANDSCOPE_KAFKA_PORT"),
        (cfg.controller_port, "controller ", "DEMANDSCOPE_KAFKA_CONTROLLER_PORT"),
    ):
        if not port_is_free(cfg.host, port):
            raise LocalKafkaError(
                f"{what}port {port} is taken by another process; set {env} to a free port "
                f"(or stop whatever listens on {cfg.host}:{port})."
            )
    fetch_jars(cfg)

    run = cfg.run_path
    run.mkdir(parents=True, exist_ok=True)
    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    cfg.properties_file.write_text(_server_properties(cfg))
    _format_storage(cfg, java)

    cmd = _java_cmd(cfg, java, KAFKA_MAIN_CLASS, str(cfg.properties_file), heap=cfg.heap)
    if cfg.jmx_exporter_port is not None:
        if not cfg.jmx_exporter_jar.is_file():
            raise LocalKafkaError(
                f"the JMX exporter agent is not at {cfg.jmx_exporter_jar}; fetch it with "
                "devstack.prometheus.fetch_jmx_exporter"
            )
        listen = f"{cfg.host}:{cfg.jmx_exporter_port}"
        cmd.insert(1, f"-javaagent:{cfg.jmx_exporter_jar}={listen}:{cfg.jmx_exporter_config}")
    pid = _started.spawn(
        cmd,
        cwd=run,
        output=cfg.stdout_file,
        pid_file=cfg.pid_file,
        banner=f"\n==== starting broker {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n",
    )
    _wait_ready(cfg, pid, timeout)


def stop(cfg: LocalKafkaConfig, timeout: float = 30) -> bool:
    """Stop the broker of this run_dir: SIGTERM, then SIGKILL after ``timeout`` seconds.

    Returns True if a broker was running.
    """
    pid = running_pid(cfg)
    if pid is None:
        cfg.pid_file.unlink(missing_ok=True)
        return False

    def alive() -> bool:
        return _pid_alive(pid)

    if terminate(pid, alive, timeout, whole_group=True) and wait_while(alive, 10):
        raise LocalKafkaError(f"could not kill the Kafka broker (pid {pid})")
    _started.release(pid, timeout=1)
    cfg.pid_file.unlink(missing_ok=True)
    return True


def wipe(cfg: LocalKafkaConfig) -> None:
    """Delete the broker's data, logs and generated config (the jar cache is kept)."""
    if running_pid(cfg) is not None:
        raise LocalKafkaError("the Kafka broker is running; stop it before wiping its data")
    for d in (cfg.data_dir, cfg.logs_dir):
        shutil.rmtree(d, ignore_errors=True)
    for f in (cfg.properties_file, cfg.stdout_file, cfg.pid_file):
        f.unlink(missing_ok=True)
