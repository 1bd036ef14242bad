"""Reservation, line and administration rows; the lot queries allocation needs."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple
from typing import cast as cast_as

from sqlalchemy import (
    ColumnElement,
    Date,
    Float,
    FromClause,
    Integer,
    Select,
    String,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from services.common.audit.trail import ride, wrote
from services.common.db import Kept, Rider, defer_write, lost_race
from services.common.errors import NotFound
from services.common.ids import new_id
from services.common.joint_writes import ConditionUnmet, Write, insert_one, write_all
from services.common.pagination import PageRequest
from services.inventory.domain.reservations import (
    MAX_ALTERNATIVES,
    Administration,
    HeldLine,
    Reservation,
    ReservationState,
)
from services.inventory.domain.stock import Actor, Lot, LotState, Movement, MovementKind
from services.inventory.store.models import (
    AdministrationRow,
    LotRow,
    MovementRow,
    ReservationLineRow,
    ReservationRow,
)
from services.inventory.store.site_scope import check_site, in_scope
from services.inventory.store.stock import to_lot, to_movement

_LOTS = LotRow.metadata.tables["lots"]
_RESERVATIONS = ReservationRow.metadata.tables["reservations"]
_LINES = ReservationLineRow.metadata.tables["reservation_lines"]
_MOVEMENTS = MovementRow.metadata.tables["stock_movements"]


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


def save_revision(row: ReservationRow, reservation: Reservation) -> None:
    """Copy a revised reservation (Reservation.revise) onto its row, for the changes that
    write through the ORM's session: its state, why it is at risk, its revision and time."""
    row.state = reservation.state.value
    row.at_risk_reason = reservation.at_risk_reason
    row.revision = reservation.revision
    row.updated_at = reservation.updated_at


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


PRODUCT_SLOTS = 1 + MAX_ALTERNATIVES
"""Products a reservation may choose from: the one asked for and its alternatives. The
promisable read names them in that many fixed parameters, the first product repeated in the
unused ones, rather than in a list SQLAlchemy expands (and renders the statement's text again
for) at every execution: 4 % of ReserveStock's CPU."""
_PRODUCT_SLOTS = [bindparam(f"product_{i}", type_=String()) for i in range(PRODUCT_SLOTS)]


def _promisable_query(giving_back: bool = False, counted: bool = False) -> Select[Any]:
    """The query behind ``promisable``, built once: its parameters are bound per call. When
    ``giving_back``, the vials reservation ``:reservation_id`` holds count as free (it is
    choosing again). When ``counted``, every row also carries ``usable``, the number of usable
    lots of the products (a second window: 0.08 ms more of the database's time a call at 50
    lots, so it is asked for once a minute per products, ``CROWDED_SECONDS``)."""
    free: ColumnElement[Any] = LotRow.on_hand_vials - LotRow.reserved_vials
    # the lots table, or (giving back) it joined to the reservation's own lines: either is a
    # FromClause, so mypy checks what is selected from it
    lots: FromClause = _LOTS
    if giving_back:
        own = _LINES.alias("own")
        free = free + func.coalesce(own.c.vials, 0)
        lots = _LOTS.outerjoin(
            own, (own.c.lot_id == LotRow.id) & (own.c.reservation_id == bindparam("reservation_id"))
        )
    grams = cast(LotRow.presentation_grams, Float)
    usable: tuple[ColumnElement[bool], ...] = (
        LotRow.site_id == bindparam("site_id"),
        LotRow.product_id.in_(_PRODUCT_SLOTS),
        LotRow.state == LotState.AVAILABLE.value,
        LotRow.expiry_date >= bindparam("needed_on", type_=Date),
    )
    # the largest vial of any of the products: computed once (a window over each product
    # cost more than the scan), and at least each product's own largest, which is all the
    # bound below needs (giving back, lots with nothing free count too: a larger bound is
    # still a bound)
    unreserved = () if giving_back else (LotRow.on_hand_vials > LotRow.reserved_vials,)
    largest = select(func.max(grams)).where(*usable, *unreserved).scalar_subquery()
    usable = (*usable, free > 0)
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
            *((func.count().over().label("usable"),) if counted else ()),
        )
        .select_from(lots)
        .where(*usable)
        .subquery()
    )
    return _within_bound(ranked, largest, *((ranked.c.usable,) if counted else ()))


