"""A private, throwaway PostgreSQL cluster for fault tests that must restart the server
(PostgreSQL restarted mid-run). The shared server (TEST_DATABASE_URL) belongs to other test
runs and to CI and must never be restarted, so these tests get their own: ``initdb`` into a
temporary directory, ``pg_ctl`` on a free port on 127.0.0.1 with the unix socket in the same
directory, trust authentication, and ``stop`` / ``start`` / ``restart`` for the test to call.

PostgreSQL refuses to run as root, so when the tests run as root the binaries run as the
``postgres`` system user through ``runuser``. The fixture skips, saying why, when the server
binaries (``PG_BINDIR``, else /usr/lib/postgresql/<newest>/bin), the ``postgres`` user or a way
to become it is missing. Use it with ``pytest_plugins = ["tests.e2e.pg_cluster"]``.

Also here, shared by the replica and fault tests: ``Fleet`` (named service processes with their
ports and logs), ``Clinic`` (a site, chairs, stock and due plans made through the APIs) and
small readers (``eventually``, ``notifications``, ``undelivered``).
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.dayofweek_pb2 import DayOfWeek
from google.type.money_pb2 import Money
from google.type.timeofday_pb2 import TimeOfDay
from sqlalchemy import create_engine, text

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.auth.tokens import StaticToken
from services.common.health import wait_serving
from services.common.tls import ClientTls
from tests.e2e.harness import (
    MUTUAL_TLS,
    Pki,
    caller_channel,
    caller_token,
    client_tls,
    free_port,
    start_issuer,
)

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


# --- service processes and a clinic to drive them (shared by the replica and fault tests) -------


def eventually(check: Callable[[], bool], seconds: float = 60) -> bool:
    """Poll ``check`` (an RpcError counts as "not yet") until it holds or time runs out. The
    deadline is generous: two shared cores run several services and PostgreSQL."""
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


class Fleet:
    """Service processes, each a named instance (``scheduler-2``) of a service with its own port
    and log file under ``var``; ``env`` is the environment every instance starts with (with
    ``tls``: TLS and client certificates everywhere, harness.Pki). Stopped with SIGTERM
    (SIGKILL after 20 s) by ``stop_all``."""

    def __init__(self, var: Path, *, tls: bool = False) -> None:
        self.var = var
        self.issuer = start_issuer(var)
        self.pki = Pki.create(var) if tls else None
        self.env: dict[str, str] = {**os.environ, **self.issuer.service_environment()}
        if self.pki is not None:
            self.env.update(self.pki.environment())
        self.ports: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def address(self, name: str) -> str:
        if name not in self.ports:
            self.ports[name] = free_port()
        return f"127.0.0.1:{self.ports[name]}"

    def channel(self, name: str, *, start: bool = False, org: str = "org") -> grpc.Channel:
        """A channel to instance ``name`` (``scheduler-2``, started first with ``start``)
        whose calls carry a test caller's token of ``org`` (harness.caller_token)."""
        address = self.start(name) if start else self.address(name)
        return caller_channel(self.issuer, name.split("-")[0], address, org, self.pki)

    def client_tls(self, name: str) -> ClientTls | None:
        """How the test reaches instance ``name`` (health checks too): None for plaintext."""
        return client_tls(self.pki, name.split("-")[0])

    @property
    def operator(self) -> StaticToken:
        """The day unit operator's token (demo.load_notify makes its subscriber with it)."""
        return caller_token(self.issuer, "scheduler", "org")

    def start(self, name: str, *, wait: bool = True, **env: str) -> str:
        service = name.split("-")[0]
        prefix = service.upper()
        address = self.address(name)
        full = {
            **self.env,
            f"{prefix}_LISTEN": address,
            f"{prefix}_SHUTDOWN_GRACE_SECONDS": "1",
            **env,
        }
        with (self.var / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{service}"],
                env=full,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            assert self.serving(name), self.log(name)[-3000:]
            assert self.pki is None or MUTUAL_TLS in self.log(name), self.log(name)[-3000:]
        return address

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

    def log(self, name: str) -> str:
        path = self.var / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

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


ALL_DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
PRODUCT = "gammagard-liquid"  # 10 g vials; 70 kg × 1 g/kg = 70 g = 7 vials


def pb_date(day: dt.date) -> Date:
    return Date(year=day.year, month=day.month, day=day.day)


@dataclass
class Clinic:
    """A site open every day 08:00–18:00 (UTC, no nurse model) with chairs, the same site as a
    stock site at the inventory with one big lot of Gammagard Liquid, and therapy plans."""

    scheduler: scheduler_pb2_grpc.SchedulerServiceStub
    inventory: inventory_pb2_grpc.InventoryServiceStub
    site_id: str = ""
    chair_ids: list[str] = field(default_factory=list)
    plans: list[pb.TherapyPlan] = field(default_factory=list)

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
        clinic.site_id = scheduler.CreateSite(
            pb.CreateSiteRequest(
                request_id="site",
                site=pb.Site(
                    organisation_id="",  # the caller's own organisation
                    display_name="Day unit",
                    time_zone="UTC",
                    opening_hours=[
                        pb.OpeningHours(
                            day=DayOfWeek.Value(d),
                            open=TimeOfDay(hours=8),
                            close=TimeOfDay(hours=18),
                        )
                        for d in ALL_DAYS
                    ],
                ),
            )
        ).site.id
        clinic.chair_ids = [
            scheduler.CreateChair(
                pb.CreateChairRequest(
                    request_id=f"chair-{i}",
                    chair=pb.Chair(site_id=clinic.site_id, display_name=f"Chair {i}", active=True),
                )
            ).chair.id
            for i in range(chairs)
        ]
        inventory.CreateStockSite(
            inv.CreateStockSiteRequest(
                request_id="stock-site",
                site=inv.StockSite(id=clinic.site_id, display_name="Pharmacy", time_zone="UTC"),
            )
        )
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
        lot: inv.Lot = (
            (via or self.inventory)
            .ReceiveStock(
                inv.ReceiveStockRequest(
                    request_id=f"receive-{lot_number}",
                    site_id=self.site_id,
                    product_id=PRODUCT,
                    presentation_grams="10",
                    lot_number=lot_number,
                    expiry_date=pb_date(expiry),
                    vials=vials,
                    # £34/g × 10 g (docs/clinical-rules.md#cost)
                    unit_cost=Money(currency_code="GBP", units=340),
                )
            )
            .lot
        )
        return lot

    def add_plan(
        self,
        key: str,
        start: dt.date,
        via: scheduler_pb2_grpc.SchedulerServiceStub | None = None,
    ) -> pb.TherapyPlan:
        """A patient (70 kg) and a 1 g/kg IV plan every 28 days from ``start``: due at once
        (INFUSION_DUE) when ``start`` is at most 4 days ahead (the window opens 4 days early).
        ``via``: another scheduler replica to make them through."""
        scheduler = via or self.scheduler
        patient = scheduler.CreatePatient(
            pb.CreatePatientRequest(
                request_id=f"patient-{key}",
                patient=pb.Patient(
                    organisation_id="",  # the caller's own organisation
                    mrn=f"MRN-{key}",
                    given_name="Pat",
                    family_name=key,
                    birth_date=Date(year=1970, month=1, day=1),
                    sex_at_birth=pb.SEX_AT_BIRTH_FEMALE,
                ),
            )
        ).patient
        scheduler.RecordMeasurement(
            pb.RecordMeasurementRequest(
                request_id=f"measure-{key}",
                measurement=pb.Measurement(
                    patient_id=patient.id,
                    measured_on=pb_date(dt.date.today() - dt.timedelta(days=30)),
                    weight_kg="70",
                    height_cm="170",
                ),
            )
        )
        plan: pb.TherapyPlan = scheduler.CreateTherapyPlan(
            pb.CreateTherapyPlanRequest(
                request_id=f"plan-{key}",
                therapy_plan=pb.TherapyPlan(
                    patient_id=patient.id,
                    site_id=self.site_id,
                    indication=pb.INDICATION_MMN,
                    route=pb.ROUTE_IV,
                    product_id=PRODUCT,
                    dose_basis=pb.DOSE_BASIS_G_PER_KG,
                    maintenance_dose="1",
                    interval_days=28,
                    start_date=pb_date(start),
                ),
            )
        ).therapy_plan
        self.plans.append(plan)
        return plan

    def reservations(self) -> list[inv.Reservation]:
        found: list[inv.Reservation] = []
        token = ""
        while True:
            page = self.inventory.ListReservations(
                inv.ListReservationsRequest(site_id=self.site_id, page_size=100, page_token=token)
            )
            found += page.reservations
            token = page.next_page_token
            if not token:
                return found

    def movements(self) -> list[inv.StockMovement]:
        found: list[inv.StockMovement] = []
        token = ""
        while True:
            page = self.inventory.ListMovements(
                inv.ListMovementsRequest(site_id=self.site_id, page_size=100, page_token=token)
            )
            found += page.movements
            token = page.next_page_token
            if not token:
                return found


def notifications(stub: notify_pb2_grpc.NotifyServiceStub, topic: int) -> list[npb.Notification]:
    """Every notification of a topic at notify (all pages)."""
    found: list[npb.Notification] = []
    token = ""
    while True:
        page = stub.ListNotifications(
            npb.ListNotificationsRequest(topic=topic, page_size=100, page_token=token)  # type: ignore[arg-type]
        )
        found += page.notifications
        token = page.next_page_token
        if not token:
            return found


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
