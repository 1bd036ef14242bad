"""Every service restarts on its own data, on SQLite and on PostgreSQL.

The three services first run on fresh databases and fill them the way `make run` and a day's
use do (the catalogue and demo stock commands, the demo centre through the APIs, a clinic of
our own): stored jobs of every kind (the inventory's daily check per stock site, refresh and
start-up check; the scheduler's scans and forecast pushes; and one a retired release left
behind, which raises every time it runs), appointments with reminders still to come, outbox
rows (some undelivered: notify is stopped first), notify deliveries done and pending (a webhook
that does not answer yet), idempotency keys. Then:

1. SIGTERM to all, and all three start again at once;
2. SIGKILL to all (mid-job), and they start again at once; on PostgreSQL as two replicas of
   each service, all six at once.

After each start every instance must report SERVING, answer a read and a write (and a retried
write with its first result), and run its jobs for a minute, with effects we check: plans made
now raise INFUSION_DUE (the scheduler's scan), lots received now raise LOT_EXPIRING (the
inventory's start-up check), sites made now get their daily job (the inventory's refresh),
notify delivers all of it (its dispatcher), both outboxes drain, each scheduler ran its scan
job every second and each inventory its refresh every two. At the end the reminder that came
due, the daily check that came due and every webhook delivery held since the first run have
all been carried out, and no background thread died. Job periods are shortened through the
services' own settings (SCHEDULER_JOBS_INTERVAL_SECONDS, INVENTORY_JOBS_INTERVAL_SECONDS,
NOTIFY_DISPATCH_INTERVAL_SECONDS...).
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from apscheduler.triggers.interval import IntervalTrigger
from google.type.timeofday_pb2 import TimeOfDay
from sqlalchemy import Table

from demo import centre
from demo.builder import pb_date
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common import jobstore
from services.common.db import Database
from services.common.health import wait_serving
from services.inventory.store.models import job_table as inventory_jobs
from services.scheduler.store.models import job_table as scheduler_jobs
from tests.e2e.harness import (
    SERVICES,
    Clinic,
    Fleet,
    caller_token,
    free_port,
    holds_within,
    notifications,
    postgres_databases,
    query,
    undelivered,
)
from tests.e2e.sinks import WebhookSink

# about three minutes per database: a minute of serving after each of the two restarts
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

SERVE_SECONDS = 60  # each start serves (and runs its jobs) at least this long
SCAN_EVERY = "0:00:01"  # SCHEDULER_JOBS_INTERVAL_SECONDS=1, as APScheduler logs the trigger
REFRESH_EVERY = "0:00:02"  # INVENTORY_JOBS_INTERVAL_SECONDS=2
JOB_ENV = {
    "SCHEDULER_JOBS_INTERVAL_SECONDS": "1",
    "INVENTORY_JOBS_INTERVAL_SECONDS": "2",
    "NOTIFY_DISPATCH_INTERVAL_SECONDS": "0.5",
    # the webhook that does not answer yet: retried every 2 s at most, never dead-lettered
    "NOTIFY_RETRY_BASE_SECONDS": "1",
    "NOTIFY_RETRY_MAX_SECONDS": "2",
    "NOTIFY_MAX_ATTEMPTS": "1000",
    "NOTIFY_LEASE_SECONDS": "5",  # a delivery SIGKILL cut mid-send is taken up again soon
    "NOTIFY_WEBHOOK_ALLOW_LIST": "127.0.0.1",  # the test's webhook (loopback is refused else)
    # a row refused while notify restarts is tried again within 2 s, not after minutes of
    # doubling waits (the reminder due mid-restart must arrive within the test's deadline)
    "SCHEDULER_RELAY_RETRY_MAX_SECONDS": "2",
    "INVENTORY_RELAY_RETRY_MAX_SECONDS": "2",
}
HOOK_SECRET = "whsec-restarts"
DUE = dt.date.today() + dt.timedelta(days=3)  # a plan starting then is due at once
BOOKED_AT = dt.datetime.combine(DUE, dt.time(10), tzinfo=dt.UTC)  # the clinic is on UTC


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """One database per service: SQLite files, or fresh PostgreSQL databases."""
    if request.param == "sqlite":
        yield {name: f"sqlite:///{tmp_path / name}.db" for name in SERVICES}
        return
    with postgres_databases(request.getfixturevalue("postgres_server_url")) as urls:
        yield urls


@dataclass
class System:
    fleet: Fleet
    urls: dict[str, str]
    channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def channel(self, name: str) -> grpc.Channel:
        """As the demo centre's organisation: its data is what the test reads."""
        if name not in self.channels:
            self.channels[name] = self.fleet.channel(name, org=centre.ORG)
        return self.channels[name]

    def scheduler(self, name: str = "scheduler") -> scheduler_pb2_grpc.SchedulerServiceStub:
        return scheduler_pb2_grpc.SchedulerServiceStub(self.channel(name))

    def inventory(self, name: str = "inventory") -> inventory_pb2_grpc.InventoryServiceStub:
        return inventory_pb2_grpc.InventoryServiceStub(self.channel(name))

    def notify(self, name: str = "notify") -> notify_pb2_grpc.NotifyServiceStub:
        return notify_pb2_grpc.NotifyServiceStub(self.channel(name))

    def start(self, names: list[str]) -> None:
        """All at once, then each must come up."""
        for name in names:
            self.fleet.start(name, wait=False)
        for name in names:
            assert self.fleet.serving(name), f"{name}:\n{self.fleet.log(name)[-3000:]}"

    def stored_jobs(self, service: str) -> dict[str, float]:
        rows = query(
            self.urls[service], f"SELECT id, next_run_time FROM {service}_apscheduler_jobs"
        )
        return {job_id: float(next_run or 0) for job_id, next_run in rows}

    def count(self, service: str, sql: str, **params: object) -> int:
        ((found,),) = query(self.urls[service], sql, **params)
        return int(found)

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