def _within_bound(ranked: Any, largest: Any, *extra: ColumnElement[Any]) -> Select[Any]:
    """A promisable read's answer: of the ranked lots (each with ``before``, the vials of its
    size ahead of it in the allocation's order), those starting below dose + the largest vial,
    as ``Promisable``'s columns and then ``extra``."""
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
        *extra,
    ).where(ranked.c.before * ranked.c.grams < enough)


_NO_CUT = literal(dt.date(9999, 12, 31), Date)

PER_SIZE = 32
"""Lots of one vial size of one product the index-bounded read returns at most: a dose plus
the largest vial is a handful of lots in practice (a lot holds tens to hundreds of vials).
When a size needs more, the read says so and the window read over every lot runs instead."""


def _walked_query() -> Select[Any]:
    """``_promisable_query`` bounded by an index (PostgreSQL). Three steps, each along
    ``ix_lots_available``:

    1. the products' vial sizes, by a skip scan (one index descent per size);
    2. for each size, the expiry date of its ``:per_size``-th usable lot (``:skip`` is one
       less), read in index order: no sort, so the plan does not depend on what the planner
       knows of the table (without statistics it sorted all 1,000 lots of a product when
       asked for the first 32);
    3. the size's usable lots up to that date, ties included, of which the first
       ``:per_size`` in the allocation's order (earliest expiry, then fullest, then id),
       with the window read's running sum and bound over them.

    Every row carries ``largest``, the largest vial size of any AVAILABLE lot of the products
    (at least the window read's bound), so that the caller can tell a size cut short by
    ``:per_size`` before it held a dose plus the largest vial.

    PostgreSQL cannot stop a running sum early, so the window read sorts every usable lot of
    the products at each call: 2.9 ms of the database's time for a product of 1,000 lots,
    against 0.27 ms here, without statistics (EXPLAIN ANALYZE, 2026-12-05). For a
    product of 10 lots the window read costs the database less (0.5 against 0.7 ms a call
    from the client: the walk's plan is larger), so ``promisable`` walks only for products
    with more than CROWDED_LOTS usable lots. SQLite has no LATERAL: it keeps the window
    read."""
    site = bindparam("site_id", type_=String())
    # the products as one array (an 11-armed UNION of the slots cost 0.1 ms more to plan)
    products = bindparam("products", type_=postgresql.ARRAY(String()))
    asked = select(func.unnest(products).label("product_id")).distinct().cte("asked")

    def next_size(product: ColumnElement[Any], after: ColumnElement[Any] | None) -> Any:
        lot = _LOTS.alias()
        beyond = () if after is None else (lot.c.presentation_grams > after,)
        return (
            select(lot.c.presentation_grams.label("grams"))
            .where(
                lot.c.site_id == site,
                lot.c.product_id == product,
                lot.c.state == LotState.AVAILABLE.value,
                *beyond,
            )
            .order_by(lot.c.presentation_grams)
            .limit(1)
            .lateral()
        )

    first = next_size(asked.c.product_id, None)
    sizes = (
        select(asked.c.product_id, first.c.grams)
        .select_from(asked.join(first, true()))
        .cte("sizes", recursive=True)
    )
    found = sizes.alias("found")
    then = next_size(found.c.product_id, found.c.grams)
    sizes = sizes.union_all(
        select(found.c.product_id, then.c.grams).select_from(found.join(then, true()))
    )

    def usable(lot: Any) -> tuple[ColumnElement[bool], ...]:
        return (
            lot.c.site_id == site,
            lot.c.product_id == sizes.c.product_id,
            lot.c.presentation_grams == sizes.c.grams,
            lot.c.state == LotState.AVAILABLE.value,
            lot.c.expiry_date >= bindparam("needed_on", type_=Date),
            lot.c.on_hand_vials > lot.c.reserved_vials,
        )

    # the expiry date of the size's per_size-th usable lot, read along the index (no sort,
    # whatever the planner knows of the table): the lots up to it, ties included, hold the
    # size's first per_size lots in the allocation's order; none when it has fewer
    counted = _LOTS.alias("counted")
    cut = (
        select(counted.c.expiry_date.label("last"))
        .where(*usable(counted))
        .order_by(counted.c.expiry_date)
        .offset(bindparam("skip", type_=Integer))
        .limit(1)
        .lateral("cut")
    )
    lot = _LOTS.alias("lot")
    first_lots = (
        select(
            lot.c.id,
            lot.c.product_id,
            lot.c.presentation_grams,
            lot.c.expiry_date,
            (lot.c.on_hand_vials - lot.c.reserved_vials).label("free"),
            lot.c.lot_number,
            lot.c.unit_cost,
            lot.c.currency,
        )
        .where(*usable(lot), lot.c.expiry_date <= func.coalesce(cut.c.last, _NO_CUT))
        .order_by(lot.c.expiry_date, (lot.c.on_hand_vials - lot.c.reserved_vials).desc(), lot.c.id)
        .limit(bindparam("per_size", type_=Integer))
        .lateral("first_lots")
    )
    ranked = (
        select(
            *first_lots.c,
            cast(first_lots.c.presentation_grams, Float).label("grams"),
            func.coalesce(
                func.sum(first_lots.c.free).over(
                    partition_by=(first_lots.c.product_id, first_lots.c.presentation_grams),
                    order_by=(first_lots.c.expiry_date, first_lots.c.free.desc(), first_lots.c.id),
                    rows=(None, -1),
                ),
                0,
            ).label("before"),
        )
        .select_from(sizes.outerjoin(cut, true()).join(first_lots, true()))
        .subquery("ranked")
    )
    largest = select(func.max(cast(sizes.c.grams, Float))).scalar_subquery()
    return _within_bound(ranked, largest, largest.label("largest"))


