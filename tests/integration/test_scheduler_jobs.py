"""The scheduler's notification jobs (services/scheduler/jobs.py) driven by an injected clock
on SQLite and PostgreSQL, against real gRPC servers: INFUSION_DUE once per due cycle and only
when nothing is booked, reminders at 72 h and 24 h (none for a cancelled appointment, new ones
for a moved one), MISSED_INFUSION 30 minutes after an unchecked start, two replicas raising
nothing twice, a due scan that reads only what changed or came due, and the relay carrying the
scheduler's outbox to a real notify server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from google.type.timeofday_pb2 import TimeOfDay
from sqlalchemy import delete, select

from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2 as npb
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.channels import open_channel
from services.common.clock import FixedClock
from services.common.db import Database
from services.common.outbox_relay import OutboxRelay
from services.inventory.__main__ import build as build_inventory
from services.inventory.seed import seed_catalogue
from services.inventory.settings import load_settings as inventory_settings
from services.notify.domain.model import Channel
from services.scheduler.__main__ import build as build_scheduler
from services.scheduler.adapters.inventory_products import InventoryProducts
from services.scheduler.adapters.notify_relay import relay_to_notify
from services.scheduler.jobs import JobSettings, SchedulerJobs
from services.scheduler.settings import load_settings as scheduler_settings
from services.scheduler.store import due_inputs, due_watch
from services.scheduler.store.models import DueWatchRow, PlanVersionRow, ReminderRow, outbox
from services.scheduler.store.reminders import schedule_booked
from tests.integration.builders import (
    date,
    make_plan,
    measure,
    plan_message,
    product_id,
    site_with_chairs,
)
from tests.integration.conftest import Platform, request_id
from tests.integration.notify_conftest import (  # noqa: F401 (fixtures)
    Factory,
    NotifyServer,
    create,
    notify_factory,
)
from tests.issuer import TestIssuer

NOW = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)  # Tuesday; London is on UTC in winter


@dataclass
class Env:
    p: Platform
    notify: NotifyServer
    db: Database
    jobs: SchedulerJobs
    relay: OutboxRelay
    clock: FixedClock
    url: str

    def replica(self) -> tuple[SchedulerJobs, Database]:
        db = Database(self.url)
        return SchedulerJobs(db, self.clock, JobSettings()), db


@pytest.fixture
def env(
    database_url: str,
    issuer: TestIssuer,
    notify_factory: Factory,  # noqa: F811
) -> Iterator[Env]:
    clock = FixedClock(NOW)
    notify = notify_factory(clock=clock)
    inv_settings = inventory_settings(
        {
            "INVENTORY_DATABASE_URL": database_url,
            "INVENTORY_LISTEN": "127.0.0.1:0",
            "INVENTORY_GRPC_WORKERS": "8",
            "INVENTORY_SHUTDOWN_GRACE_SECONDS": "1",
            "INVENTORY_JOBS": "0",
            "INVENTORY_AUDIT_LINKER": "thread",
            "NOTIFY_ADDRESS": notify.address,
        },
    )
    inventory = build_inventory(inv_settings, clock, issuer.service_auth("inventory"))
    inventory.start()
    seed_catalogue(inv_settings, clock)
    url = (
        database_url.replace("test.db", "scheduler.db")
        if database_url.startswith("sqlite")
        else database_url
    )
    settings = scheduler_settings(
        {
            "SCHEDULER_DATABASE_URL": url,
            "SCHEDULER_LISTEN": "127.0.0.1:0",
            "SCHEDULER_GRPC_WORKERS": "8",
            "SCHEDULER_SHUTDOWN_GRACE_SECONDS": "1",
            "SCHEDULER_JOBS": "0",  # the test calls the job bodies
            "SCHEDULER_AUDIT_LINKER": "thread",
            "INVENTORY_ADDRESS": inventory.address,
            "NOTIFY_ADDRESS": notify.address,
        },
    )
    scheduler_auth = issuer.service_auth("scheduler")
    products = InventoryProducts(open_channel(inventory.address, None, scheduler_auth.tokens))
    scheduler = build_scheduler(settings, clock, products, scheduler_auth)
    scheduler.start()
    sch_channel = issuer.channel(scheduler.address)
    inv_channel = issuer.channel(inventory.address)
    db = Database(url)
    relay_channel = open_channel(notify.address, None, scheduler_auth.tokens)
    service_channel = open_channel(inventory.address, None, scheduler_auth.tokens)
    relay = relay_to_notify(db, clock, relay_channel)
    try:
        yield Env(
            p=Platform(
                scheduler=scheduler_pb2_grpc.SchedulerServiceStub(sch_channel),
                inventory=inventory_pb2_grpc.InventoryServiceStub(inv_channel),
                scheduler_channel=sch_channel,
                inventory_channel=inv_channel,
                clock=clock,
                scheduler_address=scheduler.address,
                inventory_address=inventory.address,
                stop_inventory=lambda: inventory.stop(0),
                forget_products=products.forget,
                issuer=issuer,
                scheduler_service=inventory_pb2_grpc.InventoryServiceStub(service_channel),
            ),
            notify=notify,
            db=db,
            jobs=SchedulerJobs(db, clock, JobSettings()),
            relay=relay,
            clock=clock,
            url=url,
        )
    finally:
        relay_channel.close()
        service_channel.close()
        sch_channel.close()
        inv_channel.close()
        scheduler.stop(0)
        inventory.stop(0)
        db.dispose()


# --- helpers ------------------------------------------------------------------------------------


# Rows bookings write for the inventory, APPOINTMENT_CHANGED and BOARD_CHANGED (tested with
# bookings: test_booking_stock_saga.py, test_scheduler_booking.py), not by these jobs.
NOT_FROM_JOBS = (
    "RESERVE_STOCK",
    "AMEND_RESERVATION",
    "RELEASE_RESERVATION",
    "APPOINTMENT_CHANGED",
    "BOARD_CHANGED",  # the live chair board's signal, on every change
)


def rows(e: Env, topic: str = "") -> list[Any]:
    """The jobs' outbox rows (of one topic, if given), in order."""
    with e.db.read() as session:
        query = select(outbox).order_by(outbox.c.seq)
        if topic:
            query = query.where(outbox.c.topic == topic)
        else:
            query = query.where(outbox.c.topic.not_in(NOT_FROM_JOBS))
        return list(session.execute(query))