@dataclass
class Seeded:
    clinic: Clinic
    hook_port: int
    hook_subscriber: npb.CreateSubscriberRequest
    reminded: str  # the appointment whose reminder comes due during the test
    check_site: str  # the stock site whose daily check comes due during the test


def _reminder_offsets(due_in: dt.timedelta) -> str:
    """SCHEDULER_REMINDER_OFFSETS_HOURS: the usual 72 and 24 hours (pending for the whole
    test), and one that makes the reminder of the appointment booked at BOOKED_AT due
    ``due_in`` from now."""
    hours = (BOOKED_AT - dt.datetime.now(dt.UTC) - due_in).total_seconds() / 3600
    return f"72,24,{hours:.6f}"


def _next_minute(after: dt.timedelta) -> dt.time:
    at = dt.datetime.now(dt.UTC) + after
    return (at + dt.timedelta(seconds=60 - at.second)).time().replace(microsecond=0)


def _populate(system: System) -> Seeded:
    """Fill the databases with every kind of stored job and data, through the services'
    commands and APIs, and stop them (SIGTERM) with some of it undelivered."""
    fleet = system.fleet
    fleet.run("services.inventory", "seed")
    fleet.run("services.inventory", "demo")  # stocked demo sites: daily jobs at the first start
    system.start(list(SERVICES))
    notify, sch, stock = system.notify(), system.scheduler(), system.inventory()
    due = npb.TOPIC_INFUSION_DUE
    centre.load(
        fleet.address("scheduler"),
        fleet.address("inventory"),
        dt.date.today(),
        fleet.address("notify"),
        tokens=caller_token(fleet.issuer, "scheduler", centre.ORG),
    )
    hook_port = free_port()  # nothing listens there until the last start: deliveries wait
    hook = npb.CreateSubscriberRequest(
        request_id="pharmacy-hook",
        subscriber=npb.Subscriber(
            display_name="Pharmacy system",
            kind=npb.SUBSCRIBER_KIND_STAFF,
            time_zone="UTC",
            webhook_url=f"http://127.0.0.1:{hook_port}/hook/pharmacy",
            webhook_secret=HOOK_SECRET,
            preferences=[
                npb.Preference(topic=topic, channels=[npb.CHANNEL_WEBHOOK])
                for topic in (npb.TOPIC_INFUSION_DUE, npb.TOPIC_LOT_EXPIRING)
            ],
        ),
    )
    notify.CreateSubscriber(hook)
    clinic = Clinic.open(sch, stock, chairs=2)
    clinic.receive("SOON-seed", 4, days=10)  # LOT_EXPIRING at the start-up check
    plan = clinic.add_plan("seed", DUE)  # INFUSION_DUE at the next scan
    assert holds_within(
        lambda: (
            plan.id in {n.payload.infusion_due.therapy_plan_id for n in notifications(notify, due)}
        ),
        30,
    )  # (before it is booked): a webhook delivery waits
    reminded = sch.BookAppointment(
        pb.BookAppointmentRequest(
            request_id="book-seed",
            therapy_plan_id=plan.id,
            chair_id=clinic.chair_ids[0],
            local_date=pb_date(DUE),
            local_start=TimeOfDay(hours=BOOKED_AT.hour),
        )
    ).appointment
    check_at = _next_minute(dt.timedelta(seconds=60))  # during the first restart, or its end
    check_site = stock.CreateStockSite(
        inv.CreateStockSiteRequest(
            request_id="check-site",
            site=inv.StockSite(
                id="check-site",
                display_name="Checked during the test",
                time_zone="UTC",
                expiry_check_time=TimeOfDay(hours=check_at.hour, minutes=check_at.minute),
            ),
        )
    ).site.id
    assert holds_within(lambda: f"daily:{check_site}" in system.stored_jobs("inventory"), 30)

    # notify stops first: what the others raise now stays in their outboxes
    assert fleet.stop("notify") == 0
    clinic.add_plan("notify-down", DUE)
    clinic.receive("SOON-notify-down", 4, days=20)
    stock.RunExpiryCheck(inv.RunExpiryCheckRequest(site_id=clinic.site_id))
    assert holds_within(lambda: undelivered(system.urls["scheduler"], "scheduler_outbox") > 0, 30)
    assert undelivered(system.urls["inventory"], "inventory_outbox") > 0
    assert fleet.stop("scheduler") == 0 and fleet.stop("inventory") == 0
    for service, table in (("scheduler", scheduler_jobs), ("inventory", inventory_jobs)):
        _leave_a_retired_job(system.urls[service], table)
    return Seeded(clinic, hook_port, hook, reminded.id, check_site)


