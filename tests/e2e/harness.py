"""Running the three services as separate processes for end-to-end tests: one PostgreSQL
database per service (created on the test server, dropped afterwards), processes started the
way `make run` starts them (``<SVC>_LISTEN``, ``<SVC>_ADDRESS``, ``<SVC>_DATABASE_URL``, and a
development token issuer of their own) with their output in log files, stopped or restarted
one at a time, channels whose calls carry a token, and ``eventually`` for waiting on what
happens asynchronously (outbox relays, jobs, deliveries) with a deadline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import grpc
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.common.auth.tokens import StaticToken
from services.common.channels import open_channel
from services.common.health import wait_serving
from services.issuer.issuer import OPERATOR_ROLES
from services.issuer.local import LocalIssuer

SERVICES = ("notify", "inventory", "scheduler")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_issuer(var: Path) -> LocalIssuer:
    """A development issuer of the test's own (keys under ``var``, a free port), serving."""
    issuer = LocalIssuer(var / "issuer", f"127.0.0.1:{free_port()}")
    with (var / "issuer.log").open("ab") as log:
        issuer.start(log)
    return issuer


def caller_token(issuer: LocalIssuer, service: str, org: str) -> StaticToken:
    """How the tests call a service: as a day unit's operator (every person's role in
    ``org``), and notify as a hospital system (the integration role) would."""
    if service == "notify":
        return StaticToken(issuer.token("integration", org))
    return StaticToken(issuer.issuer.user_token(OPERATOR_ROLES, org))


def caller_channel(issuer: LocalIssuer, service: str, address: str, org: str) -> grpc.Channel:
    return open_channel(address, None, caller_token(issuer, service, org))


@contextmanager
def postgres_databases(
    server_url: str, services: Sequence[str] = SERVICES
) -> Iterator[dict[str, str]]:
    """A fresh database per service on the server of ``server_url`` (CREATE DATABASE needs
    AUTOCOMMIT), yielded as service → URL, dropped WITH (FORCE) afterwards: a service still
    connected (a process that would not stop) does not leave a database behind."""
    prefix = f"e2e_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []
    try:
        with admin.connect() as conn:
            for name in services:
                database = f"{prefix}_{name}"
                conn.execute(text(f'CREATE DATABASE "{database}"'))
                created.append(database)
        base = make_url(server_url)
        yield {
            name: base.set(database=f"{prefix}_{name}").render_as_string(hide_password=False)
            for name in services
        }
    finally:
        with admin.connect() as conn:
            for database in created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


class Processes:
    """The services as processes on free ports; ``env`` is what every one of them gets."""

    def __init__(
        self,
        var: Path,
        databases: Mapping[str, str],
        extra_env: Mapping[str, str] | None = None,
        services: Sequence[str] = SERVICES,
    ) -> None:
        self.var = var
        self.services = tuple(services)
        self.ports = {name: free_port() for name in self.services}
        self.issuer = start_issuer(var)
        self.env = {**os.environ, **self.issuer.service_environment()}
        for name, port in self.ports.items():
            prefix = name.upper()
            self.env[f"{prefix}_LISTEN"] = f"127.0.0.1:{port}"
            self.env[f"{prefix}_ADDRESS"] = f"127.0.0.1:{port}"
            self.env[f"{prefix}_DATABASE_URL"] = databases[name]
            self.env[f"{prefix}_SHUTDOWN_GRACE_SECONDS"] = "1"
        self.env.update(extra_env or {})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def channel(self, name: str, org: str = "e2e-org") -> grpc.Channel:
        return caller_channel(self.issuer, name, self.address(name), org)

    def log_path(self, name: str) -> Path:
        return self.var / f"{name}.log"

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_path(name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def seed_inventory(self) -> None:
        """Migrations and the product catalogue (`make seed`)."""
        subprocess.run(
            [sys.executable, "-m", "services.inventory", "seed"],
            env=self.env,
            check=True,
            capture_output=True,
        )

    def start(self, *names: str, timeout: float = 90) -> None:
        """Start them all at once, then wait until each reports SERVING."""
        for name in names:
            with self.log_path(name).open("ab") as log:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}"],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        for name in names:
            if not wait_serving(self.address(name), timeout=timeout):
                raise AssertionError(
                    f"{name} did not reach SERVING in {timeout:g} s:\n{self.log_tail(name)}"
                )

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.issuer.stop()


def eventually(
    what: str, check: Callable[[], T | None], seconds: float = 60, every: float = 0.5
) -> T:
    """Poll ``check`` until it returns something truthy (returned) or the deadline passes
    (AssertionError naming ``what``). A gRPC error counts as "not yet": a peer may be
    restarting."""
    deadline = time.monotonic() + seconds
    error: grpc.RpcError | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except grpc.RpcError as e:
            error = e
        if time.monotonic() >= deadline:
            detail = f" (last gRPC error: {error})" if error is not None else ""
            raise AssertionError(f"timed out after {seconds:g} s waiting for {what}{detail}")
        time.sleep(every)