def keys(e: Env, topic: str = "") -> list[str]:
    return [r.dedupe_key for r in rows(e, topic)]


def patient_plan(
    e: Env, site: pb.Site, mrn: str, subscriber: str = "", **kw: object
) -> pb.TherapyPlan:
    patient = e.p.scheduler.CreatePatient(
        pb.CreatePatientRequest(
            request_id=request_id(),
            patient=pb.Patient(
                organisation_id="org-1",
                mrn=mrn,
                given_name="Ada",
                family_name=mrn,
                birth_date=date(1970, 5, 1),
                sex_at_birth=pb.SEX_AT_BIRTH_FEMALE,
                notify_subscriber_id=subscriber,
            ),
        )
    ).patient
    measure(e.p, patient.id, "70", "165")
    return make_plan(
        e.p, plan_message(patient.id, site.id, product_id(e.p, "gammagard-liquid"), **kw)
    )


def book(e: Env, plan: pb.TherapyPlan, chair: pb.Chair, day: dt.date, hh: int) -> pb.Appointment:
    return e.p.scheduler.BookAppointment(
        pb.BookAppointmentRequest(
            therapy_plan_id=plan.id,
            chair_id=chair.id,
            local_date=date(day.year, day.month, day.day),
            local_start=TimeOfDay(hours=hh),
            request_id=request_id(),
        )
    ).appointment


def move(e: Env, appt: pb.Appointment, chair: pb.Chair, day: dt.date, hh: int) -> None:
    e.p.scheduler.RescheduleAppointment(
        pb.RescheduleAppointmentRequest(
            id=appt.id,
            chair_id=chair.id,
            local_date=date(day.year, day.month, day.day),
            local_start=TimeOfDay(hours=hh),
            request_id=request_id(),
        )
    )


def at(e: Env, *args: int) -> None:
    e.clock.set(dt.datetime(*args, tzinfo=dt.UTC))  # type: ignore[misc]


def patient_subscriber(e: Env) -> str:
    return create(
        e.notify,
        external_ref="patient-1",
        display_name="Ada",
        email="ada@example.org",
        kind=npb.SUBSCRIBER_KIND_PATIENT,
    ).id


# --- INFUSION_DUE -------------------------------------------------------------------------------


def test_due_notice_once_per_cycle_and_only_when_nothing_is_booked(env: Env) -> None:
    site, chairs = site_with_chairs(env.p)
    sub = patient_subscriber(env)
    # both due Tue 1 Dec, window 27 Nov – 5 Dec
    a = patient_plan(env, site, "MRN-A", subscriber=sub)
    b = patient_plan(env, site, "MRN-B")
    b_appt = book(env, b, chairs[1], dt.date(2026, 12, 1), 10)

    first = env.jobs.due_scan()
    assert (first.examined, first.raised) == (2, 0)  # windows not open yet
    with env.db.read() as session:
        watch = {r.plan_id: r.next_check_at for r in session.scalars(select(DueWatchRow))}
    # A wakes at its window's local midnight; B is booked: only a write can change it
    assert watch == {a.id: dt.datetime(2026, 11, 27, tzinfo=dt.UTC), b.id: None}

    at(env, 2026, 11, 26, 23, 59)
    assert env.jobs.due_scan().raised == 0  # reads the plans written near its last pass
    assert env.jobs.due_scan().examined == 0  # then nothing: no write, no window opening

    at(env, 2026, 11, 27, 0, 0)
    scan = env.jobs.due_scan()
    assert (scan.examined, scan.raised) == (1, 2)
    key = f"INFUSION_DUE:{a.id}:2026-12-01:0"
    assert keys(env) == [key, f"{key}:patient"]
    envelope = rows(env)[1].payload
    assert envelope["subscriber_ids"] == [sub]
    assert envelope["payload"]["window_opens"] == "2026-11-27"
    assert envelope["payload"]["patient_name"] == "Ada MRN-A"
    assert rows(env)[0].payload["subscriber_ids"] == []  # staff: notify's opt-in broadcast

    # the same cycle never raises again, however often the scan runs
    for hours in (1, 24, 48):
        env.clock.advance(dt.timedelta(hours=hours))
        assert env.jobs.due_scan().raised == 0

    # B's booking is cancelled inside the window: B is due with nothing booked
    env.p.scheduler.CancelAppointment(
        pb.CancelAppointmentRequest(id=b_appt.id, reason="patient ill", request_id=request_id())
    )
    assert env.jobs.due_scan().raised == 1
    assert keys(env)[-1] == f"INFUSION_DUE:{b.id}:2026-12-01:0"

    # A is given on 1 Dec: the next cycle (due 29 Dec, window from 25 Dec) raises once more
    at(env, 2026, 12, 1, 9, 0)
    appt = book(env, a, chairs[0], dt.date(2026, 12, 1), 10)
    at(env, 2026, 12, 1, 10, 0)
    env.p.scheduler.CheckIn(pb.CheckInRequest(id=appt.id, request_id=request_id()))
    at(env, 2026, 12, 1, 15, 30)  # completed after its chair time
    env.p.scheduler.CompleteInfusion(
        pb.CompleteInfusionRequest(id=appt.id, grams_given="70", request_id=request_id())
    )
    assert env.jobs.due_scan().raised == 0
    at(env, 2026, 12, 24, 23, 0)
    assert env.jobs.due_scan().raised == 0
    at(env, 2026, 12, 25, 0, 0)
    assert env.jobs.due_scan().raised == 2
    assert keys(env)[-2:] == [
        f"INFUSION_DUE:{a.id}:2026-12-29:0",
        f"INFUSION_DUE:{a.id}:2026-12-29:0:patient",
    ]


