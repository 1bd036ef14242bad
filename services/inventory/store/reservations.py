"""Reservation, line and administration rows; the lot queries allocation needs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Date,
    Float,
    Integer,
    Select,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from services.common.audit.trail import ride, wrote
from services.common.db import lost_race
from services.common.errors import NotFound
from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.inventory.domain.reservations import (
    Administration,
    HeldLine,
    Reservation,
    ReservationState,
)
from services.inventory.domain.stock import Actor, LotState, MovementKind
from services.inventory.store.models import (
    AdministrationRow,
    LotRow,
    MovementRow,
    ReservationLineRow,
    ReservationRow,
)
from services.inventory.store.site_scope import check_site, in_scope


class Promisable(NamedTuple):
    """A lot that may be promised for the day, with what its ledger rows copy."""

    lot_id: str
    product_id: str
    presentation_grams: Decimal
    expiry_date: dt.date
    free_vials: int
    lot_number: str
    unit_cost: Decimal
    currency: str


def to_reservation(
    row: ReservationRow, held: Sequence[tuple[ReservationLineRow, LotRow]]
) -> Reservation:
    """The domain reservation of a row and its lines, lines in expiry order (the order the
    vials should leave the shelf)."""
    lines = [
        HeldLine(
            lot.id, lot.product_id, lot.lot_number, lot.presentation_grams, lot.expiry_date, n.vials
        )
        for n, lot in held
    ]
    return Reservation(
        id=row.id,
        appointment_id=row.appointment_id,
        site_id=row.site_id,
        patient_id=row.patient_id,
        product_id=row.product_id,
        alternative_product_ids=tuple(row.alternative_product_ids),
        grams_mg=row.grams_mg,
        rounding_band_percent=row.rounding_band_percent,
        needed_on=row.needed_on,
        state=ReservationState(row.state),
        allocated_product_id=row.allocated_product_id,
        allocated_mg=row.allocated_mg,
        at_risk_reason=row.at_risk_reason,
        revision=row.revision,
        created_at=row.created_at,
        updated_at=row.updated_at,
        lines=sorted(lines, key=lambda x: (x.expiry_date, x.lot_id)),
    )


def _values(r: Reservation, request_hash: str) -> dict[str, object]:
    return {
        "id": r.id,
        "appointment_id": r.appointment_id,
        "request_hash": request_hash,
        "site_id": r.site_id,
        "patient_id": r.patient_id,
        "product_id": r.product_id,
        "alternative_product_ids": list(r.alternative_product_ids),
        "grams_mg": r.grams_mg,
        "rounding_band_percent": r.rounding_band_percent,
        "needed_on": r.needed_on,
        "state": r.state.value,
        "allocated_product_id": r.allocated_product_id,
        "allocated_mg": r.allocated_mg,
        "at_risk_reason": r.at_risk_reason,
        "revision": r.revision,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    }


def new_row(reservation: Reservation, request_hash: str) -> ReservationRow:
    """The row of a reservation just opened (added to the session by the caller)."""
    return ReservationRow(**_values(reservation, request_hash))


def to_administration(row: AdministrationRow) -> Administration:
    return Administration(
        id=row.id,
        reservation_id=row.reservation_id,
        patient_id=row.patient_id,
        appointment_id=row.appointment_id,
        site_id=row.site_id,
        lot_id=row.lot_id,
        product_id=row.product_id,
        lot_number=row.lot_number,
        vials=row.vials,
        grams_administered=row.grams_administered,
        grams_wasted=row.grams_wasted,
        administered_at=row.administered_at,
    )


def by_appointment(session: Session, appointment_id: str) -> ReservationRow | None:
    """The appointment's reservation; NOT_FOUND when it is another organisation's."""
    row = session.scalar(
        select(ReservationRow).where(ReservationRow.appointment_id == appointment_id)
    )
    if row is not None:
        check_site(session, row.site_id, "reservation", appointment_id)
    return row


def reservation_row(
    session: Session, reservation_id: str, *, for_update: bool = False
) -> ReservationRow:
    query = select(ReservationRow).where(ReservationRow.id == reservation_id)
    if for_update:
        query = query.with_for_update()
    row = session.scalar(query) if reservation_id else None
    if row is None:
        raise NotFound("reservation", reservation_id)
    check_site(session, row.site_id, "reservation", reservation_id)
    return row


LINES_PER_READ = 1000
"""Reservations whose lines one statement reads (the daily check reads every open one's)."""


def lines(session: Session, reservation_ids: Sequence[str]) -> dict[str, list[ReservationLineRow]]:
    """Each reservation's lines, LINES_PER_READ reservations a statement."""
    out: dict[str, list[ReservationLineRow]] = {rid: [] for rid in reservation_ids}
    ids = list(out)
    for first in range(0, len(ids), LINES_PER_READ):
        for line in session.scalars(
            select(ReservationLineRow).where(
                ReservationLineRow.reservation_id.in_(ids[first : first + LINES_PER_READ])
            )
        ):
            out[line.reservation_id].append(line)
    return out


def clear_lines(session: Session, reservation_id: str) -> None:
    """Lines say what is held now; the ledger keeps what was held before."""
    session.execute(
        delete(ReservationLineRow).where(ReservationLineRow.reservation_id == reservation_id)
    )


def candidate_lots(
    session: Session,
    site_id: str,
    products: Sequence[str],
    needed_on: dt.date,
    also: Collection[str] = (),
) -> list[LotRow]:
    """Lots that may be promised for the day, plus ``also`` (lots the caller will touch),
    locked in id order so that concurrent reservations queue instead of deadlocking."""
    usable = (
        (LotRow.site_id == site_id)
        & LotRow.product_id.in_(list(products))
        & (LotRow.state == LotState.AVAILABLE.value)
        & (LotRow.expiry_date >= needed_on)
    )
    condition = usable | LotRow.id.in_(list(also)) if also else usable
    query = select(LotRow).where(condition).order_by(LotRow.id).with_for_update()
    return list(session.scalars(query.execution_options(populate_existing=True)))


def lots(session: Session, lot_ids: Collection[str], *, for_update: bool) -> dict[str, LotRow]:
    """Lot rows by id; locked ones are re-read even if the session holds them already."""
    if not lot_ids:
        return {}
    query = select(LotRow).where(LotRow.id.in_(list(lot_ids))).order_by(LotRow.id)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return {row.id: row for row in session.scalars(query)}


def _promisable_query() -> Select[Any]:
    """The query behind ``promisable``, built once: its parameters are bound per call."""
    free = LotRow.on_hand_vials - LotRow.reserved_vials
    grams = cast(LotRow.presentation_grams, Float)
    usable = (
        LotRow.site_id == bindparam("site_id"),
        LotRow.product_id.in_(bindparam("products", expanding=True)),
        LotRow.state == LotState.AVAILABLE.value,
        LotRow.expiry_date >= bindparam("needed_on", type_=Date),
        LotRow.on_hand_vials > LotRow.reserved_vials,
    )
    # the largest vial of any of the products: computed once (a window over each product
    # cost more than the scan), and at least each product's own largest, which is all the
    # bound below needs
    largest = select(func.max(grams)).where(*usable).scalar_subquery()
    ranked = (
        select(
            LotRow.id,
            LotRow.product_id,
            LotRow.presentation_grams,
            LotRow.expiry_date,
            free.label("free"),
            LotRow.lot_number,
            LotRow.unit_cost,
            LotRow.currency,
            grams.label("grams"),
            # vials of the size in the lots the allocation prefers to this one: earlier
            # expiry, then fuller, then lower id (domain/allocation.py's order)
            func.coalesce(
                func.sum(free).over(
                    partition_by=(LotRow.product_id, LotRow.presentation_grams),
                    order_by=(LotRow.expiry_date, free.desc(), LotRow.id),
                    rows=(None, -1),
                ),
                0,
            ).label("before"),
        )
        .where(*usable)
        .subquery()
    )
    # one gram of slack: the bound is computed in floating point
    enough = bindparam("dose", type_=Float) + largest + 1
    return select(
        ranked.c.id,
        ranked.c.product_id,
        ranked.c.presentation_grams,
        ranked.c.expiry_date,
        ranked.c.free,
        ranked.c.lot_number,
        ranked.c.unit_cost,
        ranked.c.currency,
    ).where(ranked.c.before * ranked.c.grams < enough)


_PROMISABLE = _promisable_query()

_LOTS = LotRow.metadata.tables["lots"]
_TAKE = (
    update(_LOTS)
    .where(
        _LOTS.c.id == bindparam("lot_id"),
        _LOTS.c.state == LotState.AVAILABLE.value,
        _LOTS.c.on_hand_vials - _LOTS.c.reserved_vials >= bindparam("vials", type_=Integer),
    )
    .values(reserved_vials=_LOTS.c.reserved_vials + bindparam("vials", type_=Integer))
)


def promisable(
    session: Session,
    site_id: str,
    products: Sequence[str],
    needed_on: dt.date,
    dose: Decimal,
) -> list[Promisable]:
    """The lots that may be promised for the day, read without locks and without building
    ORM objects.

    Bounded by the query, not by the caller: of each product's vials of one size, only the
    first lots in the allocation's order (earliest expiry, then fullest, then id) that together
    hold dose + the largest vial are returned. An allocation's total never reaches
    dose + the largest vial (any stock that covers the dose covers it before that), so it
    takes fewer vials of each size than that, and it takes them from the first lots of the
    size in that order: the rules of domain/allocation.py choose the same vials from this set
    as from every lot. A product with thousands of lots then costs what one with a handful
    does in Python; the database still reads the product's lots at the site once. Run on the
    session's connection (no ORM layer: 9 % of ReserveStock's CPU went to it)."""
    rows = session.connection().execute(
        _PROMISABLE,
        {
            "site_id": site_id,
            "products": list(products),
            "needed_on": needed_on,
            "dose": float(dose),
        },
    )
    return [Promisable(*row) for row in rows]


def take(session: Session, lines: Sequence[tuple[str, int]]) -> bool:
    """Add each line's vials to its lot's reserved count where the lot is still AVAILABLE and
    has them unreserved; False if any lot no longer had them (the caller rolls back). Lots
    are updated in id order so that concurrent reservations queue instead of deadlocking;
    each row lock is taken here, just before the commit, not when the lots were read."""
    for lot_id, vials in sorted(lines):
        done = session.execute(_TAKE, {"lot_id": lot_id, "vials": vials})
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return False
    return True


_RESERVATION_INSERT = insert(ReservationRow.metadata.tables["reservations"])
_LINES_INSERT = insert(ReservationLineRow.metadata.tables["reservation_lines"])
_MOVEMENTS_INSERT = insert(MovementRow.metadata.tables["stock_movements"])


def open_and_take(
    session: Session,
    reservation: Reservation,
    request_hash: str,
    lots: Mapping[str, Promisable],
    actor: Actor,
) -> bool:
    """Write the reservation just allocated and take its vials: the reservation, its lines,
    their RESERVATION ledger rows, each chosen lot's reserved count (only where the lot is
    still AVAILABLE and has the vials unreserved) and, on PostgreSQL, the mutation's audit
    record. False if a lot no longer had its vials: the caller rolls back and allocates again.

    PostgreSQL: one statement (data-modifying WITH clauses), so the lots' row locks are held
    for that one round trip and the commit, and the whole write is one round trip where it was
    six. The lots of one statement are locked in an order PostgreSQL chooses: two reservations
    taking the same two lots in opposite orders can deadlock, and the one PostgreSQL aborts is
    told as a lot taken (the caller allocates again). SQLite (one writer at a time): three
    INSERTs and a conditional UPDATE per lot, as statements of their own."""
    r = reservation
    wrote(ReservationRow(id=r.id, patient_id=r.patient_id))  # the audit record names it
    lines = [{"reservation_id": r.id, "lot_id": n.lot_id, "vials": n.vials} for n in r.lines]
    movements = [_reserved_movement(r, n, lots[n.lot_id], actor) for n in r.lines]
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        session.execute(_RESERVATION_INSERT, [_values(r, request_hash)])
        session.execute(_LINES_INSERT, lines)
        session.execute(_MOVEMENTS_INSERT, movements)
        return take(session, [(n.lot_id, n.vials) for n in r.lines])
    riders = ride(session)
    params: dict[str, Any] = {f"r_{k}": v for k, v in _values(r, request_hash).items()}
    for i, (line, movement) in enumerate(zip(lines, movements, strict=True)):
        params.update({f"l{i}_{k}": v for k, v in line.items()})
        params.update({f"m{i}_{k}": v for k, v in movement.items()})
    for _, values in riders:
        params.update(values)
    statement = _opened_statement(len(lines), tuple(s for s, _ in riders))
    try:
        taken = connection.execute(statement, params).scalar_one()
    except DBAPIError as error:
        if lost_race(error):  # a deadlock's victim: its lots were taken as it ran
            return False
        raise
    return bool(taken == len(lines))


_OPENED: dict[tuple[int, tuple[Any, ...]], Select[Any]] = {}


def _opened_statement(lines: int, riders: tuple[Any, ...]) -> Select[Any]:
    """``open_and_take``'s statement for ``lines`` lots and the ``riders`` (the audit record's
    INSERTs, each bound by names of its own), built once per shape: a WITH clause per
    conditional UPDATE of a lot and per INSERT, answering how many lots were taken."""
    key = (lines, riders)
    statement = _OPENED.get(key)
    if statement is not None:
        return statement
    reservations = ReservationRow.metadata.tables["reservations"]
    line_table = ReservationLineRow.metadata.tables["reservation_lines"]
    movement_table = MovementRow.metadata.tables["stock_movements"]
    taken = []
    writes = [
        insert(reservations)
        .values({c.name: bindparam(f"r_{c.name}") for c in reservations.c})
        .cte("opened")
    ]
    for i in range(lines):
        vials = bindparam(f"l{i}_vials", type_=Integer)
        taken.append(
            update(_LOTS)
            .where(
                _LOTS.c.id == bindparam(f"l{i}_lot_id"),
                _LOTS.c.state == LotState.AVAILABLE.value,
                _LOTS.c.on_hand_vials - _LOTS.c.reserved_vials >= vials,
            )
            .values(reserved_vials=_LOTS.c.reserved_vials + vials)
            .returning(_LOTS.c.id)
            .cte(f"taken_{i}")
        )
        writes.append(
            insert(line_table)
            .values({c.name: bindparam(f"l{i}_{c.name}") for c in line_table.c})
            .cte(f"line_{i}")
        )
        writes.append(
            insert(movement_table)
            .values(  # all but seq, the ledger's order, which the database numbers
                {c.name: bindparam(f"m{i}_{c.name}") for c in movement_table.c if c.name != "seq"}
            )
            .cte(f"movement_{i}")
        )
    counted = [select(func.count()).select_from(t).scalar_subquery() for t in taken]
    total: ColumnElement[Any] = counted[0]
    for more in counted[1:]:
        total = total + more
    writes.extend(rider.cte(f"rider_{n}") for n, rider in enumerate(riders))
    statement = select(total).add_cte(*writes)
    _OPENED[key] = statement
    return statement


def _reserved_movement(
    r: Reservation, n: HeldLine, lot: Promisable, actor: Actor
) -> dict[str, object]:
    """The RESERVATION ledger row of one line."""
    return {
        "id": new_id(),
        "lot_id": n.lot_id,
        "site_id": r.site_id,
        "kind": MovementKind.RESERVATION.value,
        "on_hand_delta": 0,
        "reserved_delta": n.vials,
        "unit_cost": lot.unit_cost,
        "currency": lot.currency,
        "reason_code": "RESERVED",
        "note": actor.reason,
        "actor": actor.name,
        "request_id": actor.request_id,
        "reverses_movement_id": None,
        "grams": n.vials * n.presentation_grams,
        "reservation_id": r.id,
        "reference": f"reservation:{r.id}",
        "created_at": r.created_at,
    }


def holding(
    session: Session, lot_ids: Collection[str], states: Collection[ReservationState]
) -> list[ReservationRow]:
    """Open reservations with vials on any of the lots, latest needed-on day first."""
    if not lot_ids:
        return []
    held = select(ReservationLineRow.reservation_id).where(
        ReservationLineRow.lot_id.in_(list(lot_ids))
    )
    return list(
        session.scalars(
            select(ReservationRow)
            .where(
                ReservationRow.id.in_(held),
                ReservationRow.state.in_([s.value for s in states]),
            )
            .order_by(ReservationRow.needed_on.desc(), ReservationRow.id)
        )
    )


def list_reservations(
    session: Session,
    site_id: str,
    product_id: str,
    patient_id: str,
    state: ReservationState | None,
    needed_from: dt.date | None,
    needed_to: dt.date | None,
    page: PageRequest,
) -> list[ReservationRow]:
    """By needed-on day, then id: the order a pharmacy prepares them."""
    query = select(ReservationRow).where(in_scope(ReservationRow.site_id))
    if site_id:
        query = query.where(ReservationRow.site_id == site_id)
    if product_id:
        query = query.where(ReservationRow.product_id == product_id)
    if patient_id:
        query = query.where(ReservationRow.patient_id == patient_id)
    if state is not None:
        query = query.where(ReservationRow.state == state.value)
    if needed_from is not None:
        query = query.where(ReservationRow.needed_on >= needed_from)
    if needed_to is not None:
        query = query.where(ReservationRow.needed_on <= needed_to)
    if page.after:
        day, last = dt.date.fromisoformat(page.after[0]), page.after[1]
        query = query.where(
            (ReservationRow.needed_on > day)
            | ((ReservationRow.needed_on == day) & (ReservationRow.id > last))
        )
    query = query.order_by(ReservationRow.needed_on, ReservationRow.id).limit(page.size + 1)
    return list(session.scalars(query))


def recipients(
    session: Session, product_id: str, lot_number: str, page: PageRequest
) -> list[AdministrationRow]:
    query = select(AdministrationRow).where(
        AdministrationRow.product_id == product_id,
        AdministrationRow.lot_number == lot_number,
        in_scope(AdministrationRow.site_id),
    )
    if page.after:
        query = query.where(AdministrationRow.id > page.after[0])
    return list(session.scalars(query.order_by(AdministrationRow.id).limit(page.size + 1)))


def recipient_count(session: Session, product_id: str, lot_number: str) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                AdministrationRow.product_id == product_id,
                AdministrationRow.lot_number == lot_number,
                in_scope(AdministrationRow.site_id),
            )
        )
        or 0
    )


def administrations(session: Session, reservation_id: str) -> list[AdministrationRow]:
    return list(
        session.scalars(
            select(AdministrationRow)
            .where(AdministrationRow.reservation_id == reservation_id)
            .order_by(AdministrationRow.id)
        )
    )
