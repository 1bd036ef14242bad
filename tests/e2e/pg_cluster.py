"""A private, throwaway PostgreSQL cluster for fault tests that must restart the server
(PostgreSQL restarted mid-run). The shared server (TEST_DATABASE_URL) belongs to other test
runs and to CI and must never be restarted, so these tests get their own: ``initdb`` into a
temporary directory, ``pg_ctl`` on a free port on 127.0.0.1 with the unix socket in the same
directory, trust authentication, and ``stop`` / ``start`` / ``restart`` for the test to call.

PostgreSQL refuses to run as root, so when the tests run as root the binaries run as the
``postgres`` system user through ``runuser``. The fixture skips, saying why, when the server
binaries (``PG_BINDIR``, else /usr/lib/postgresql/<newest>/bin), the ``postgres`` user or a way
to become it is missing. Use it with ``pytest_plugins = ["tests.e2e.pg_cluster"]``.

The service processes the tests run on it, and what they drive them with, are in harness.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from services.launcher import free_port

OS_USER = "postgres"
START_TIMEOUT_SECONDS = 60


def _bindir() -> Path | None:
    explicit = os.environ.get("PG_BINDIR")
    candidates = [Path(explicit)] if explicit else []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = [p for p in root.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: -int(p.name))]
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def unavailable_reason() -> str | None:
    """Why a private cluster cannot be made here, or None."""
    if _bindir() is None:
        return (
            "private PostgreSQL cluster: no initdb/pg_ctl (set PG_BINDIR or install the "
            "postgresql server package)"
        )
    if os.name != "posix":
        return "private PostgreSQL cluster: needs a POSIX system"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return f"private PostgreSQL cluster: running as root and no {OS_USER!r} user to run as"
        if shutil.which("runuser") is None:
            return "private PostgreSQL cluster: running as root and no runuser to switch user"
        probe = subprocess.run(
            ["runuser", "-u", OS_USER, "--", "true"], capture_output=True, text=True
        )
        if probe.returncode != 0:
            return (
                f"private PostgreSQL cluster: cannot switch to the {OS_USER!r} user "
                f"(runuser: {probe.stderr.strip() or probe.returncode})"
            )
    return None


@dataclass
class PgCluster:
    bindir: Path
    root: Path  # owned by the cluster's OS user: data/, the socket and server.log
    port: int
    as_user: list[str] = field(default_factory=list)  # ["runuser", "-u", "postgres", "--"]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres", **query: str) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}" + (
            f"?{params}" if params else ""
        )

    def _run(self, *args: str, timeout: float = START_TIMEOUT_SECONDS + 30) -> str:
        done = subprocess.run(
            [*self.as_user, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,  # the OS user may not be able to read the caller's directory
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                f"--- server log ---\n{self.server_log()}"
            )
        return done.stdout

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )

    def start(self) -> None:
        """Start and wait until the server accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.root} -c max_connections=200 -c fsync=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "-o",
            options,
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast``: roll back open transactions and cut every client, then a clean shutdown;
        ``immediate``: kill the server like a crash (recovery from the WAL on the next start)."""
        self._run(
            str(self.bindir / "pg_ctl"),
            "stop",
            "-D",
            str(self.data),
            "-m",
            mode,
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
        )

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        done = subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "status", "-D", str(self.data)],
            capture_output=True,
            cwd=self.root,
        )
        return done.returncode == 0

    def create_database(self, name: str) -> str:
        """A database on the cluster; returns its SQLAlchemy URL."""
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A fresh private cluster, started; stopped and deleted afterwards."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    bindir = _bindir()
    assert bindir is not None
    # /tmp: short enough for the unix socket's path limit, and traversable by the OS user
    root = Path(
        tempfile.mkdtemp(prefix="pg-cluster-", dir="/tmp" if Path("/tmp").is_dir() else None)
    )
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam(OS_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", OS_USER, "--"]
    root.chmod(0o700)
    cluster = PgCluster(bindir, root, free_port(), as_user)
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        try:
            if cluster.running():
                cluster.stop("immediate")
        finally:
            shutil.rmtree(root, ignore_errors=True)