def test_a_paused_plan_is_not_due(env: Env) -> None:
    site, _ = site_with_chairs(env.p)
    plan = patient_plan(env, site, "MRN-A")
    env.jobs.due_scan()
    got = env.p.scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan.id)).therapy_plan
    got.status = pb.PLAN_STATUS_PAUSED
    env.p.scheduler.UpdateTherapyPlan(
        pb.UpdateTherapyPlanRequest(therapy_plan=got, request_id=request_id(), reason="paused")
    )
    at(env, 2026, 11, 28, 9, 0)
    assert env.jobs.due_scan().raised == 0
    assert keys(env) == []


def test_the_first_pass_finds_what_a_pass_over_the_same_plans_by_id_finds(env: Env) -> None:
    """The first pass (no watermark) reads every active plan its own way (one query, plans
    sharing their due fields evaluated once, services/scheduler/jobs.py): the same watch rows
    and the same INFUSION_DUE as the pass that reads plans by id."""
    site, chairs = site_with_chairs(env.p)
    a = patient_plan(env, site, "MRN-A")  # due Tue 1 Dec: window opens Fri 27 Nov
    b = patient_plan(env, site, "MRN-B")  # the same due fields as A
    open_now = {"start_date": date(2026, 11, 25)}  # window 21–29 Nov: open
    c = patient_plan(env, site, "MRN-C", **open_now)
    d = patient_plan(env, site, "MRN-D", **open_now)
    book(env, d, chairs[0], dt.date(2026, 11, 25), 10)
    e = patient_plan(env, site, "MRN-E", **open_now)
    held = env.p.scheduler.HoldSlot(
        pb.HoldSlotRequest(
            therapy_plan_id=e.id,
            chair_id=chairs[1].id,
            local_date=date(2026, 11, 25),
            local_start=TimeOfDay(hours=11),
            request_id=request_id(),
        )
    ).appointment
    # given 10 Nov before the plan was entered: due 8 Dec, window from 4 Dec
    f = patient_plan(
        env, site, "MRN-F", start_date=date(2026, 11, 20), last_infusion_date=date(2026, 11, 10)
    )
    g = patient_plan(env, site, "MRN-G", **open_now)
    got = env.p.scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=g.id)).therapy_plan
    got.status = pb.PLAN_STATUS_PAUSED
    env.p.scheduler.UpdateTherapyPlan(
        pb.UpdateTherapyPlanRequest(therapy_plan=got, request_id=request_id(), reason="paused")
    )

    def stale_watch_of_the_paused_plan() -> None:
        with env.db.write() as session:
            session.add(DueWatchRow(plan_id=g.id, next_check_at=NOW, checked_at=NOW))

    def found() -> tuple[dict[str, dt.datetime | None], list[str]]:
        with env.db.read() as session:
            watch = {r.plan_id: r.next_check_at for r in session.scalars(select(DueWatchRow))}
        return watch, sorted(keys(env))

    stale_watch_of_the_paused_plan()
    first = env.jobs.due_scan()
    assert (first.examined, first.raised) == (6, 1)
    by_first_pass = found()
    hold_expiry = by_first_pass[0][e.id]
    assert hold_expiry is not None
    assert hold_expiry == held.hold_expire_time.ToDatetime(dt.UTC)
    assert by_first_pass == (
        {
            a.id: dt.datetime(2026, 11, 27, tzinfo=dt.UTC),
            b.id: dt.datetime(2026, 11, 27, tzinfo=dt.UTC),
            c.id: None,  # raised: nothing changes by itself until it is booked or given
            d.id: None,  # booked
            e.id: hold_expiry,  # held: looked at again when the hold lapses
            f.id: dt.datetime(2026, 12, 4, tzinfo=dt.UTC),
        },
        [f"INFUSION_DUE:{c.id}:2026-11-25:0"],
    )

    # the same plans again, by id (the watermark is set; every plan was written since)
    with env.db.write() as session:
        session.execute(delete(DueWatchRow))
        session.execute(delete(outbox))
    stale_watch_of_the_paused_plan()
    again = env.jobs.due_scan()
    assert (again.examined, again.raised) == (7, 1)  # the paused plan's stale row read too
    assert found() == by_first_pass


# --- APPOINTMENT_REMINDER -----------------------------------------------------------------------


