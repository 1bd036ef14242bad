"""BookAppointment's cost: how many round trips to the database one booking makes.

Counted with SQLAlchemy's engine and pool events in the thread that served the call, as psycopg2
talks to PostgreSQL (tests/integration/round_trips.py): every statement; the BEGIN it sends
before a transaction's first statement; the COMMIT or ROLLBACK of a transaction that sent one.
Taking a pooled connection sends nothing (services.common.db checks its socket instead of
pinging the server). On SQLite only statements are counted (BEGIN IMMEDIATE is one; the
driver's COMMIT is not a round trip to a server).

After a first booking (which loads the product catalogue) a booking makes, on PostgreSQL:
BEGIN, one read of the plan, its patient, measurements, site and chair that takes the site-day
lock, one read of the day (chairs, blocks, bookings, the plan's own appointments), one
statement writing the booking, its reminders, its outbox row, the request_id's key with the
response (services.common.idempotency, ``key_last``) and the audit record with its queue row,
COMMIT: BOOK_ROUND_TRIPS (6 with the request_id claimed first, until 2026-12-05; 7 with the
audit record in a statement of its own, and 7 with the pool's pre-ping it sent until
2026-12-04). Before this path a booking made 42 (32 statements on SQLite): the dose's key, its
plan and its inputs read in sessions of their own, the day read table by table, the ORM's
flushes.
"""

from __future__ import annotations

import datetime as dt

import pytest
from google.type.timeofday_pb2 import TimeOfDay
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.scheduler.store import appointments as store
from tests.integration.builders import book, date, patient_plan, site_with_chairs
from tests.integration.conftest import Platform, audited_ids, scheduler_database_url
from tests.integration.round_trips import round_trips_by_thread

BOOK_ROUND_TRIPS = 5
"""At most this many round trips per booking on PostgreSQL."""
BOOK_STATEMENTS_SQLITE = 9
"""At most this many statements per booking on SQLite: BEGIN IMMEDIATE, the joined read, the
day, one write per table (the booking, its reminders, its outbox row, the request_id's key with
the response: SQLite has no data-modifying WITH), the audit record and its queue row."""
MOVE_ROUND_TRIPS, MOVE_STATEMENTS_SQLITE = 8, 11
CANCEL_ROUND_TRIPS, CANCEL_STATEMENTS_SQLITE = 4, 8
KEYS = "scheduler_idempotency_keys"
"""A table only the serving thread writes or reads (the request_id's claim, the key riding in
the booking's write, a replay's lookup): its round trips are the call's."""


def test_a_booking_makes_a_bounded_number_of_round_trips(
    platform: Platform, database_url: str
) -> None:
    site, chairs = site_with_chairs(platform)
    warm = patient_plan(platform, site, "MRN-W")
    book(platform, warm, chairs[0], dt.date(2026, 12, 1), 8)  # loads the catalogue
    plan = patient_plan(platform, site, "MRN-1")
    with round_trips_by_thread() as counted:
        booked = book(platform, plan, chairs[1], dt.date(2026, 12, 1), 8, rid="counted-1")
    assert booked.status == pb.APPOINTMENT_STATUS_BOOKED
    assert len(booked.reminders) > 0
    served = counted.of_thread_sending(KEYS)  # the serving thread, not the audit linker's
    if database_url.startswith("sqlite"):
        assert served <= BOOK_STATEMENTS_SQLITE
    else:
        assert served <= BOOK_ROUND_TRIPS
    # the retry answers the first result and writes nothing
    with round_trips_by_thread() as again:
        replay = book(platform, plan, chairs[1], dt.date(2026, 12, 1), 8, rid="counted-1")
    assert replay == booked
    assert again.of_thread_sending(KEYS) <= served