def _leave_a_retired_job(url: str, table: Table) -> None:
    """A stored job naming a function no release registers any more: it raises every time.
    (Paused: this process must not run the service's jobs.)"""
    db = Database(url)
    scheduler = jobstore.database_scheduler(db, table)
    scheduler.start(paused=True)
    try:
        jobstore.ensure_job(scheduler, "retired", IntervalTrigger(seconds=3), "retired")
    finally:
        scheduler.shutdown(wait=False)
        db.dispose()


def _assert_holds_every_kind_of_data(system: System) -> None:
    inventory = system.stored_jobs("inventory")
    scheduler = system.stored_jobs("scheduler")
    assert sum(job.startswith("daily:") for job in inventory) >= 3, inventory
    assert {"refresh-sites", "retired"} <= set(inventory), inventory
    assert {"scheduler-notifications", "forecast-push", "retired"} <= set(scheduler), scheduler
    counts = {
        "reminders to come": system.count(
            "scheduler", "SELECT count(*) FROM appointment_reminders WHERE status = 'SCHEDULED'"
        ),
        "undelivered scheduler outbox": undelivered(system.urls["scheduler"], "scheduler_outbox"),
        "undelivered inventory outbox": undelivered(system.urls["inventory"], "inventory_outbox"),
        "deliveries done": system.count(
            "notify", "SELECT count(*) FROM notify_deliveries WHERE status = 'DELIVERED'"
        ),
        "deliveries pending": system.count(
            "notify", "SELECT count(*) FROM notify_deliveries WHERE status <> 'DELIVERED'"
        ),
    }
    for service in SERVICES:
        counts[f"{service} idempotency keys"] = system.count(
            service, f"SELECT count(*) FROM {service}_idempotency_keys"
        )
    assert all(counts.values()), counts