def test_reminders_at_72_and_24_hours_none_when_cancelled_new_ones_when_moved(env: Env) -> None:
    site, chairs = site_with_chairs(env.p)
    sub = patient_subscriber(env)
    a = patient_plan(env, site, "MRN-A", subscriber=sub)
    b = patient_plan(env, site, "MRN-B")
    a_appt = book(env, a, chairs[0], dt.date(2026, 12, 2), 10)  # Wed 10:00 London = UTC
    b_appt = book(env, b, chairs[1], dt.date(2026, 12, 2), 11)

    at(env, 2026, 11, 29, 9, 59)
    assert env.jobs.reminders() == 0
    at(env, 2026, 11, 29, 10, 0)  # 72 h before A
    assert env.jobs.reminders() == 2  # A to the staff and to the patient
    at(env, 2026, 11, 29, 11, 0)  # 72 h before B
    assert env.jobs.reminders() == 1
    assert env.jobs.reminders() == 0
    assert keys(env) == [
        f"APPOINTMENT_REMINDER:{a_appt.id}:72h:20261202T1000Z",
        f"APPOINTMENT_REMINDER:{a_appt.id}:72h:20261202T1000Z:patient",
        f"APPOINTMENT_REMINDER:{b_appt.id}:72h:20261202T1100Z",
    ]
    first = rows(env)[1].payload
    assert first["subscriber_ids"] == [sub]
    assert first["expires_at"] == "2026-12-02T10:00:00+00:00"
    assert first["payload"]["start_time"] == "2026-12-02T10:00:00Z"
    assert first["payload"]["time_zone"] == "Europe/London"

    # B is cancelled and A moves to Friday 4 Dec 10:00
    env.p.scheduler.CancelAppointment(
        pb.CancelAppointmentRequest(id=b_appt.id, reason="x", request_id=request_id())
    )
    move(env, a_appt, chairs[0], dt.date(2026, 12, 4), 10)
    before = len(rows(env))
    at(env, 2026, 12, 1, 9, 59)
    assert env.jobs.reminders() == 0
    at(env, 2026, 12, 1, 10, 0)  # A's new 72 h mark (and its old 24 h mark)
    assert env.jobs.reminders() == 2
    at(env, 2026, 12, 1, 11, 0)  # B's 24 h mark: cancelled, nothing
    assert env.jobs.reminders() == 0
    at(env, 2026, 12, 3, 10, 0)  # A's new 24 h mark
    assert env.jobs.reminders() == 2
    at(env, 2026, 12, 4, 10, 0)  # the appointment itself: nothing more
    assert env.jobs.reminders() == 0
    assert keys(env)[before:] == [
        f"APPOINTMENT_REMINDER:{a_appt.id}:72h:20261204T1000Z",
        f"APPOINTMENT_REMINDER:{a_appt.id}:72h:20261204T1000Z:patient",
        f"APPOINTMENT_REMINDER:{a_appt.id}:24h:20261204T1000Z",
        f"APPOINTMENT_REMINDER:{a_appt.id}:24h:20261204T1000Z:patient",
    ]
    assert not any(b_appt.id in k for k in keys(env)[before:])


def test_a_booking_made_after_a_reminder_time_skips_that_reminder(env: Env) -> None:
    site, chairs = site_with_chairs(env.p)
    plan = patient_plan(env, site, "MRN-A")
    at(env, 2026, 11, 30, 8, 0)  # 50 h before: the 72 h reminder time has passed
    appt = book(env, plan, chairs[0], dt.date(2026, 12, 2), 10)
    assert env.jobs.reminders() == 0
    at(env, 2026, 12, 1, 10, 0)
    assert env.jobs.reminders() == 1
    assert keys(env) == [f"APPOINTMENT_REMINDER:{appt.id}:24h:20261202T1000Z"]


def test_reminder_offsets_follow_the_sites_wall_clock_across_dst(env: Env) -> None:
    """Mon 29 Mar 2027 09:00 BST (08:00 UTC); London sprang forward on Sun 28 Mar. The 72 h
    reminder is Fri 26 Mar 09:00 local = 09:00 UTC (71 real hours before)."""
    at(env, 2027, 3, 1, 9, 0)
    site, chairs = site_with_chairs(env.p)
    plan = patient_plan(env, site, "MRN-A", start_date=date(2027, 3, 29))
    appt = book(env, plan, chairs[0], dt.date(2027, 3, 29), 9)
    at(env, 2027, 3, 26, 8, 59)
    assert env.jobs.reminders() == 0
    at(env, 2027, 3, 26, 9, 0)
    assert env.jobs.reminders() == 1
    assert keys(env) == [f"APPOINTMENT_REMINDER:{appt.id}:72h:20270329T0800Z"]


# --- reminders scheduled at booking ------------------------------------------------------------


def reminders_of(e: Env, appointment_id: str) -> list[tuple[str, dt.datetime, str]]:
    got = e.p.scheduler.GetAppointment(pb.GetAppointmentRequest(id=appointment_id)).appointment
    return [
        (r.offset, r.due_time.ToDatetime(dt.UTC), pb.ReminderStatus.Name(r.status)[16:])
        for r in got.reminders
    ]


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]


