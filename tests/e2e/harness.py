"""Running the services as separate processes for end-to-end tests, the one harness of the
scenario, fault, restart and replica tests: one PostgreSQL database per service (created on the
test server, dropped afterwards), processes started the way `make run` starts them
(``<SVC>_LISTEN``, ``<SVC>_ADDRESS``, ``<SVC>_DATABASE_URL``, and a development token issuer of
their own) with their output in log files, several replicas of a service if a test wants them
(:class:`Fleet`), stopped or restarted one at a time, channels whose calls carry a token,
``eventually`` and ``holds_within`` for waiting on what happens asynchronously (outbox relays,
jobs, deliveries) with a deadline, a :class:`Clinic` made through the APIs (demo/builder.py),
and readers of what the services hold (``notifications``, ``query``, ``undelivered``).

With ``tls=True`` (:class:`Pki`) every process serves TLS and requires client certificates
from a throwaway CA, calls its peers over TLS with its own certificate, and the test's
channels (health checks included) present a client certificate of the same CA."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from demo.builder import ALL_DAYS, Builder
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
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


class Fleet:
    """Service processes, each a named instance (``scheduler``, or ``scheduler-2`` for a second
    replica) of a service with its own free port and log file under ``var``; ``env`` is what
    every instance starts with (with ``tls``: TLS and client certificates everywhere, a
    :class:`Pki` of their own). ``databases`` (service → URL) gives each service its database
    and every service its peers' addresses; without it the test sets ``env`` itself. Calls go
    as ``org``'s operator (:func:`caller_token`) unless a test says otherwise. With ``module``
    each instance runs as ``python -m <module> <service>`` (tests/e2e/moved_clock.py) instead
    of ``python -m services.<service>``. Stopped with SIGTERM (SIGKILL after 20 s) by
    ``stop_all``."""

    def __init__(
        self,
        var: Path,
        databases: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        *,
        tls: bool = False,
        org: str = "org",
        module: str = "",
    ) -> None:
        self.var = var
        self.org = org
        self.module = module
        self.issuer = start_issuer(var)
        self.pki = Pki.create(var) if tls else None
        self.env: dict[str, str] = {**os.environ, **self.issuer.service_environment()}
        if self.pki is not None:
            self.env.update(self.pki.environment())
        self.ports: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for name, url in (databases or {}).items():
            self.env[f"{name.upper()}_ADDRESS"] = self.address(name)
            self.env[f"{name.upper()}_DATABASE_URL"] = url
        self.env.update(extra_env or {})

    @property
    def services(self) -> tuple[str, ...]:
        """The instances started so far, in the order they were first started."""
        return tuple(self.procs)

    def address(self, name: str) -> str:
        if name not in self.ports:
            self.ports[name] = free_port()
        return f"127.0.0.1:{self.ports[name]}"

    def channel(self, name: str, org: str | None = None, *, start: bool = False) -> grpc.Channel:
        """A channel to instance ``name`` (started first with ``start``) whose calls carry a
        test caller's token of ``org`` (:func:`caller_token`)."""
        if start:
            self.start(name)
        service = name.split("-")[0]
        return caller_channel(self.issuer, service, self.address(name), org or self.org, self.pki)

    def channel_as(self, name: str, role: str, org: str | None = None) -> grpc.Channel:
        """A channel to ``name`` whose calls carry a token of ``role`` in ``org``."""
        token = StaticToken(self.issuer.token(role, org or self.org))
        return open_channel(self.address(name), self.client_tls(name), token)

    def client_tls(self, name: str) -> ClientTls | None:
        """How the test reaches instance ``name`` (health checks too): None for plaintext."""
        return client_tls(self.pki, name.split("-")[0])

    @property
    def operator(self) -> StaticToken:
        """The day unit operator's token (centre.load_notify makes its subscriber with it)."""
        return caller_token(self.issuer, "scheduler", self.org)

    def start(self, *names: str, wait: bool = True, **env: str) -> None:
        """Start the instances ``names`` at once (``env`` added to theirs), then, with
        ``wait``, assert each reaches SERVING (and serves mutual TLS when it should)."""
        for name in names:
            prefix = name.split("-")[0].upper()
            full = {
                **self.env,
                f"{prefix}_LISTEN": self.address(name),
                f"{prefix}_SHUTDOWN_GRACE_SECONDS": "1",
                **env,
            }
            with self.log_path(name).open("ab") as log:
                service = name.split("-")[0]
                command = [self.module, service] if self.module else [f"services.{service}"]
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", *command],
                    env=full,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        for name in names if wait else ():
            assert self.serving(name), f"{name} is not SERVING:\n{self.log_tail(name)}"
            assert self.pki is None or MUTUAL_TLS in self.log(name), self.log_tail(name)

    def serving(self, name: str, timeout: float = 120) -> bool:
        """True once the instance reports SERVING; False if it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                return False
            if wait_serving(self.address(name), timeout=2, tls=self.client_tls(name)):
                return True
        return False

    def run(self, *args: str, **env: str) -> None:
        """A one-shot command (``services.inventory seed``) with the fleet's environment."""
        subprocess.run(
            [sys.executable, "-m", *args],
            env={**self.env, **env},
            check=True,
            capture_output=True,
            timeout=300,
        )

    def log_path(self, name: str) -> Path:
        return self.var / f"{name}.log"

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, name: str, lines: int = 40) -> str:
        return "\n".join(self.log(name).splitlines()[-lines:])

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def stop_all(self) -> dict[str, int]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {name: self.stop(name) for name in self.procs}
        self.issuer.stop()
        return codes

    def crashed_threads(self) -> dict[str, list[str]]:
        """Background threads that died of an exception, per instance: "<thread>: <exception>".
        A dead APScheduler, relay or dispatcher thread stops that replica's work for good
        without failing a single call, so only the log tells."""
        found: dict[str, list[str]] = {}
        for name in self.procs:
            lines = self.log(name).splitlines()
            for i, line in enumerate(lines):
                if not line.startswith("Exception in thread "):
                    continue
                thread = line.removeprefix("Exception in thread ").rstrip(":")
                error = next(
                    (
                        x
                        for x in lines[i + 1 :]
                        if x and not x[0].isspace() and not x.startswith("Traceback")
                    ),
                    "?",
                )
                found.setdefault(name, []).append(f"{thread}: {error}")
        return found

    def assert_no_crashed_threads(self) -> None:
        """No background thread died (APScheduler's among them: services/common/jobstore.py
        keeps it alive when the other replica removed a shared one-off job first, or the
        database goes away mid-round). Call it last, once everything else was checked."""
        assert self.crashed_threads() == {}


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