def _log_at(fleet: Fleet, names: list[str]) -> dict[str, int]:
    return {name: len(fleet.log(name)) for name in names}


def _serve(system: System, seeded: Seeded, phase: str, names: list[str]) -> None:
    """Start ``names`` at once and hold them to everything a serving service does."""
    fleet, clinic = system.fleet, seeded.clinic
    since = _log_at(fleet, names)
    system.start(names)
    serving_since = time.monotonic()
    scan_was = system.stored_jobs("scheduler")["scheduler-notifications"]
    plans: list[str] = []
    lots: list[str] = []
    sites: list[str] = []
    for name in names:
        service = name.split("-")[0]
        key = f"{phase}-{name}"
        if service == "scheduler":
            sch = system.scheduler(name)
            got = sch.GetTherapyPlan(pb.GetTherapyPlanRequest(id=clinic.plans[0].id))
            assert got.therapy_plan.patient_id == clinic.plans[0].patient_id
            assert clinic.add_plan("seed", DUE, via=sch).id == clinic.plans[0].id  # a retry
            plans.append(clinic.add_plan(key, DUE, via=sch).id)
        elif service == "inventory":
            stock = system.inventory(name)
            levels = stock.GetStockLevels(inv.GetStockLevelsRequest(site_id=clinic.site_id))
            assert any(lot.lot_number == "MAIN" for lot in levels.lots)
            first = clinic.receive("SOON-seed", 4, days=10)
            assert clinic.receive("SOON-seed", 4, days=10, via=stock).id == first.id  # a retry
            lots.append(clinic.receive(key, 4, days=12, via=stock).lot_number)
            sites.append(
                stock.CreateStockSite(
                    inv.CreateStockSiteRequest(
                        request_id=key,
                        site=inv.StockSite(id=key, display_name=key, time_zone="UTC"),
                    )
                ).site.id
            )
        else:
            notify = system.notify(name)
            found = notify.ListSubscribers(
                npb.ListSubscribersRequest(external_ref=centre.CONSOLE_REF)
            )
            assert len(found.subscribers) == 1
            retried = notify.CreateSubscriber(seeded.hook_subscriber).subscriber  # a retry
            assert retried.webhook_url == seeded.hook_subscriber.subscriber.webhook_url
            made = notify.CreateSubscriber(
                npb.CreateSubscriberRequest(
                    request_id=key,
                    subscriber=npb.Subscriber(
                        display_name=key, kind=npb.SUBSCRIBER_KIND_STAFF, time_zone="UTC"
                    ),
                )
            ).subscriber
            assert made.id

    notify = system.notify()

    def delivered(topic: int, key: str) -> set[str]:
        """The ``key`` of every notification of ``topic`` whose console delivery is done."""
        done = set()
        for n in notifications(notify, topic):
            if any(
                d.channel == npb.CHANNEL_CONSOLE and d.status == npb.DELIVERY_STATUS_DELIVERED
                for d in n.deliveries
            ):
                payload = getattr(n.payload, n.payload.WhichOneof("kind") or "")
                done.add(str(getattr(payload, key, "")))
        return done

    assert holds_within(
        lambda: set(plans) <= delivered(npb.TOPIC_INFUSION_DUE, "therapy_plan_id")
    ), (
        phase,
        "INFUSION_DUE of the plans made now",
    )
    assert holds_within(lambda: set(lots) <= delivered(npb.TOPIC_LOT_EXPIRING, "lot_number"), 60), (
        phase,
        "LOT_EXPIRING of the lots received now (the start-up check)",
    )
    assert holds_within(
        lambda: {f"daily:{s}" for s in sites} <= set(system.stored_jobs("inventory")), 30
    ), (phase, "daily jobs of the sites made now (the refresh)")

    def drained() -> bool:
        return all(
            undelivered(system.urls[s], f"{s}_outbox") == 0 for s in ("scheduler", "inventory")
        )

    assert holds_within(drained, 30), (phase, "the outboxes drained")

    # a minute of serving and of jobs, in every instance
    while time.monotonic() - serving_since < SERVE_SECONDS:
        for name in names:
            assert fleet.procs[name].poll() is None, f"{name} exited:\n{fleet.log(name)[-3000:]}"
            assert wait_serving(fleet.address(name), timeout=5), name
        time.sleep(2)
    assert system.stored_jobs("scheduler")["scheduler-notifications"] > scan_was + 40
    for name in names:
        log = fleet.log(name)[since[name] :]
        service = name.split("-")[0]
        if service == "notify":
            continue  # its dispatcher's work: the deliveries above
        every = SCAN_EVERY if service == "scheduler" else REFRESH_EVERY
        runs = log.count(f"interval[{every}]") // 2  # "Running job" and "executed successfully"
        print(f"{phase}: {name} ran its {every} job {runs} times")
        # every second (two), less what the other replica ran first or a busy machine missed
        assert runs >= SERVE_SECONDS / (4 if service == "scheduler" else 8), (name, runs)
        # the retired job raised every few seconds, and the scheduler ran on regardless
        assert log.count("no job 'retired' registered") >= 5, name