def test_a_booking_schedules_its_reminders_a_move_replaces_them_a_cancel_cancels_them(
    env: Env,
) -> None:
    """Booked Tue 24 Nov 09:00 for Wed 2 Dec 10:00 London (GMT = UTC): 72 h before is Sun 29
    Nov 10:00, 24 h before is Tue 1 Dec 10:00."""
    site, chairs = site_with_chairs(env.p)
    plan = patient_plan(env, site, "MRN-A")
    appt = book(env, plan, chairs[0], dt.date(2026, 12, 2), 10)
    scheduled = [
        ("72h", utc(2026, 11, 29, 10), "SCHEDULED"),
        ("24h", utc(2026, 12, 1, 10), "SCHEDULED"),
    ]
    assert [
        (r.offset, r.due_time.ToDatetime(dt.UTC), pb.ReminderStatus.Name(r.status)[16:])
        for r in appt.reminders
    ] == scheduled  # in the booking's reply
    assert reminders_of(env, appt.id) == scheduled

    at(env, 2026, 11, 29, 10, 0)
    assert env.jobs.reminders() == 1
    assert [s for _, _, s in reminders_of(env, appt.id)] == ["RAISED", "SCHEDULED"]

    # moved at 10:30 to Fri 4 Dec 10:00: 72 h before is Tue 1 Dec 10:00, 24 h Thu 3 Dec 10:00
    at(env, 2026, 11, 29, 10, 30)
    move(env, appt, chairs[0], dt.date(2026, 12, 4), 10)
    assert reminders_of(env, appt.id) == [
        ("72h", utc(2026, 11, 29, 10), "CANCELLED"),
        ("24h", utc(2026, 12, 1, 10), "CANCELLED"),
        ("72h", utc(2026, 12, 1, 10), "SCHEDULED"),
        ("24h", utc(2026, 12, 3, 10), "SCHEDULED"),
    ]
    # the 72 h reminder already handed to notify is cancelled there (it may be held back)
    old = f"APPOINTMENT_REMINDER:{appt.id}:72h:20261202T1000Z"
    assert keys(env, "CANCEL_NOTIFICATION") == [f"CANCEL:{old}", f"CANCEL:{old}:patient"]

    # and back to Wed 2 Dec 10:00 at 11:00: its 72 h mark has passed, so only the 24 h one,
    # under a new key (the old one may be cancelled at notify)
    at(env, 2026, 11, 29, 11, 0)
    move(env, appt, chairs[0], dt.date(2026, 12, 2), 10)
    assert [r for r in reminders_of(env, appt.id) if r[2] == "SCHEDULED"] == [
        ("24h", utc(2026, 12, 1, 10), "SCHEDULED")
    ]
    at(env, 2026, 12, 1, 10, 0)
    assert env.jobs.reminders() == 1
    assert keys(env, "APPOINTMENT_REMINDER")[-1] == (
        f"APPOINTMENT_REMINDER:{appt.id}:24h:20261202T1000Z:2"
    )

    book_b = book(env, patient_plan(env, site, "MRN-B"), chairs[1], dt.date(2026, 12, 3), 10)
    env.p.scheduler.CancelAppointment(
        pb.CancelAppointmentRequest(id=book_b.id, reason="x", request_id=request_id())
    )
    assert [s for _, _, s in reminders_of(env, book_b.id)] == ["CANCELLED"]  # only the 24 h
    at(env, 2026, 12, 2, 10, 0)
    assert env.jobs.reminders() == 0


def test_a_reminder_held_back_at_notify_is_cancelled_with_the_appointment(env: Env) -> None:
    """The patient's quiet hours (09:00–12:00 London) hold the 72 h reminder raised at Sun 29
    Nov 10:00 until 12:00; the appointment is cancelled at 10:30: the held delivery is
    cancelled at notify and never sent."""
    site, chairs = site_with_chairs(env.p)
    sub = create(
        env.notify,
        external_ref="patient-1",
        display_name="Ada",
        email="ada@example.org",
        kind=npb.SUBSCRIBER_KIND_PATIENT,
        quiet_hours=npb.QuietHours(start=TimeOfDay(hours=9), end=TimeOfDay(hours=12)),
    ).id
    plan = patient_plan(env, site, "MRN-A", subscriber=sub)
    appt = book(env, plan, chairs[0], dt.date(2026, 12, 2), 10)
    at(env, 2026, 11, 29, 10, 0)
    assert env.jobs.reminders() == 2  # the staff broadcast and the patient's copy
    env.relay.drain()
    key = f"APPOINTMENT_REMINDER:{appt.id}:72h:20261202T1000Z:patient"

    def deliveries() -> list[Any]:
        found = env.notify.stub.ListNotifications(
            npb.ListNotificationsRequest(topic=npb.TOPIC_APPOINTMENT_REMINDER)
        ).notifications
        return [d for n in found if n.dedupe_key == key for d in n.deliveries]

    held = deliveries()
    assert [(d.status, d.deferred_by_quiet_hours) for d in held] == [
        (npb.DELIVERY_STATUS_PENDING, True)
    ]
    at(env, 2026, 11, 29, 10, 30)
    env.p.scheduler.CancelAppointment(
        pb.CancelAppointmentRequest(id=appt.id, reason="unwell", request_id=request_id())
    )
    drained = env.relay.drain()
    assert drained.failed == 0
    assert [d.status for d in deliveries()] == [npb.DELIVERY_STATUS_CANCELLED]
    at(env, 2026, 11, 29, 12, 0)
    env.notify.drain()
    sent = env.notify.recorders[Channel.EMAIL].sent
    assert len(sent) == 1 and sent[0].subject.endswith("was cancelled")  # that notice only