_PROMISABLE = Kept(_promisable_query())
_PROMISABLE_COUNTED = Kept(_promisable_query(counted=True))
_PROMISABLE_GIVING_BACK = Kept(_promisable_query(giving_back=True))
_PROMISABLE_WALKED = Kept(_walked_query())
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
    giving_back: str = "",
    per_size: int = PER_SIZE,
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
    does in Python. The database reads every usable lot of the products once (the window
    read), except on PostgreSQL for products whose last count (a window read's, once a
    minute) found more than CROWDED_LOTS: then it reads only the first ``per_size`` lots of
    each size along an index (``_walked_query``), and every usable lot only when a size needs
    more. Run on the session's connection (no ORM layer: 9 % of ReserveStock's CPU went to
    it)."""
    if not 0 < len(products) <= PRODUCT_SLOTS:
        raise ValueError(f"a reservation chooses from 1 to {PRODUCT_SLOTS} products")
    params: dict[str, Any] = {"site_id": site_id, "needed_on": needed_on, "dose": float(dose)}
    connection = session.connection()
    query = _PROMISABLE
    counting = False
    if connection.dialect.name == "postgresql" and not giving_back:
        crowd = (site_id, tuple(products))
        known = _CROWDED.get(crowd)
        counting = known is None or known.until <= time.monotonic()
        if counting:
            query = _PROMISABLE_COUNTED
        elif known is not None and known.crowded:
            bounds = {"products": list(products), "per_size": per_size, "skip": per_size - 1}
            walked = _walked(connection, {**params, **bounds}, dose, per_size)
            if walked is not None:
                return walked
    for i in range(PRODUCT_SLOTS):
        params[f"product_{i}"] = products[i] if i < len(products) else products[0]
    if giving_back:  # a reservation choosing again: what it holds counts as free
        params["reservation_id"] = giving_back
        query = _PROMISABLE_GIVING_BACK
    rows = query.execute(connection, params).all()
    if counting:
        if len(_CROWDED) >= _CROWDED_KEPT:
            _CROWDED.clear()
        crowded = bool(rows) and rows[0].usable > CROWDED_LOTS
        _CROWDED[crowd] = _Crowding(time.monotonic() + CROWDED_SECONDS, crowded)
    return [Promisable(*row[:8]) for row in rows]


class _Crowding(NamedTuple):
    until: float  # time.monotonic() after which the lots are counted again
    crowded: bool  # more than CROWDED_LOTS usable lots when last counted


CROWDED_LOTS = 150
"""Usable lots of a reservation's products above which PostgreSQL is asked for the walked read
(``_walked_query``) rather than the window read. The window read costs the database about
1.35 µs more a lot (0.51 ms a call from the client at 10 lots, 1.85 ms at 1,000); the walk
costs the same at any number of lots, 0.22 ms more than the window read at 10 (its larger
plan), so the two cross near 170 lots (2026-12-05). Most products at a site have tens of lots:
they keep the cheaper window read."""
CROWDED_SECONDS = 60.0
"""How long a count of usable lots decides: the first read after it counts again (lots are
received, run out and expire)."""
_CROWDED: dict[tuple[str, tuple[str, ...]], _Crowding] = {}
"""(site, products) last counted, whether they were crowded, and until when that stands. Per
process; a lost entry costs one counted window read."""
_CROWDED_KEPT = 10_000


def _walked(
    connection: Connection, params: dict[str, Any], dose: Decimal, per_size: int
) -> list[Promisable] | None:
    """The index-bounded read's lots, or None when a vial size was cut short: ``per_size``
    lots of it came back, all within the bound, and together they hold less than the dose
    plus the largest vial (the next lot of the size might be needed)."""
    rows = _PROMISABLE_WALKED.execute(connection, params).all()
    if not rows:
        return []
    enough = float(dose) + rows[0].largest + 1
    sizes: dict[tuple[str, Decimal], list[int]] = {}
    for row in rows:
        size = sizes.setdefault((row.product_id, row.presentation_grams), [0, 0])
        size[0] += 1
        size[1] += row.free
    for (_, grams), (lots, vials) in sizes.items():
        if lots >= per_size and vials * float(grams) < enough:
            return None
    return [Promisable(*row[:8]) for row in rows]


_TAKEN = _TAKE.returning(_LOTS.c.id)
_RESERVATION_INSERT = insert_one(_RESERVATIONS, tuple(c.name for c in _RESERVATIONS.c))
_LINE_INSERT = insert_one(_LINES, tuple(c.name for c in _LINES.c))
# all but seq, the ledger's order, which the database numbers
_MOVEMENT_INSERT = insert_one(_MOVEMENTS, tuple(c.name for c in _MOVEMENTS.c if c.name != "seq"))


def open_and_take(
    session: Session,
    reservation: Reservation,
    request_hash: str,
    lots: Mapping[str, Promisable],
    actor: Actor,
) -> bool:
    """Write the reservation just allocated and take its vials: the reservation, its lines,
    their RESERVATION ledger rows, each chosen lot's reserved count (only where the lot is
    still AVAILABLE and has the vials unreserved) and the mutation's audit record. False if a
    lot no longer had its vials: nothing of the write stands, and the caller allocates again.

    On PostgreSQL this is one statement (services.common.joint_writes), so the lots' row locks
    are held for that one round trip, and the write is one round trip where it was six. The
    statement fails as a whole when a lot no longer had the vials (``expect``), so it needs no
    transaction around it (``Database.statementwise``). The lots of one statement are locked
    in an order PostgreSQL chooses: two reservations taking the same two lots in opposite
    orders can deadlock, and the one PostgreSQL aborts is told as a lot taken (the caller
    allocates again)."""
    r = reservation
    wrote(session, ReservationRow(id=r.id, patient_id=r.patient_id))  # the audit record names it
    takes = [{"lot_id": n.lot_id, "vials": n.vials} for n in sorted(r.lines, key=_by_lot)]
    lines = [{"reservation_id": r.id, "lot_id": n.lot_id, "vials": n.vials} for n in r.lines]
    writes: list[Write] = [
        (_RESERVATION_INSERT, [_values(r, request_hash)]),
        (_LINE_INSERT, lines),
        (_MOVEMENT_INSERT, _reserved(r, lots, actor)),
        (_TAKEN, takes),
    ]
    writes.extend((statement, [params]) for statement, params in ride(session))
    try:
        write_all(session.connection(), writes, expect=len(takes))
    except ConditionUnmet:  # a lot no longer had the vials: nothing of the write stands
        return False
    except DBAPIError as error:
        if lost_race(error):  # a deadlock's victim: its lots were taken as it ran
            return False
        raise
    return True


def _by_lot(line: HeldLine) -> str:
    return line.lot_id


class HeldLot(NamedTuple):
    """A lot a reservation holds vials of, with what its ledger rows copy."""

    lot_id: str
    product_id: str
    presentation_grams: Decimal
    expiry_date: dt.date
    vials: int
    lot_number: str
    unit_cost: Decimal
    currency: str


def held_lots(session: Session, reservation_id: str) -> list[HeldLot]:
    """The lots the reservation holds vials of, in one read (no ORM objects)."""
    query = (
        select(
            _LOTS.c.id,
            _LOTS.c.product_id,
            _LOTS.c.presentation_grams,
            _LOTS.c.expiry_date,
            _LINES.c.vials,
            _LOTS.c.lot_number,
            _LOTS.c.unit_cost,
            _LOTS.c.currency,
        )
        .join(_LINES, _LINES.c.lot_id == _LOTS.c.id)
        .where(_LINES.c.reservation_id == reservation_id)
    )
    return [HeldLot(*row) for row in session.connection().execute(query)]


def lock_free(session: Session, lot_ids: Collection[str]) -> dict[str, int]:
    """Lock the lots (in id order, so that concurrent writers queue instead of deadlocking)
    and answer the unreserved vials of each that is still AVAILABLE (others are left out)."""
    query = (
        select(_LOTS.c.id, _LOTS.c.state, _LOTS.c.on_hand_vials - _LOTS.c.reserved_vials)
        .where(_LOTS.c.id.in_(sorted(lot_ids)))
        .order_by(_LOTS.c.id)
        .with_for_update()
    )
    rows = session.connection().execute(query)
    return {lot_id: free for lot_id, state, free in rows if state == LotState.AVAILABLE.value}


# the columns a change of a reservation (an amend, a dispense) writes
_CHANGED_COLUMNS = (
    "grams_mg",
    "needed_on",
    "request_hash",
    "state",
    "allocated_product_id",
    "allocated_mg",
    "at_risk_reason",
    "revision",
    "updated_at",
)
_UPDATE_RESERVATION = (
    update(_RESERVATIONS)
    .where(_RESERVATIONS.c.id == bindparam("r_id"))
    .values({k: bindparam(f"r_{k}", type_=_RESERVATIONS.c[k].type) for k in _CHANGED_COLUMNS})
)


def _changed(r: Reservation, request_hash: str) -> dict[str, object]:
    """The parameters of ``_UPDATE_RESERVATION`` for the reservation as it is now."""
    values = _values(r, request_hash)
    return {"r_id": r.id, **{f"r_{k}": values[k] for k in _CHANGED_COLUMNS}}


_SHIFT = (
    update(_LOTS)
    .where(_LOTS.c.id == bindparam("lot_id"))
    .values(reserved_vials=_LOTS.c.reserved_vials + bindparam("vials", type_=Integer))
)
_LINE_VIALS = (
    update(_LINES)
    .where(
        _LINES.c.reservation_id == bindparam("line_reservation_id"),
        _LINES.c.lot_id == bindparam("line_lot_id"),
    )
    .values(vials=bindparam("line_vials", type_=Integer))
)
_LINE_DELETE = delete(_LINES).where(
    _LINES.c.reservation_id == bindparam("line_reservation_id"),
    _LINES.c.lot_id == bindparam("line_lot_id"),
)


def rechoose(
    session: Session,
    reservation: Reservation,
    request_hash: str,
    held: Sequence[HeldLot],
    lots: Mapping[str, Promisable],
    actor: Actor,
) -> None:
    """Write a reservation that chose its vials again (its figures amended), the chosen lots
    locked by ``lock_free`` and checked: a RELEASE ledger row for each line it ``held``, a
    RESERVATION row for each line it holds now, each lot's reserved count moved by the
    difference, the lines kept, changed, added and dropped, and the reservation's row. Held
    back (services.common.db.defer_write) so that the idempotency key's response and the audit
    record ride with it: on PostgreSQL one statement."""
    r = reservation
    wrote(session, ReservationRow(id=r.id, patient_id=r.patient_id))  # the audit record names it
    before = {h.lot_id: h.vials for h in held}
    after = {n.lot_id: n.vials for n in r.lines}
    shifts = [
        {"lot_id": lot_id, "vials": after.get(lot_id, 0) - before.get(lot_id, 0)}
        for lot_id in sorted(before.keys() | after.keys())
        if after.get(lot_id, 0) != before.get(lot_id, 0)
    ]
    line = {"line_reservation_id": r.id}
    release = MovementKind.RELEASE
    released = [
        movement(r, h.lot_id, h, release, "AMENDED", actor, reserved=-h.vials) for h in held
    ]
    writes: list[Write] = [
        (_UPDATE_RESERVATION, [_changed(r, request_hash)]),
        (_MOVEMENT_INSERT, released + _reserved(r, lots, actor)),
        (_SHIFT, shifts),
        (_LINE_DELETE, [{**line, "line_lot_id": k} for k in before.keys() - after.keys()]),
        (
            _LINE_VIALS,
            [
                {**line, "line_lot_id": k, "line_vials": after[k]}
                for k in before.keys() & after.keys()
                if before[k] != after[k]
            ],
        ),
        (
            _LINE_INSERT,
            [
                {"reservation_id": r.id, "lot_id": k, "vials": after[k]}
                for k in after.keys() - before.keys()
            ],
        ),
    ]

    def write(riders: Sequence[Rider]) -> None:
        write_all(session.connection(), writes + [(s, [params]) for s, params in riders])

    defer_write(session, write)


def dispensing_lots(
    session: Session, reservation_id: str, named: Collection[str]
) -> tuple[dict[str, int], dict[str, Lot]]:
    """The lots a dispense touches, locked in id order in one read: those the reservation
    holds vials of (answered with how many) and those ``named`` as opened."""
    own = _LINES.alias("own")
    holding = select(_LINES.c.lot_id).where(_LINES.c.reservation_id == reservation_id)
    query = (
        select(_LOTS, own.c.vials.label("held_vials"))
        .outerjoin(own, (own.c.lot_id == _LOTS.c.id) & (own.c.reservation_id == reservation_id))
        .where(_LOTS.c.id.in_(holding) | _LOTS.c.id.in_(sorted(named)))
        .order_by(_LOTS.c.id)
        .with_for_update(of=_LOTS)
    )
    held: dict[str, int] = {}
    lots: dict[str, Lot] = {}
    for row in session.connection().execute(query):
        lots[row.id] = to_lot(cast_as(LotRow, row))  # a row of the lots table reads as one
        if row.held_vials is not None:
            held[row.id] = row.held_vials
    return held, lots


def holding_lines(r: Reservation, held: Mapping[str, int], lots: Mapping[str, Lot]) -> None:
    """Give the reservation its lines, in expiry order, from what it ``held`` of ``lots``."""
    r.lines = sorted(
        (
            HeldLine(k, lot.product_id, lot.lot_number, lot.presentation_grams, lot.expiry_date, n)
            for k, n in held.items()
            for lot in [lots[k]]
        ),
        key=lambda x: (x.expiry_date, x.lot_id),
    )


_MOVEMENTS_RECORDED = insert(_MOVEMENTS).returning(*_MOVEMENTS.c, sort_by_parameter_order=True)
_LOT_COUNTS = (
    update(_LOTS)
    .where(_LOTS.c.id == bindparam("lot_id"))
    .values(
        on_hand_vials=bindparam("on_hand", type_=Integer),
        reserved_vials=bindparam("reserved", type_=Integer),
    )
)
_LOT_SETTLED = _LOT_COUNTS.values(
    state=bindparam("state", type_=_LOTS.c.state.type),
    revision=bindparam("revision", type_=Integer),
    updated_at=bindparam("at", type_=_LOTS.c.updated_at.type),
)
_LINES_CLEARED = delete(_LINES).where(_LINES.c.reservation_id == bindparam("line_reservation_id"))
_ADMINISTRATIONS = AdministrationRow.metadata.tables["administrations"]


def dispensed(
    session: Session,
    reservation: Reservation,
    request_hash: str,
    movements: Sequence[dict[str, object]],
    traces: Sequence[AdministrationRow],
    lots: Sequence[tuple[Lot, bool]],
) -> list[Movement]:
    """Write a dispense: its ledger rows now, read back as recorded (with their places in the
    ledger, which the database numbers); then, held back (services.common.db.defer_write) so
    that the idempotency key's response and the audit record ride with them, on PostgreSQL in
    one statement: each lot's counts (and its state, with a new revision, where ``lots`` says
    it settled into another), the administration traces, the reservation's lines cleared and
    its row."""
    r = reservation
    wrote(session, ReservationRow(id=r.id, patient_id=r.patient_id), *traces)
    recorded = [
        to_movement(cast_as(MovementRow, row))
        for row in session.connection().execute(_MOVEMENTS_RECORDED, list(movements))
    ]
    counts = [
        {"lot_id": lot.id, "on_hand": lot.balance.on_hand, "reserved": lot.balance.reserved}
        for lot, settled in lots
        if not settled
    ]
    settled = [
        {
            "lot_id": lot.id,
            "on_hand": lot.balance.on_hand,
            "reserved": lot.balance.reserved,
            "state": lot.state.value,
            "revision": lot.revision,
            "at": r.updated_at,
        }
        for lot, settled in lots
        if settled
    ]
    keys = tuple(c.name for c in _ADMINISTRATIONS.c)
    writes: list[Write] = [
        (_LOT_COUNTS, counts),
        (_LOT_SETTLED, settled),
        (insert_one(_ADMINISTRATIONS, keys), [{k: getattr(t, k) for k in keys} for t in traces]),
        (_LINES_CLEARED, [{"line_reservation_id": r.id}]),
        (_UPDATE_RESERVATION, [_changed(r, request_hash)]),
    ]

    def write(riders: Sequence[Rider]) -> None:
        write_all(session.connection(), writes + [(s, [params]) for s, params in riders])

    defer_write(session, write)
    return recorded


def _reserved(
    r: Reservation, lots: Mapping[str, Promisable], actor: Actor
) -> list[dict[str, object]]:
    """The RESERVATION ledger row of each line the reservation holds."""
    kind = MovementKind.RESERVATION
    return [
        movement(r, n.lot_id, lots[n.lot_id], kind, "RESERVED", actor, reserved=n.vials)
        for n in r.lines
    ]


def movement(
    r: Reservation,
    lot_id: str,
    lot: Promisable | HeldLot | Lot,
    kind: MovementKind,
    reason_code: str,
    actor: Actor,
    *,
    on_hand: int = 0,
    reserved: int = 0,
    grams: Decimal | None = None,
    note: str | None = None,
) -> dict[str, object]:
    """The parameters of one ledger row of the reservation's on one lot, at its last change
    (Reservation.revise): ``on_hand`` and ``reserved`` vials moved (reserved: positive into
    the hold, negative out of it), ``grams`` the vials moved unless given, ``note`` the
    actor's reason unless given. The one builder of the reserve, amend and dispense rows, so
    they carry the same columns the same way."""
    return {
        "id": new_id(),
        "lot_id": lot_id,
        "site_id": r.site_id,
        "kind": kind.value,
        "on_hand_delta": on_hand,
        "reserved_delta": reserved,
        "unit_cost": lot.unit_cost,
        "currency": lot.currency,
        "reason_code": reason_code,
        "note": actor.reason if note is None else note,
        "actor": actor.name,
        "request_id": actor.request_id,
        "reverses_movement_id": None,
        "grams": abs(on_hand or reserved) * lot.presentation_grams if grams is None else grams,
        "reservation_id": r.id,
        "reference": f"reservation:{r.id}",
        "created_at": r.updated_at,
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