def test_every_service_restarts_on_its_own_data(
    databases: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    began = time.monotonic()
    fleet = Fleet(tmp_path, databases, JOB_ENV)
    fleet.env["SCHEDULER_REMINDER_OFFSETS_HOURS"] = _reminder_offsets(dt.timedelta(seconds=100))
    system = System(fleet, databases)
    sink = WebhookSink()
    try:
        seeded = _populate(system)
        took = {"populate": time.monotonic() - began}
        _assert_holds_every_kind_of_data(system)
        held = system.count(
            "notify", "SELECT count(*) FROM notify_deliveries WHERE channel = 'WEBHOOK'"
        )

        _serve(system, seeded, "sigterm", list(SERVICES))
        took["SIGTERM restart"] = time.monotonic() - began - sum(took.values())

        for name in SERVICES:
            fleet.stop(name, signal.SIGKILL)
        sink.url_on(seeded.hook_port, "pharmacy", HOOK_SECRET)
        sink.start(seeded.hook_port)  # the webhook answers from now on
        replicas = request.node.callspec.params["databases"] == "postgres"
        names = list(SERVICES) + ([f"{name}-2" for name in SERVICES] if replicas else [])
        _serve(system, seeded, "sigkill", names)
        took["SIGKILL restart"] = time.monotonic() - began - sum(took.values())

        # what came due during the test was done, across the restarts
        assert holds_within(
            lambda: (
                system.count(
                    "scheduler",
                    "SELECT count(*) FROM scheduler_outbox WHERE topic = 'APPOINTMENT_REMINDER'"
                    " AND dedupe_key LIKE :key AND delivered_at IS NOT NULL",
                    key=f"APPOINTMENT_REMINDER:{seeded.reminded}:%",
                )
                == 1
            )
        ), "the reminder that came due"
        tomorrow = time.time() + 20 * 3600
        assert holds_within(
            lambda: system.stored_jobs("inventory")[f"daily:{seeded.check_site}"] > tomorrow, 90
        ), "the daily check that came due"
        assert holds_within(
            lambda: (
                system.count(
                    "notify",
                    "SELECT count(*) FROM notify_deliveries"
                    " WHERE channel = 'WEBHOOK' AND status <> 'DELIVERED'",
                )
                == 0
            )
        ), "the webhook deliveries held since the first run"
        assert len({c.delivery_id for c in sink.calls("pharmacy")}) >= held > 0
        assert sink.rejected == []
        fleet.assert_no_crashed_threads()
        took["final checks"] = time.monotonic() - began - sum(took.values())
        backend = request.node.callspec.params["databases"]
        print(f"restarts on {backend}, seconds:", {k: round(v) for k, v in took.items()})
    finally:
        fleet.stop_all()
        sink.stop()
        system.close()