def test_a_reminder_raised_but_not_yet_relayed_is_not_sent_after_a_cancel(env: Env) -> None:
    """Notify was unreachable when the reminder was raised; the appointment is cancelled
    before the relay gets through: the reminder is dropped, the cancellation finds nothing to
    cancel, and every row counts as delivered."""
    site, chairs = site_with_chairs(env.p)
    plan = patient_plan(env, site, "MRN-A")
    appt = book(env, plan, chairs[0], dt.date(2026, 12, 2), 10)
    at(env, 2026, 11, 29, 10, 0)
    assert env.jobs.reminders() == 1
    env.p.scheduler.CancelAppointment(
        pb.CancelAppointmentRequest(id=appt.id, reason="x", request_id=request_id())
    )
    drained = env.relay.drain()
    assert drained.failed == 0
    assert all(r.delivered_at is not None for r in rows(env))
    assert not env.notify.stub.ListNotifications(
        npb.ListNotificationsRequest(topic=npb.TOPIC_APPOINTMENT_REMINDER)
    ).notifications


def test_appointments_booked_before_reminders_were_stored_get_theirs_from_migration_0007(
    env: Env,
) -> None:
    """The backfill migration 0007 runs (schedule_booked), on a database whose appointments
    have no reminder rows: as if booked at the migration's time, Sat 28 Nov 09:00."""
    site, chairs = site_with_chairs(env.p)
    appt = book(env, patient_plan(env, site, "MRN-A"), chairs[0], dt.date(2026, 12, 2), 10)
    with env.db.engine.begin() as connection:
        connection.execute(delete(ReminderRow))
        schedule_booked(connection, (72.0, 24.0), utc(2026, 11, 28, 9))
        schedule_booked(connection, (72.0, 24.0), utc(2026, 11, 28, 9))  # a re-run adds none
    assert reminders_of(env, appt.id) == [
        ("72h", utc(2026, 11, 29, 10), "SCHEDULED"),
        ("24h", utc(2026, 12, 1, 10), "SCHEDULED"),
    ]
    with env.db.engine.begin() as connection:
        connection.execute(delete(ReminderRow))
        schedule_booked(connection, (72.0, 24.0), utc(2026, 11, 30, 9))  # 72 h mark passed
    assert reminders_of(env, appt.id) == [("24h", utc(2026, 12, 1, 10), "SCHEDULED")]


# --- MISSED_INFUSION ----------------------------------------------------------------------------


def test_missed_infusion_30_minutes_after_an_unchecked_start(env: Env) -> None:
    site, chairs = site_with_chairs(env.p)
    a = patient_plan(env, site, "MRN-A")
    b = patient_plan(env, site, "MRN-B")
    missed = book(env, a, chairs[0], dt.date(2026, 12, 1), 10)
    came = book(env, b, chairs[1], dt.date(2026, 12, 1), 10)
    at(env, 2026, 12, 1, 10, 5)
    env.p.scheduler.CheckIn(pb.CheckInRequest(id=came.id, request_id=request_id()))
    at(env, 2026, 12, 1, 10, 29)
    assert env.jobs.missed() == 0
    at(env, 2026, 12, 1, 10, 30)
    assert env.jobs.missed() == 1
    env.clock.advance(dt.timedelta(hours=2))
    assert env.jobs.missed() == 0
    assert keys(env) == [f"MISSED_INFUSION:{missed.id}:20261201T1000Z"]
    payload = rows(env)[0].payload["payload"]
    assert (payload["appointment_id"], payload["site_name"]) == (missed.id, "Day unit")


# --- replicas -----------------------------------------------------------------------------------


def test_two_replicas_running_every_job_raise_nothing_twice(env: Env) -> None:
    site, chairs = site_with_chairs(env.p)
    sub = patient_subscriber(env)
    plans = [patient_plan(env, site, f"MRN-{i}", subscriber=sub) for i in range(4)]
    book(env, plans[0], chairs[0], dt.date(2026, 12, 1), 10)
    book(env, plans[1], chairs[1], dt.date(2026, 12, 1), 10)
    replicas = [env.replica(), env.replica()]
    raised = 0
    try:
        for instant in (
            dt.datetime(2026, 11, 27, 0, 0, tzinfo=dt.UTC),  # windows open: 2 due
            dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC),  # 72 h reminders
            dt.datetime(2026, 12, 1, 10, 30, tzinfo=dt.UTC),  # both missed
        ):
            env.clock.set(instant)
            with ThreadPoolExecutor(4) as pool:
                raised += sum(pool.map(lambda r: r[0].run_all(), replicas * 2))
        topics = [r.topic for r in rows(env)]
        assert raised == len(rows(env))  # each pass counts only what it wrote itself
        assert len(keys(env)) == len(set(keys(env)))
        # each event twice: to the staff and to the patient's own subscriber
        assert topics.count("INFUSION_DUE") == 4
        assert topics.count("APPOINTMENT_REMINDER") == 4
        assert topics.count("MISSED_INFUSION") == 4
    finally:
        for _, db in replicas:
            db.dispose()


# --- the relay ----------------------------------------------------------------------------------


