"""Throwaway local PostgreSQL clusters (Debian ``postgresql`` package), for tests and benchmarks.

``start(cfg)`` creates a *fresh* cluster every time (initdb into a new unique directory, a free
port, trust auth on 127.0.0.1 only, unix socket inside the cluster dir), creates the database and
returns an SQLAlchemy URL. ``stop(cfg)`` stops it and deletes the cluster directory.

PostgreSQL refuses to run as root, so when we are root initdb/pg_ctl run as the ``postgres`` OS
user (``runuser -u postgres``) and the cluster dir is owned by it. If that user cannot traverse
``cfg.run_dir`` (or the socket path would be too long) the cluster goes to a temp dir
(``/tmp/demandscope-pg-XXXX``) instead. Each cluster is recorded in
``<run_dir>/<cluster-name>.json``; clusters whose owning process died are removed by the next
``start`` so crashed sessions do not pile up, while concurrent sessions never touch each other.

The server binaries are found, never installed here: ``python -m devstack setup`` installs the
package. Why not pytest-postgresql or testing.postgresql: see docs/development.md (in short,
they run ``pg_ctl``/``initdb`` as the calling user, which PostgreSQL refuses as root, and root
is who runs the tests and CI here). Stdlib only, environment-variable free.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from devstack.process import (
    pick_free_port,
    pid_exists,
    read_pid,
    run_to_completion,
    tail,
)

__all__ = [
    "LocalPostgresConfig",
    "LocalPostgresError",
    "PostgresInstance",
    "find_bin_dir",
    "start",
    "stop",
]

_OS_USER = "postgres"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes incl. ".s.PGSQL.<port>"


class LocalPostgresError(Exception):
    """Expected failure with a human-readable message (no traceback needed)."""


@dataclass(frozen=True)
class PostgresInstance:
    name: str
    cluster_dir: Path
    bin_dir: Path
    port: int
    host: str
    database: str
    user: str
    owner_pid: int
    url: str

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.cluster_dir / "sock"

    @property
    def log_file(self) -> Path:
        return self.cluster_dir / "postgres.log"


@dataclass
class LocalPostgresConfig:
    root: Path
    run_dir: Path | None = None  # default: <root>/.run/postgres
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    database: str = "demandscope"
    user: str = "postgres"  # database role (trust auth, no password)
    driver: str = "postgresql+asyncpg"
    # fast-but-unsafe settings: throwaway test data only
    settings: dict[str, str] = field(
        default_factory=lambda: {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "64MB",
            "max_connections": "100",
            "log_min_messages": "warning",
            "log_statement": "none",
        }
    )
    instance: PostgresInstance | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        if self.run_dir is None:
            self.run_dir = self.root / ".run" / "postgres"
        self.run_dir = Path(self.run_dir).resolve()

    @property
    def run_path(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir


# ---------------------------------------------------------------------------------------------
# binaries
# ---------------------------------------------------------------------------------------------


def _version_key(path: str) -> tuple[int, ...]:
    m = re.search(r"/postgresql/([0-9.]+)/bin", path)
    return tuple(int(p) for p in m.group(1).split(".")) if m else (0,)


NOT_INSTALLED = (
    "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, no initdb on "
    "PATH). Install them with `python -m devstack setup` (`make setup`), which installs Debian's "
    "`postgresql` package."
)


def find_bin_dir() -> Path | None:
    """The directory of the newest installed ``initdb``/``pg_ctl``/``postgres``; None if absent."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    for initdb in reversed(candidates):
        bin_dir = Path(initdb).parent
        if (bin_dir / "pg_ctl").exists() and (bin_dir / "postgres").exists():
            return bin_dir
    on_path = shutil.which("initdb")
    if on_path is not None:
        bin_dir = Path(on_path).resolve().parent
        if (bin_dir / "pg_ctl").exists():
            return bin_dir
    return None


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _as_root() -> bool:
    return os.geteuid() == 0