def test_the_booking_its_outbox_row_reminders_and_audit_record_commit_together(
    platform: Platform, database_url: str
) -> None:
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1")
    booked = book(platform, plan, chairs[0], dt.date(2026, 12, 1), 9, rid="together-1")
    engine = create_engine(scheduler_database_url(database_url))
    try:
        with engine.connect() as c:
            outbox = c.execute(
                text("SELECT topic, dedupe_key FROM scheduler_outbox WHERE dedupe_key LIKE :k"),
                {"k": f"%{booked.id}%"},
            ).all()
            reminders = c.scalar(
                text("SELECT count(*) FROM appointment_reminders WHERE appointment_id = :a"),
                {"a": booked.id},
            )
    finally:
        engine.dispose()
    assert sorted(outbox) == [
        ("BOARD_CHANGED", f"BOARD_CHANGED:{booked.id}:1"),  # the live chair boards' signal
        ("RESERVE_STOCK", f"RESERVE_STOCK:{booked.id}:1"),
    ]
    assert reminders == len(booked.reminders) > 0
    named = audited_ids(scheduler_database_url(database_url), "scheduler", "BookAppointment")
    assert named.count(booked.id) == 1


def test_a_booking_waits_for_the_day_lock_the_other_paths_take(
    platform: Platform, database_url: str
) -> None:
    """The joined read takes lock_days' lock (the same key, computed by the database): a
    reschedule or PlanSchedule holding the day makes a booking of it wait."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite serialises writers with its write lock")
    site, _chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1")
    day = dt.date(2026, 12, 1)
    engine = create_engine(scheduler_database_url(database_url))
    try:
        with Session(engine) as holder, Session(engine) as booker:
            store.lock_days(holder, site.id, [day])
            booker.execute(text("SET LOCAL lock_timeout = '300ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                store.booking_inputs(booker, plan.id, "", day)
            booker.rollback()
            assert store.booking_inputs(booker, plan.id, "", day + dt.timedelta(days=1))
    finally:
        engine.dispose()


def test_a_move_and_a_cancellation_make_a_bounded_number_of_round_trips(
    platform: Platform, database_url: str
) -> None:
    """A move to another day (PostgreSQL): BEGIN, the appointment with its
    reminders, site and patient (locked), the two days' locks, the plan's inputs, the new
    day, one statement writing the move, its reminders (old cancelled, new scheduled), its
    outbox rows, the request_id's key with the response and the audit record, COMMIT: 8 (9 with
    the request_id claimed first, until 2026-12-05; 10 with the pool's pre-ping, 43 before). A
    cancellation: BEGIN, the appointment, one write with its key and audit record, COMMIT: 4
    (5 with the claim, 6 with the pre-ping, 22 before)."""
    site, chairs = site_with_chairs(platform)
    warm = patient_plan(platform, site, "MRN-W")
    book(platform, warm, chairs[0], dt.date(2026, 12, 1), 8)
    plan = patient_plan(platform, site, "MRN-1")
    booked = book(platform, plan, chairs[1], dt.date(2026, 12, 1), 8)
    with round_trips_by_thread() as moved:
        platform.scheduler.RescheduleAppointment(
            pb.RescheduleAppointmentRequest(
                id=booked.id,
                chair_id=chairs[1].id,
                local_date=date(2026, 12, 2),
                local_start=TimeOfDay(hours=9),
                request_id="move-1",
            )
        )
    with round_trips_by_thread() as cancelled:
        platform.scheduler.CancelAppointment(
            pb.CancelAppointmentRequest(id=booked.id, reason="unwell", request_id="cancel-1")
        )
    sqlite = database_url.startswith("sqlite")
    assert moved.of_thread_sending(KEYS) <= (MOVE_STATEMENTS_SQLITE if sqlite else MOVE_ROUND_TRIPS)
    assert cancelled.of_thread_sending(KEYS) <= (
        CANCEL_STATEMENTS_SQLITE if sqlite else CANCEL_ROUND_TRIPS
    )
    shown = platform.scheduler.GetAppointment(pb.GetAppointmentRequest(id=booked.id)).appointment
    assert shown.status == pb.APPOINTMENT_STATUS_CANCELLED
    assert {r.status for r in shown.reminders} == {pb.REMINDER_STATUS_CANCELLED}
    assert len(shown.reminders) == 2 * len(booked.reminders)  # the first day's and the second's