def test_the_relay_delivers_the_outbox_to_notify(env: Env) -> None:
    site, chairs = site_with_chairs(env.p)
    staff = create(
        env.notify,
        external_ref="day-unit",
        display_name="Day unit desk",
        email="",
        preferences=[
            npb.Preference(topic=t, channels=[npb.CHANNEL_CONSOLE])
            for t in (npb.TOPIC_INFUSION_DUE, npb.TOPIC_APPOINTMENT_REMINDER)
        ],
        site_ids=[site.id],
    )
    elsewhere = create(
        env.notify,
        external_ref="other-unit",
        display_name="Other unit",
        email="",
        preferences=[npb.Preference(topic=npb.TOPIC_INFUSION_DUE, channels=[npb.CHANNEL_CONSOLE])],
        site_ids=["another-site"],
    )
    sub = patient_subscriber(env)
    plan = patient_plan(env, site, "MRN-A", subscriber=sub)
    other = patient_plan(env, site, "MRN-B")
    appt = book(env, other, chairs[0], dt.date(2026, 12, 2), 10)
    at(env, 2026, 11, 29, 10, 0)
    assert env.jobs.run_all() == 3  # plan due (staff + patient), other's 72 h reminder
    delivered = env.relay.drain()
    # the 3 notifications, and the booking's RESERVE_STOCK (no inventory in this test) and
    # BOARD_CHANGED rows
    assert (delivered.delivered, delivered.failed) == (5, 0)
    assert all(r.delivered_at is not None for r in rows(env))
    assert env.relay.drain().delivered == 0  # nothing twice

    due = env.notify.stub.ListNotifications(
        npb.ListNotificationsRequest(topic=npb.TOPIC_INFUSION_DUE)
    ).notifications
    by_key = {n.dedupe_key: n for n in due}
    key = f"INFUSION_DUE:{plan.id}:2026-12-01:0"
    assert set(by_key) == {key, f"{key}:patient"}
    assert [d.subscriber_id for d in by_key[key].deliveries] == [staff.id]
    assert elsewhere.id not in {d.subscriber_id for d in by_key[key].deliveries}
    assert list(by_key[f"{key}:patient"].subscriber_ids) == [sub]
    assert by_key[key].payload.infusion_due.due_date == date(2026, 12, 1)
    reminder = env.notify.stub.ListNotifications(
        npb.ListNotificationsRequest(topic=npb.TOPIC_APPOINTMENT_REMINDER)
    ).notifications
    assert [n.payload.appointment_reminder.appointment_id for n in reminder] == [appt.id]
    assert reminder[0].expires_at.ToDatetime(dt.UTC) == dt.datetime(2026, 12, 2, 10, tzinfo=dt.UTC)

    env.notify.drain()
    console = env.notify.recorders[Channel.CONSOLE].sent
    email = env.notify.recorders[Channel.EMAIL].sent
    assert sorted(m.subject for m in console) == sorted(
        [
            "An infusion is due for Ada MRN-A",
            "Reminder: your appointment on Wed 02 Dec 2026 10:00 GMT",
        ]
    )
    assert [m.destination for m in email] == ["ada@example.org"]


def test_a_reminder_relayed_after_the_appointment_began_is_dropped(env: Env) -> None:
    site, chairs = site_with_chairs(env.p)
    plan = patient_plan(env, site, "MRN-A")
    book(env, plan, chairs[0], dt.date(2026, 12, 2), 10)
    at(env, 2026, 12, 1, 10, 0)
    assert env.jobs.reminders() == 1
    at(env, 2026, 12, 2, 10, 0)  # notify was unreachable until the appointment began
    # the reminder (dropped as moot), and the booking's RESERVE_STOCK and BOARD_CHANGED
    assert env.relay.drain().delivered == 3
    published = env.notify.stub.ListNotifications(npb.ListNotificationsRequest()).notifications
    assert [n.topic for n in published] == [npb.TOPIC_BOARD_CHANGED]  # no reminder


# --- AUTHORISATION_EXPIRING ---------------------------------------------------------------------


def test_authorisation_expiring_30_days_ahead_once_per_end_date_through_notify(env: Env) -> None:
    site, _ = site_with_chairs(env.p)
    sub = patient_subscriber(env)
    plan = patient_plan(env, site, "MRN-A", subscriber=sub)
    auth = env.p.scheduler.SetPlanAuthorisation(
        pb.SetPlanAuthorisationRequest(
            authorisation=pb.PlanAuthorisation(
                therapy_plan_id=plan.id,
                payer="Acme Health",
                valid_from=date(2026, 6, 1),
                valid_to=date(2026, 12, 31),  # 37 days after Tue 24 Nov
                active=True,
            ),
            request_id=request_id(),
        )
    ).authorisation
    assert env.jobs.authorisations_expiring() == 0  # 37 days left: not yet
    at(env, 2026, 12, 1, 0, 0)  # 30 days left
    assert env.jobs.authorisations_expiring() == 2  # staff + the patient's copy
    key = f"AUTHORISATION_EXPIRING:{auth.id}:2026-12-31"
    assert keys(env, "AUTHORISATION_EXPIRING") == [key, f"{key}:patient"]
    payload = rows(env, "AUTHORISATION_EXPIRING")[0].payload["payload"]
    assert (payload["days_left"], payload["payer"]) == (30, "Acme Health")
    for hours in (1, 24, 240):  # notified once
        env.clock.advance(dt.timedelta(hours=hours))
        assert env.jobs.authorisations_expiring() == 0
    # a renewal that moves the end date is noticed again when it comes within 30 days
    env.p.scheduler.SetPlanAuthorisation(
        pb.SetPlanAuthorisationRequest(
            authorisation=pb.PlanAuthorisation(
                id=auth.id,
                therapy_plan_id=plan.id,
                payer="Acme Health",
                valid_from=date(2026, 6, 1),
                valid_to=date(2027, 1, 15),
                active=True,
                etag=auth.etag,
            ),
            request_id=request_id(),
        )
    )
    assert env.jobs.authorisations_expiring() == 0  # 12 Dec: 34 days before 15 Jan
    at(env, 2026, 12, 16, 9, 0)
    assert env.jobs.authorisations_expiring() == 2
    drained = env.relay.drain()
    assert drained.failed == 0
    found = env.notify.stub.ListNotifications(
        npb.ListNotificationsRequest(topic=npb.TOPIC_AUTHORISATION_EXPIRING)
    ).notifications
    assert len(found) == 4
    assert {n.payload.authorisation_expiring.payer for n in found} == {"Acme Health"}


