"""Running the three services as separate processes for end-to-end tests: one PostgreSQL
database per service (created on the test server, dropped afterwards), processes started the
way `make run` starts them (``<SVC>_LISTEN``, ``<SVC>_ADDRESS``, ``<SVC>_DATABASE_URL``, and a
development token issuer of their own) with their output in log files, stopped or restarted
one at a time, channels whose calls carry a token, and ``eventually`` for waiting on what
happens asynchronously (outbox relays, jobs, deliveries) with a deadline.

With ``tls=True`` (:class:`Pki`) every process serves TLS and requires client certificates
from a throwaway CA, calls its peers over TLS with its own certificate, and the test's
channels (health checks included) present a client certificate of the same CA."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.common.auth.tokens import StaticToken
from services.common.channels import open_channel
from services.common.health import wait_serving
from services.common.tls import ClientTls
from services.issuer.certificates import CLIENT, development_certificates
from services.issuer.issuer import OPERATOR_ROLES
from services.issuer.local import LocalIssuer
from services.launcher import free_port as free_port  # one way to pick a port, re-exported

SERVICES = ("notify", "inventory", "scheduler")
MUTUAL_TLS = "(TLS, client certificates required)"  # what a service logs when it serves mTLS
T = TypeVar("T")


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


@dataclass(frozen=True)
class Pki:
    """A throwaway CA with a certificate per service and one for the test's client
    (services/issuer/certificates.py), in ``directory`` as cert-manager lays them out."""

    directory: Path

    @classmethod
    def create(cls, var: Path) -> Pki:
        development_certificates(var / "tls")
        return cls(var / "tls")

    def environment(self, services: Sequence[str] = SERVICES) -> dict[str, str]:
        """TLS on every listener, client certificates required, peers called over TLS."""
        env = {}
        for name in services:
            files = self.directory / name
            prefix = name.upper()
            env[f"{prefix}_TLS_CERT_FILE"] = str(files / "tls.crt")
            env[f"{prefix}_TLS_KEY_FILE"] = str(files / "tls.key")
            env[f"{prefix}_TLS_CLIENT_CA_FILE"] = str(files / "ca.crt")
            env[f"{prefix}_TLS_CA_FILE"] = str(files / "ca.crt")
        return env

    def client(self, service: str) -> ClientTls:
        """The test's client certificate, checking that the server is ``service``."""
        files = self.directory / CLIENT
        return ClientTls(
            str(files / "ca.crt"), str(files / "tls.crt"), str(files / "tls.key"), service
        )


def client_tls(pki: Pki | None, service: str) -> ClientTls | None:
    return pki.client(service) if pki is not None else None


def caller_channel(
    issuer: LocalIssuer, service: str, address: str, org: str, pki: Pki | None = None
) -> grpc.Channel:
    return open_channel(address, client_tls(pki, service), caller_token(issuer, service, org))


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
    """The services as processes on free ports; ``env`` is what every one of them gets
    (with ``tls``, certificates of a :class:`Pki` of their own)."""

    def __init__(
        self,
        var: Path,
        databases: Mapping[str, str],
        extra_env: Mapping[str, str] | None = None,
        services: Sequence[str] = SERVICES,
        *,
        tls: bool = False,
    ) -> None:
        self.var = var
        self.services = tuple(services)
        self.ports = {name: free_port() for name in self.services}
        self.issuer = start_issuer(var)
        self.pki = Pki.create(var) if tls else None
        self.env = {**os.environ, **self.issuer.service_environment()}
        if self.pki is not None:
            self.env.update(self.pki.environment(self.services))
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
        return caller_channel(self.issuer, name, self.address(name), org, self.pki)

    def channel_as(self, name: str, role: str, org: str = "e2e-org") -> grpc.Channel:
        """A channel to ``name`` whose calls carry a token of ``role`` in ``org``."""
        token = StaticToken(self.issuer.token(role, org))
        return open_channel(self.address(name), client_tls(self.pki, name), token)

    def serving(self, name: str, timeout: float = 5) -> bool:
        return wait_serving(self.address(name), timeout=timeout, tls=client_tls(self.pki, name))

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
            if not self.serving(name, timeout):
                raise AssertionError(
                    f"{name} did not reach SERVING in {timeout:g} s:\n{self.log_tail(name)}"
                )
            if self.pki is not None:
                assert MUTUAL_TLS in self.log_path(name).read_text(), self.log_tail(name)

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
