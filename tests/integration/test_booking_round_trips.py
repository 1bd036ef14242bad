"""BookAppointment's cost: how many round trips to the database one booking makes.

Counted with SQLAlchemy's engine and pool events in the thread that served the call, as
psycopg 3 talks to PostgreSQL: every statement; the BEGIN it sends before a transaction's
first statement; the COMMIT or ROLLBACK of a transaction that sent one (psycopg sends none
for a transaction that sent nothing); and the pool's pre-ping at each checkout of a
connection it already had. On SQLite only statements are counted (BEGIN IMMEDIATE is one; the
driver's COMMIT is not a round trip to a server).

After a first booking (which loads the product catalogue) a booking makes, on PostgreSQL: the
pre-ping, BEGIN, the idempotency claim, one read of the plan, its patient, measurements, site
and chair that takes the site-day lock, one read of the day (chairs, blocks, bookings, the
plan's own appointments), one statement writing the booking, its reminders, its outbox row and
the idempotency response, the audit record (one statement), COMMIT: BOOK_ROUND_TRIPS. Before
this path a booking made 42 (32 statements on SQLite): the dose's key, its plan and its
inputs read in sessions of their own, the day read table by table, the ORM's flushes.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.pool import Pool

from infusion.scheduler.v1 import scheduler_pb2 as pb
from tests.integration.builders import book, patient_plan, site_with_chairs
from tests.integration.conftest import Platform

BOOK_ROUND_TRIPS = 8
"""At most this many round trips per booking on PostgreSQL."""
BOOK_STATEMENTS_SQLITE = 10
"""At most this many statements per booking on SQLite: BEGIN IMMEDIATE, the claim, the joined
read, the day, one write per table (the booking, its reminders, its outbox row, the
idempotency response: SQLite has no data-modifying WITH), the audit record and its queue
row."""


@contextmanager
def round_trips_by_thread() -> Iterator[Counter[int]]:
    """Round trips (PostgreSQL) or statements (SQLite) while the block runs, per thread."""
    counted: Counter[int] = Counter()
    open_tx: set[int] = set()  # dbapi connections inside a transaction psycopg began
    begun: set[int] = set()  # SQLAlchemy began, psycopg has not sent BEGIN yet
    fresh: set[int] = set()

    def me() -> int:
        return threading.get_ident()

    def statement(conn: Any, _cursor: Any, _statement: str, *_args: Any) -> None:
        counted[me()] += 1
        raw = id(conn.connection.dbapi_connection)
        if conn.dialect.name == "postgresql" and raw in begun:
            begun.discard(raw)
            open_tx.add(raw)
            counted[me()] += 1  # BEGIN

    def begin(conn: Any) -> None:
        if conn.dialect.name == "postgresql":
            begun.add(id(conn.connection.dbapi_connection))

    def end(conn: Any) -> None:
        raw = id(conn.connection.dbapi_connection)
        begun.discard(raw)
        if raw in open_tx:
            open_tx.discard(raw)
            counted[me()] += 1  # COMMIT or ROLLBACK

    def reset(dbapi_connection: Any, _record: Any, _state: Any) -> None:
        raw = id(dbapi_connection)
        begun.discard(raw)
        if raw in open_tx:  # the pool's rollback on return
            open_tx.discard(raw)
            counted[me()] += 1

    def connect(dbapi_connection: Any, _record: Any) -> None:
        fresh.add(id(dbapi_connection))

    def checkout(dbapi_connection: Any, _record: Any, proxy: Any) -> None:
        raw = id(dbapi_connection)
        if raw in fresh:
            fresh.discard(raw)
        elif proxy._pool._pre_ping:
            counted[me()] += 1  # the pre-ping

    listeners: list[tuple[Any, str, Any]] = [
        (Engine, "before_cursor_execute", statement),
        (Engine, "begin", begin),
        (Engine, "commit", end),
        (Engine, "rollback", end),
        (Pool, "reset", reset),
        (Pool, "connect", connect),
        (Pool, "checkout", checkout),
    ]
    for target, name, fn in listeners:
        event.listen(target, name, fn)
    try:
        yield counted
    finally:
        for target, name, fn in listeners:
            event.remove(target, name, fn)


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
    served = max(counted.values())  # the serving thread; the audit linker runs after it
    print(f"round trips of one booking: {served}")
    if database_url.startswith("sqlite"):
        assert served <= BOOK_STATEMENTS_SQLITE
    else:
        assert served <= BOOK_ROUND_TRIPS
    # the retry answers the first result and writes nothing
    with round_trips_by_thread() as again:
        replay = book(platform, plan, chairs[1], dt.date(2026, 12, 1), 8, rid="counted-1")
    assert replay == booked
    assert max(again.values()) <= served