def _run(
    bin_dir: Path, tool: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    cmd = [str(bin_dir / tool), *args]
    if _as_root():
        cmd = ["runuser", "-u", _OS_USER, "--", *cmd]
    try:
        return run_to_completion(cmd, cwd="/", timeout=timeout, new_session=True)
    except subprocess.TimeoutExpired as exc:
        raise LocalPostgresError(f"`{' '.join(cmd)}` timed out after {timeout:.0f}s") from exc


def _postgres_ids() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(_OS_USER)
    except KeyError as exc:
        raise LocalPostgresError(
            f"running as root but there is no '{_OS_USER}' OS user to run PostgreSQL as "
            "(it comes with the Debian postgresql package)"
        ) from exc
    return pw.pw_uid, pw.pw_gid


def _usable_parent(run_dir: Path) -> Path:
    """Directory in which the cluster dir is created: run_dir if usable, else the temp dir."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if len(str(run_dir)) + 40 > _MAX_SOCKET_PATH:
        return Path(tempfile.gettempdir())
    if _as_root():
        probe = subprocess.run(
            ["runuser", "-u", _OS_USER, "--", "test", "-x", str(run_dir)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        if probe.returncode != 0:
            return Path(tempfile.gettempdir())
    return run_dir


def _postmaster_pid(inst: PostgresInstance) -> int | None:
    return read_pid(inst.data_dir / "postmaster.pid")


def _state_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.json"


def _save(run_dir: Path, inst: PostgresInstance) -> None:
    data = {
        "name": inst.name,
        "cluster_dir": str(inst.cluster_dir),
        "bin_dir": str(inst.bin_dir),
        "port": inst.port,
        "host": inst.host,
        "database": inst.database,
        "user": inst.user,
        "owner_pid": inst.owner_pid,
        "url": inst.url,
    }
    _state_file(run_dir, inst.name).write_text(json.dumps(data, indent=2) + "\n")


def _load_all(run_dir: Path) -> list[PostgresInstance]:
    out: list[PostgresInstance] = []
    for f in sorted(run_dir.glob("demandscope-pg-*.json")):
        try:
            d = json.loads(f.read_text())
            out.append(
                PostgresInstance(
                    name=str(d["name"]),
                    cluster_dir=Path(d["cluster_dir"]),
                    bin_dir=Path(d["bin_dir"]),
                    port=int(d["port"]),
                    host=str(d["host"]),
                    database=str(d["database"]),
                    user=str(d["user"]),
                    owner_pid=int(d["owner_pid"]),
                    url=str(d["url"]),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            f.unlink(missing_ok=True)
    return out


def _destroy(run_dir: Path, inst: PostgresInstance, timeout: float = 30) -> None:
    if inst.data_dir.is_dir() and (inst.data_dir / "postmaster.pid").exists():
        pg_ctl_args = ("-D", str(inst.data_dir), "-w", "-t", str(int(timeout)))
        res = _run(inst.bin_dir, "pg_ctl", "stop", "-m", "fast", *pg_ctl_args, timeout=timeout + 5)
        if res.returncode != 0:
            _run(inst.bin_dir, "pg_ctl", "stop", "-m", "immediate", *pg_ctl_args, timeout=20)
        pid = _postmaster_pid(inst)
        if pid is not None and pid_exists(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(inst.cluster_dir, ignore_errors=True)
    _state_file(run_dir, inst.name).unlink(missing_ok=True)


def _reap_stale(run_dir: Path) -> None:
    for inst in _load_all(run_dir):
        if inst.owner_pid != os.getpid() and not pid_exists(inst.owner_pid):
            _destroy(run_dir, inst)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def start(cfg: LocalPostgresConfig, timeout: float = 60) -> str:
    """Create and start a fresh throwaway cluster; return its SQLAlchemy URL.

    If ``cfg`` already has a running cluster (started by this process), its URL is returned.
    """
    if cfg.instance is not None and _postmaster_pid(cfg.instance) is not None:
        return cfg.instance.url
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise LocalPostgresError(NOT_INSTALLED)
    run_dir = cfg.run_path
    run_dir.mkdir(parents=True, exist_ok=True)
    _reap_stale(run_dir)

    parent = _usable_parent(run_dir)
    cluster_dir = Path(tempfile.mkdtemp(prefix="demandscope-pg-", dir=parent))
    name = cluster_dir.name
    data_dir, sock_dir = cluster_dir / "data", cluster_dir / "sock"
    sock_dir.mkdir()
    if _as_root():
        uid, gid = _postgres_ids()
        for p in (cluster_dir, sock_dir):
            os.chown(p, uid, gid)
    os.chmod(cluster_dir, 0o700)

    port = cfg.port or pick_free_port(cfg.host)
    inst = PostgresInstance(
        name=name,
        cluster_dir=cluster_dir,
        bin_dir=bin_dir,
        port=port,
        host=cfg.host,
        database=cfg.database,
        user=cfg.user,
        owner_pid=os.getpid(),
        url=f"{cfg.driver}://{cfg.user}@{cfg.host}:{port}/{cfg.database}",
    )
    _save(run_dir, inst)  # recorded first so a crash mid-way is cleaned up later
    try:
        res = _run(
            bin_dir,
            "initdb",
            "-D",
            str(data_dir),
            "-U",
            cfg.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            timeout=timeout,
        )
        if res.returncode != 0:
            raise LocalPostgresError(f"initdb failed:\n{res.stdout[-3000:]}")
        conf = {
            **cfg.settings,
            "listen_addresses": f"'{cfg.host}'",
            "port": str(port),
            "unix_socket_directories": f"'{sock_dir}'",
        }
        with open(data_dir / "postgresql.auto.conf", "a") as fh:
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")
        # trust on 127.0.0.1 (and the private socket) only
        (data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        )
        res = _run(
            bin_dir,
            "pg_ctl",
            "start",
            "-D",
            str(data_dir),
            "-l",
            str(inst.log_file),
            "-w",
            "-t",
            str(int(timeout)),
            timeout=timeout + 10,
        )
        if res.returncode != 0:
            hint = ""
            if "could not bind" in tail(inst.log_file) or "in use" in tail(inst.log_file):
                hint = f"\nport {port} is taken by another process; use another port (0 = any)."
            raise LocalPostgresError(
                f"PostgreSQL failed to start (pg_ctl exit {res.returncode}).{hint}\n"
                f"{res.stdout[-2000:]}\n--- {inst.log_file} ---\n{tail(inst.log_file)}"
            )
        res = _run(
            bin_dir,
            "createdb",
            "-h",
            str(sock_dir),
            "-p",
            str(port),
            "-U",
            cfg.user,
            cfg.database,
            timeout=60,
        )
        if res.returncode != 0:
            raise LocalPostgresError(f"createdb {cfg.database} failed:\n{res.stdout[-2000:]}")
    except BaseException:
        _destroy(run_dir, inst)
        raise
    cfg.instance = inst
    return inst.url


def stop(cfg: LocalPostgresConfig, timeout: float = 30) -> None:
    """Stop and delete the cluster started with ``cfg``.

    With a config that did not start one itself (e.g. another process), every cluster recorded
    in ``cfg.run_dir`` is stopped and removed.
    """
    run_dir = cfg.run_path
    if cfg.instance is not None:
        _destroy(run_dir, cfg.instance, timeout)
        cfg.instance = None
        return
    if run_dir.is_dir():
        for inst in _load_all(run_dir):
            _destroy(run_dir, inst, timeout)
