"""The lean baseline's BookAppointment: the least a race-safe booking can cost on grpcio and
psycopg, the yardstick the real scheduler's booking is measured against (issue "Speed on the
write paths").

One joined read (plan, site, chair and the request_id's earlier booking), a transaction-scoped
advisory lock on the site-day, one read of the day's bookings, then one statement inserting
the booking, its outbox row, its reminders and the idempotency row. The lock serialises
bookings of one site-day, so the day read sees every committed booking and a chair-minute is
never booked twice; a repeated request_id answers the first booking (found by the joined read,
by the day read when the first call committed while this one waited on the lock, or by the
idempotency row's unique key).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.date_pb2 import Date
from google.type.timeofday_pb2 import TimeOfDay

from infusion.scheduler.v1 import scheduler_pb2 as pb

SCHEMA = """
CREATE TABLE IF NOT EXISTS lean_sites (
    id text PRIMARY KEY, time_zone text NOT NULL, turnover_minutes integer NOT NULL
);
CREATE TABLE IF NOT EXISTS lean_chairs (
    id text PRIMARY KEY, site_id text NOT NULL REFERENCES lean_sites (id),
    active boolean NOT NULL DEFAULT true
);
CREATE TABLE IF NOT EXISTS lean_plans (
    id text PRIMARY KEY, patient_id text NOT NULL, site_id text NOT NULL REFERENCES lean_sites (id),
    product_id text NOT NULL, dose_grams text NOT NULL, chair_minutes integer NOT NULL
);
CREATE TABLE IF NOT EXISTS lean_bookings (
    id text PRIMARY KEY, site_id text NOT NULL, patient_id text NOT NULL, plan_id text NOT NULL,
    chair_id text NOT NULL, status text NOT NULL, local_date date NOT NULL,
    start_minute integer NOT NULL, end_minute integer NOT NULL,
    start_at timestamptz NOT NULL, end_at timestamptz NOT NULL, chair_minutes integer NOT NULL,
    dose_grams text NOT NULL, product_id text NOT NULL, created_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS lean_bookings_day ON lean_bookings (site_id, local_date);
CREATE TABLE IF NOT EXISTS lean_outbox (
    id text PRIMARY KEY, topic text NOT NULL, payload jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS lean_reminders (
    id text PRIMARY KEY, booking_id text NOT NULL REFERENCES lean_bookings (id),
    offset_label text NOT NULL, due_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS lean_idempotency (
    request_id text PRIMARY KEY, booking_id text NOT NULL REFERENCES lean_bookings (id)
);
"""

_PLAN = """
SELECT p.patient_id, p.site_id, p.product_id, p.dose_grams, p.chair_minutes,
       s.time_zone, s.turnover_minutes, c.id, i.booking_id
FROM lean_plans p
JOIN lean_sites s ON s.id = p.site_id
LEFT JOIN lean_chairs c ON c.id = %(chair)s AND c.site_id = p.site_id AND c.active
LEFT JOIN lean_idempotency i ON i.request_id = %(request)s
WHERE p.id = %(plan)s
"""

_COLUMNS = (
    "b.id, b.site_id, b.patient_id, b.plan_id, b.chair_id, b.local_date, b.start_minute, "
    "b.end_minute, b.start_at, b.end_at, b.chair_minutes, b.dose_grams, b.product_id, "
    "b.created_at"
)
_DAY = f"""
SELECT {_COLUMNS}, i.request_id FROM lean_bookings b
LEFT JOIN lean_idempotency i ON i.booking_id = b.id
WHERE b.site_id = %s AND b.local_date = %s AND b.status = 'BOOKED'
"""
_BOOKING = f"SELECT {_COLUMNS} FROM lean_bookings b WHERE b.id = %s"

_INSERT = """
WITH booked AS (
    INSERT INTO lean_bookings VALUES (%(id)s, %(site)s, %(patient)s, %(plan)s, %(chair)s,
        'BOOKED', %(day)s, %(start_minute)s, %(end_minute)s, %(start_at)s, %(end_at)s,
        %(minutes)s, %(dose)s, %(product)s, %(now)s)
    RETURNING id
), outbox AS (
    INSERT INTO lean_outbox SELECT gen_random_uuid()::text, 'appointment.booked', %(event)s::jsonb,
        %(now)s FROM booked
), reminders AS (
    INSERT INTO lean_reminders
    SELECT gen_random_uuid()::text, booked.id, r.label, r.due FROM booked,
        unnest(%(labels)s::text[], %(dues)s::timestamptz[]) AS r (label, due)
)
INSERT INTO lean_idempotency SELECT %(request)s, id FROM booked
"""

REMINDER_OFFSETS_HOURS = (72, 24)
"""As the scheduler's default: a reminder three days and one day before the start."""


def _timestamp(at: dt.datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(at)
    return out


def _appointment(row: tuple[Any, ...]) -> pb.BookAppointmentResponse:
    """The answer for a booking row (_COLUMNS' order)."""
    day: dt.date = row[5]
    return pb.BookAppointmentResponse(
        appointment=pb.Appointment(
            id=row[0],
            site_id=row[1],
            patient_id=row[2],
            therapy_plan_id=row[3],
            plan_version=1,
            chair_id=row[4],
            status=pb.APPOINTMENT_STATUS_BOOKED,
            local_date=Date(year=day.year, month=day.month, day=day.day),
            local_start=TimeOfDay(hours=row[6] // 60, minutes=row[6] % 60),
            local_end=TimeOfDay(hours=row[7] // 60 % 24, minutes=row[7] % 60),
            start_time=_timestamp(row[8]),
            end_time=_timestamp(row[9]),
            chair_minutes=row[10],
            dose_grams=row[11],
            product_id=row[12],
            create_time=_timestamp(row[13]),
        )
    )


def book(
    conn: psycopg.Connection[Any], request: pb.BookAppointmentRequest, context: grpc.ServicerContext
) -> pb.BookAppointmentResponse:
    """One booking on an autocommit connection, in a transaction of its own."""
    try:
        with conn.transaction():
            return _book(conn, request, context)
    except psycopg.errors.UniqueViolation:  # the same request_id committed under this call
        rows = conn.execute(_PLAN, _keys(request)).fetchall()
        if not rows or rows[0][8] is None:
            raise
        return _appointment(conn.execute(_BOOKING, (rows[0][8],)).fetchone() or ())


def _keys(request: pb.BookAppointmentRequest) -> dict[str, str]:
    return {
        "plan": request.therapy_plan_id,
        "chair": request.chair_id,
        "request": request.request_id,
    }


def _book(
    conn: psycopg.Connection[Any], request: pb.BookAppointmentRequest, context: grpc.ServicerContext
) -> pb.BookAppointmentResponse:
    found = conn.execute(_PLAN, _keys(request)).fetchone()
    if found is None:
        context.abort(grpc.StatusCode.NOT_FOUND, "therapy plan not found")
    patient, site, product, dose, minutes, zone, turnover, chair, earlier = found
    if earlier is not None:
        return _appointment(conn.execute(_BOOKING, (earlier,)).fetchone() or ())
    if chair is None:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "chair not at the plan's site")
    d, t = request.local_date, request.local_start
    day = dt.date(d.year, d.month, d.day)
    start_minute = t.hours * 60 + t.minutes
    end_minute = start_minute + minutes
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{site}/{day}",))
    for row in conn.execute(_DAY, (site, day)):
        if row[14] == request.request_id:
            return _appointment(row[:14])
        if row[4] == chair and (
            row[6] < end_minute + turnover and start_minute < row[7] + turnover
        ):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the chair is taken then")
    local = dt.datetime.combine(day, dt.time(), ZoneInfo(zone))
    start_at = (local + dt.timedelta(minutes=start_minute)).astimezone(dt.UTC)
    end_at = start_at + dt.timedelta(minutes=minutes)
    bid, now = str(uuid.uuid4()), dt.datetime.now(dt.UTC)
    conn.execute(
        _INSERT,
        {
            "id": bid,
            "site": site,
            "patient": patient,
            "plan": request.therapy_plan_id,
            "chair": chair,
            "day": day,
            "start_minute": start_minute,
            "end_minute": end_minute,
            "start_at": start_at,
            "end_at": end_at,
            "minutes": minutes,
            "dose": dose,
            "product": product,
            "now": now,
            "event": json.dumps({"appointment_id": bid, "patient_id": patient}),
            "labels": [f"{h}h" for h in REMINDER_OFFSETS_HOURS],
            "dues": [start_at - dt.timedelta(hours=h) for h in REMINDER_OFFSETS_HOURS],
            "request": request.request_id,
        },
    )
    row = (bid, site, patient, request.therapy_plan_id, chair, day, start_minute, end_minute)
    return _appointment((*row, start_at, end_at, minutes, dose, product, now))
