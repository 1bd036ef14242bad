"""The lean baseline's ReserveStock: the least a race-safe reservation can cost on grpcio and
psycopg, so the real inventory's path is measured against what the work itself needs rather
than against echo alone (issue "Speed on the write paths").

One unlocked SELECT of the product's in-date lots (bounded to the first lots that cover the
dose, earliest expiry first), the allocation in Python (the product asked for, whole vials,
FEFO), then one statement that adds the vials to the chosen lots and inserts the reservation,
its lines and its ledger rows. The lots' CHECK (reserved <= on_hand) aborts that statement
when another call took the vials since the read, so nothing is ever over-committed and the
call simply reads again; a repeated appointment id fails on the reservation's unique key and
answers the first reservation.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any, NamedTuple

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.date_pb2 import Date

from infusion.inventory.v1 import inventory_pb2 as inv

SCHEMA = """
CREATE TABLE IF NOT EXISTS lean_lots (
    id text PRIMARY KEY,
    site_id text NOT NULL,
    product_id text NOT NULL,
    lot_number text NOT NULL,
    presentation_grams numeric NOT NULL,
    expiry_date date NOT NULL,
    on_hand integer NOT NULL,
    reserved integer NOT NULL DEFAULT 0,
    CHECK (reserved <= on_hand)
);
CREATE INDEX IF NOT EXISTS lean_lots_shelf ON lean_lots (site_id, product_id, expiry_date);
CREATE TABLE IF NOT EXISTS lean_reservations (
    id text PRIMARY KEY,
    appointment_id text NOT NULL UNIQUE,
    site_id text NOT NULL,
    patient_id text NOT NULL,
    product_id text NOT NULL,
    grams numeric NOT NULL,
    rounding_band_percent text NOT NULL,
    needed_on date NOT NULL,
    allocated_grams numeric NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS lean_reservation_lines (
    reservation_id text NOT NULL REFERENCES lean_reservations (id),
    lot_id text NOT NULL REFERENCES lean_lots (id),
    vials integer NOT NULL,
    PRIMARY KEY (reservation_id, lot_id)
);
CREATE TABLE IF NOT EXISTS lean_ledger (
    id text PRIMARY KEY,
    lot_id text NOT NULL,
    reservation_id text NOT NULL,
    reserved_delta integer NOT NULL,
    created_at timestamptz NOT NULL
);
"""

# the lots in allocation order (earliest expiry, fullest, id) up to the first that, with the
# ones before it, holds the dose: no lot after those can be chosen
_CANDIDATES = """
SELECT id, lot_number, presentation_grams, expiry_date, free FROM (
    SELECT id, lot_number, presentation_grams, expiry_date, on_hand - reserved AS free,
           coalesce(sum((on_hand - reserved) * presentation_grams) OVER (
               ORDER BY expiry_date, on_hand - reserved DESC, id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
    FROM lean_lots
    WHERE site_id = %(site)s AND product_id = %(product)s AND expiry_date >= %(day)s
      AND on_hand > reserved
) ranked WHERE before < %(grams)s
ORDER BY expiry_date, free DESC, id
"""

_RESERVE = """
WITH chosen (lot_id, vials) AS (
    SELECT * FROM unnest(%(lots)s::text[], %(vials)s::int[])
), taken AS (
    UPDATE lean_lots l SET reserved = l.reserved + c.vials
    FROM chosen c WHERE l.id = c.lot_id
    RETURNING l.id
), made AS (
    INSERT INTO lean_reservations VALUES (%(id)s, %(appointment)s, %(site)s, %(patient)s,
        %(product)s, %(grams)s, %(band)s, %(day)s, %(allocated)s, %(now)s)
    RETURNING id
), lined AS (
    INSERT INTO lean_reservation_lines SELECT made.id, c.lot_id, c.vials FROM made, chosen c
), ledger AS (
    INSERT INTO lean_ledger
    SELECT gen_random_uuid()::text, c.lot_id, made.id, c.vials, %(now)s FROM made, chosen c
)
SELECT count(*) FROM taken
"""

_EXISTING = """
SELECT r.id, r.site_id, r.patient_id, r.product_id, r.grams, r.rounding_band_percent,
       r.needed_on, r.allocated_grams, r.created_at,
       l.id, l.lot_number, l.presentation_grams, l.expiry_date, n.vials
FROM lean_reservations r
JOIN lean_reservation_lines n ON n.reservation_id = r.id
JOIN lean_lots l ON l.id = n.lot_id
WHERE r.appointment_id = %s
ORDER BY l.expiry_date, l.id
"""

ATTEMPTS = 20
"""Reads again after a lot was taken under the call; past this the call is ABORTED."""


def _date(day: dt.date) -> Date:
    return Date(year=day.year, month=day.month, day=day.day)


def _timestamp(at: dt.datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(at)
    return out


def allocate(lots: list[tuple[Any, ...]], grams: Decimal) -> list[tuple[tuple[Any, ...], int]]:
    """Whole vials from the lots in the order given until the dose is covered; [] when the
    lots cannot cover it."""
    chosen, left = [], grams
    for lot in lots:
        if left <= 0:
            break
        size, free = lot[2], lot[4]
        vials = min(free, math.ceil(left / size))
        chosen.append((lot, vials))
        left -= vials * size
    return chosen if left <= 0 else []


def _answer(
    request: inv.ReserveStockRequest,
    rid: str,
    lines: list[tuple[tuple[Any, ...], int]],
    allocated: Decimal,
    created: dt.datetime,
) -> inv.ReserveStockResponse:
    return inv.ReserveStockResponse(
        reservation=inv.Reservation(
            id=rid,
            appointment_id=request.appointment_id,
            site_id=request.site_id,
            patient_id=request.patient_id,
            product_id=request.product_id,
            grams=request.grams,
            rounding_band_percent=request.rounding_band_percent,
            needed_on=request.needed_on,
            state=inv.RESERVATION_STATE_ACTIVE,
            lines=[
                inv.ReservationLine(
                    lot_id=lot[0],
                    product_id=request.product_id,
                    lot_number=lot[1],
                    presentation_grams=str(lot[2]),
                    vials=vials,
                    expiry_date=_date(lot[3]),
                )
                for lot, vials in lines
            ],
            allocated_grams=str(allocated),
            overfill_grams=str(allocated - Decimal(request.grams)),
            allocated_product_id=request.product_id,
            create_time=_timestamp(created),
        )
    )


def existing(
    conn: psycopg.Connection[Any], request: inv.ReserveStockRequest
) -> inv.ReserveStockResponse | None:
    """The appointment's first reservation, as it was answered (a retry's answer)."""
    return _as_answered(request, conn.execute(_EXISTING, (request.appointment_id,)).fetchall())


def _as_answered(
    request: inv.ReserveStockRequest, rows: list[tuple[Any, ...]]
) -> inv.ReserveStockResponse | None:
    if not rows:
        return None
    first = rows[0]
    asked = inv.ReserveStockRequest(
        appointment_id=request.appointment_id,
        site_id=first[1],
        patient_id=first[2],
        product_id=first[3],
        grams=str(first[4]),
        rounding_band_percent=first[5],
        needed_on=_date(first[6]),
    )
    lines = [((r[9], r[10], r[11], r[12]), int(r[13])) for r in rows]
    return _answer(asked, first[0], lines, first[7], first[8])


_TAKEN_UNDER_US = (psycopg.errors.CheckViolation, psycopg.errors.DeadlockDetected)
"""A lot was taken since the read (or two calls crossed): read again."""
_NO_STOCK = (grpc.StatusCode.FAILED_PRECONDITION, "not enough stock")
_KEPT_TAKEN = (grpc.StatusCode.ABORTED, "lots kept being taken; try again")


def _asked(request: inv.ReserveStockRequest) -> tuple[Decimal, dt.date, dict[str, Any]]:
    """The dose, the day and the candidates' read's parameters."""
    grams = Decimal(request.grams)
    d = request.needed_on
    day = dt.date(d.year, d.month, d.day)
    read = {"site": request.site_id, "product": request.product_id, "day": day, "grams": grams}
    return grams, day, read


class _Write(NamedTuple):
    rid: str
    now: dt.datetime
    allocated: Decimal
    params: dict[str, Any]


def _write(
    request: inv.ReserveStockRequest,
    grams: Decimal,
    day: dt.date,
    chosen: list[tuple[tuple[Any, ...], int]],
) -> _Write:
    rid, now = str(uuid.uuid4()), dt.datetime.now(dt.UTC)
    allocated = sum((lot[2] * vials for lot, vials in chosen), Decimal(0))
    params = {
        "lots": [lot[0] for lot, _ in chosen],
        "vials": [vials for _, vials in chosen],
        "id": rid,
        "appointment": request.appointment_id,
        "site": request.site_id,
        "patient": request.patient_id,
        "product": request.product_id,
        "grams": grams,
        "band": request.rounding_band_percent,
        "day": day,
        "allocated": allocated,
        "now": now,
    }
    return _Write(rid, now, allocated, params)


def reserve(
    conn: psycopg.Connection[Any], request: inv.ReserveStockRequest, context: grpc.ServicerContext
) -> inv.ReserveStockResponse:
    """One reservation on an autocommit connection: each statement is its own transaction."""
    grams, day, read = _asked(request)
    for _ in range(ATTEMPTS):
        chosen = allocate(conn.execute(_CANDIDATES, read).fetchall(), grams)
        if not chosen:
            found = existing(conn, request)
            if found is not None:
                return found
            context.abort(*_NO_STOCK)
        write = _write(request, grams, day, chosen)
        try:
            conn.execute(_RESERVE, write.params)
        except _TAKEN_UNDER_US:
            continue
        except psycopg.errors.UniqueViolation:
            found = existing(conn, request)
            if found is None:
                raise
            return found
        return _answer(request, write.rid, chosen, write.allocated, write.now)
    context.abort(*_KEPT_TAKEN)


async def reserve_async(
    conn: psycopg.AsyncConnection[Any],
    request: inv.ReserveStockRequest,
    context: grpc.aio.ServicerContext[Any, Any],
) -> inv.ReserveStockResponse:
    """``reserve`` on an asynchronous connection (bench/lean_aio.py): the same statements, the
    same allocation and answers."""
    grams, day, read = _asked(request)
    for _ in range(ATTEMPTS):
        chosen = allocate(await (await conn.execute(_CANDIDATES, read)).fetchall(), grams)
        if not chosen:
            found = await existing_async(conn, request)
            if found is not None:
                return found
            await context.abort(*_NO_STOCK)
        write = _write(request, grams, day, chosen)
        try:
            await conn.execute(_RESERVE, write.params)
        except _TAKEN_UNDER_US:
            continue
        except psycopg.errors.UniqueViolation:
            found = await existing_async(conn, request)
            if found is None:
                raise
            return found
        return _answer(request, write.rid, chosen, write.allocated, write.now)
    await context.abort(*_KEPT_TAKEN)
    raise AssertionError("abort raises")  # pragma: no cover


async def existing_async(
    conn: psycopg.AsyncConnection[Any], request: inv.ReserveStockRequest
) -> inv.ReserveStockResponse | None:
    cursor = await conn.execute(_EXISTING, (request.appointment_id,))
    return _as_answered(request, await cursor.fetchall())