def holds_within(check: Callable[[], bool], seconds: float = 60) -> bool:
    """Whether ``check`` holds within ``seconds`` (polled; an RpcError counts as "not yet"),
    for ``assert holds_within(...), what_was_seen``. Deadlines are generous: two shared cores
    run several services and PostgreSQL."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return True
        except grpc.RpcError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


PRODUCT = "gammagard-liquid"  # 10 g vials; 70 kg × 1 g/kg = 70 g = 7 vials


@dataclass
class Clinic:
    """A site open every day 08:00–18:00 (UTC, no nurse model) with chairs, the same site as a
    stock site at the inventory with one big lot of Gammagard Liquid, and therapy plans. Request
    ids are the builder's labels themselves (``patient-<key>``, ``receive-<lot>``), so making
    the same thing again is a retry the services answer with the first result."""

    scheduler: scheduler_pb2_grpc.SchedulerServiceStub
    inventory: inventory_pb2_grpc.InventoryServiceStub
    site_id: str = ""
    chair_ids: list[str] = field(default_factory=list)
    plans: list[pb.TherapyPlan] = field(default_factory=list)

    @property
    def build(self) -> Builder:
        return Builder(self.scheduler, self.inventory, ids=lambda label: label)

    @classmethod
    def open(
        cls,
        scheduler: scheduler_pb2_grpc.SchedulerServiceStub,
        inventory: inventory_pb2_grpc.InventoryServiceStub,
        *,
        chairs: int,
        vials: int = 500,
    ) -> Clinic:
        clinic = cls(scheduler, inventory)
        site = clinic.build.site(tz="UTC", days=ALL_DAYS)
        clinic.site_id = site.id
        clinic.chair_ids = [c.id for c in clinic.build.chairs(site.id, chairs)]
        clinic.build.stock_site(site.id, site.time_zone)
        clinic.receive("MAIN", vials, days=400)
        return clinic

    def receive(
        self,
        lot_number: str,
        vials: int,
        *,
        days: int,
        via: inventory_pb2_grpc.InventoryServiceStub | None = None,
    ) -> inv.Lot:
        """A lot expiring in ``days``; ``via``: another inventory replica to receive it through."""
        expiry = dt.date.today() + dt.timedelta(days=days)
        return self.build.receive(self.site_id, PRODUCT, lot_number, expiry, vials, via=via)

    def add_plan(
        self,
        key: str,
        start: dt.date,
        via: scheduler_pb2_grpc.SchedulerServiceStub | None = None,
    ) -> pb.TherapyPlan:
        """A patient (70 kg) and a 1 g/kg IV plan every 28 days from ``start``: due at once
        (INFUSION_DUE) when ``start`` is at most 4 days ahead (the window opens 4 days early).
        ``via``: another scheduler replica to make them through."""
        _, plan = self.build.enrol(
            f"MRN-{key}",
            self.site_id,
            PRODUCT,
            start,
            measured_on=dt.date.today() - dt.timedelta(days=30),
            height="170",
            given="Pat",
            family=key,
            born=dt.date(1970, 1, 1),
            key=key,
            via=via,
        )
        self.plans.append(plan)
        return plan

    def reservations(self) -> list[inv.Reservation]:
        request = inv.ListReservationsRequest(site_id=self.site_id, page_size=100)
        return every_page(self.inventory.ListReservations, request, "reservations")

    def movements(self) -> list[inv.StockMovement]:
        request = inv.ListMovementsRequest(site_id=self.site_id, page_size=100)
        return every_page(self.inventory.ListMovements, request, "movements")


def every_page(call: Callable[[Any], Any], request: Any, field: str) -> list[Any]:
    """Every item of a List call's ``field``, following ``next_page_token`` to the last page
    (``request`` carries the filters and the page size)."""
    found: list[Any] = []
    while True:
        page = call(request)
        found += getattr(page, field)
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token


def notifications(
    stub: notify_pb2_grpc.NotifyServiceStub, topic: int = npb.TOPIC_UNSPECIFIED
) -> list[npb.Notification]:
    """Every notification of a topic at notify (all pages; all topics by default)."""
    request = npb.ListNotificationsRequest(topic=topic, page_size=100)  # type: ignore[arg-type]
    return every_page(stub.ListNotifications, request, "notifications")


def query(url: str, sql: str, **params: object) -> list[Any]:
    """The rows of one statement on a service's database, read from outside the service."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def undelivered(url: str, table: str) -> int:
    """Rows of an outbox table not delivered yet (dead letters included)."""
    ((count,),) = query(url, f"SELECT count(*) FROM {table} WHERE delivered_at IS NULL")
    return int(count)