def to_home_hizentra(env: Env, plan: pb.TherapyPlan) -> pb.TherapyPlan:
    """ConvertRegimen to Hizentra given at home: a new version, weekly with its own windows."""
    return env.p.scheduler.ConvertRegimen(
        pb.ConvertRegimenRequest(
            therapy_plan_id=plan.id,
            etag=plan.etag,
            route=pb.ROUTE_SC,
            product_id=product_id(env.p, "hizentra"),
            reason="home therapy",
            home_administration=True,
            request_id=request_id(),
        )
    ).therapy_plan


def test_a_dose_given_at_home_moves_the_due_notice_on(env: Env) -> None:
    """A home dose is no booking: the reminder that it is due goes to the staff and to the
    patient (who has a subscriber) as for a chair plan's."""
    site, _ = site_with_chairs(env.p)
    sub = patient_subscriber(env)
    iv = patient_plan(
        env,
        site,
        "MRN-H",
        subscriber=sub,
        maintenance_dose="2",
        last_infusion_date=date(2026, 11, 20),
    )
    home = to_home_hizentra(env, iv)
    # weekly from Fri 27 Nov, windows 3 days each way: open on 24 Nov, today
    assert env.jobs.due_scan().raised == 2
    due = f"INFUSION_DUE:{home.id}:2026-11-27:0"
    assert keys(env, "INFUSION_DUE") == [due, f"{due}:patient"]
    patient_copy = [r for r in rows(env, "INFUSION_DUE") if r.dedupe_key == f"{due}:patient"]
    assert [r.payload["subscriber_ids"] for r in patient_copy] == [[sub]]
    at(env, 2026, 11, 27, 18, 0)
    env.p.scheduler.RecordHomeInfusion(
        pb.RecordHomeInfusionRequest(
            therapy_plan_id=home.id,
            given_on=date(2026, 11, 27),
            grams_given="35",
            request_id=request_id(),
        )
    )
    assert env.jobs.due_scan().raised == 0  # next due 4 Dec, its window opens 1 Dec
    at(env, 2026, 12, 1, 0, 0)
    assert env.jobs.due_scan().raised == 2
    assert keys(env, "INFUSION_DUE")[-2:] == [
        f"INFUSION_DUE:{home.id}:2026-12-04:0",
        f"INFUSION_DUE:{home.id}:2026-12-04:0:patient",
    ]


def test_every_plan_version_written_through_the_rpcs_stores_the_due_inputs_of_its_spec(
    env: Env,
) -> None:
    """The due scan reads ``therapy_plan_versions.due_inputs``, not the spec
    (services/scheduler/store/due_inputs.py): every way of writing a version (a new plan, an
    update, a regimen conversion) stores the inputs its spec gives."""
    site, _ = site_with_chairs(env.p)
    patient_plan(env, site, "MRN-P")
    patient_plan(env, site, "MRN-I", induction=pb.InductionCourse(total_g_per_kg="2", days=5))
    before = patient_plan(
        env,
        site,
        "MRN-K",
        maintenance_dose="2",
        last_infusion_date=date(2026, 11, 10),
        keep_cadence=True,
    )
    got = env.p.scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=before.id)).therapy_plan
    got.interval_days = 21
    updated = env.p.scheduler.UpdateTherapyPlan(
        pb.UpdateTherapyPlanRequest(therapy_plan=got, request_id=request_id(), reason="shorter")
    ).therapy_plan
    to_home_hizentra(env, updated)
    with env.db.read() as session:
        versions = session.execute(
            select(
                PlanVersionRow.plan_id,
                PlanVersionRow.version,
                PlanVersionRow.spec,
                PlanVersionRow.due_inputs,
            )
        ).all()
    assert len(versions) == 5
    assert {(p, v): stored for p, v, _, stored in versions} == {
        (p, v): due_inputs.encode(spec) for p, v, spec, _ in versions
    }
    converted = due_inputs.decode(
        next(stored for p, v, _, stored in versions if (p, v) == (before.id, 3))
    )[0]
    assert (converted.interval_days, converted.history_from is not None) == (7, True)


def test_a_watch_row_is_written_again_only_when_its_next_check_moves(env: Env) -> None:
    """store/due_watch.py's ``save``: a first pass over plans already watched rewrites only
    the rows whose next check changed (``checked_at`` tells which were written)."""
    later = NOW + dt.timedelta(hours=1)
    day = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)

    def watch() -> dict[str, tuple[dt.datetime | None, dt.datetime]]:
        with env.db.read() as session:
            return {
                r.plan_id: (r.next_check_at, r.checked_at)
                for r in session.scalars(select(DueWatchRow))
            }

    with env.db.write() as session:
        due_watch.save(session, ["p1", "p2", "p3"], [day, None, day], NOW)
    with env.db.write() as session:
        due_watch.save(session, ["p1", "p2", "p3", "p4"], [day, None, None, day], later)
    assert watch() == {
        "p1": (day, NOW),  # unchanged: not written
        "p2": (None, NOW),  # unchanged (NULL is NULL)
        "p3": (None, later),
        "p4": (day, later),
    }
