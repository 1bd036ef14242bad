"""Lots and ledger rows ↔ domain values; balances are sums over the ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.errors import Aborted, NotFound
from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.inventory.domain.stock import (
    Actor,
    Balance,
    Entry,
    Lot,
    LotState,
    Movement,
    MovementKind,
)
from services.inventory.store.models import LotRow, MovementRow
from services.inventory.store.site_scope import check_site, in_scope


def to_lot(row: LotRow, balance: Balance | None = None) -> Lot:
    """The domain lot of a row; ``balance`` defaults to the projections kept on the row."""
    return Lot(
        id=row.id,
        site_id=row.site_id,
        product_id=row.product_id,
        presentation_grams=row.presentation_grams,
        gtin=row.gtin,
        lot_number=row.lot_number,
        expiry_date=row.expiry_date,
        state=LotState(row.state),
        unit_cost=row.unit_cost,
        currency=row.currency,
        supplier=row.supplier,
        purchase_order_id=row.purchase_order_id,
        storage_unit_id=row.storage_unit_id,
        balance=balance or Balance(row.on_hand_vials, row.reserved_vials),
        revision=row.revision,
        created_at=row.created_at,
    )


def to_movement(row: MovementRow) -> Movement:
    return Movement(
        id=row.id,
        lot_id=row.lot_id,
        site_id=row.site_id,
        kind=MovementKind(row.kind),
        on_hand_delta=row.on_hand_delta,
        reserved_delta=row.reserved_delta,
        unit_cost=row.unit_cost,
        currency=row.currency,
        reason_code=row.reason_code,
        note=row.note,
        actor=row.actor,
        request_id=row.request_id,
        created_at=row.created_at,
        seq=row.seq,
        reverses_movement_id=row.reverses_movement_id or "",
    )


def recorded(session: Session, rows: Sequence[MovementRow]) -> list[Movement]:
    """Movements just appended, as domain values: flushed first, so each has its ledger
    sequence number."""
    session.flush()
    return [to_movement(row) for row in rows]


def lot_row(session: Session, lot_id: str, *, for_update: bool = False) -> LotRow:
    query = select(LotRow).where(LotRow.id == lot_id)
    if for_update:
        query = query.with_for_update()
    row = session.scalar(query) if lot_id else None
    if row is None:
        raise NotFound("lot", lot_id)
    check_site(session, row.site_id, "lot", lot_id)
    return row


def find_lot(
    session: Session, site_id: str, product_id: str, grams: Decimal, lot_number: str
) -> LotRow | None:
    return session.scalar(
        select(LotRow).where(
            LotRow.site_id == site_id,
            LotRow.product_id == product_id,
            LotRow.presentation_grams == grams,
            LotRow.lot_number == lot_number,
        )
    )


def known_expiry(session: Session, product_id: str, lot_number: str) -> dt.date | None:
    """The expiry this product's lot number already has anywhere (a lot has one expiry)."""
    return session.scalar(
        select(LotRow.expiry_date)
        .where(LotRow.product_id == product_id, LotRow.lot_number == lot_number)
        .limit(1)
    )


def insert_lot(session: Session, row: LotRow) -> LotRow:
    session.add(row)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as error:  # a concurrent receipt created the same lot first
        raise Aborted("the lot was created by a concurrent receipt: retry") from error
    return row


def balances(session: Session, lot_ids: Sequence[str]) -> dict[str, Balance]:
    """The projections kept on the lot rows (equal to the ledger sums: see ledger_sums)."""
    if not lot_ids:
        return {}
    rows = session.execute(
        select(LotRow.id, LotRow.on_hand_vials, LotRow.reserved_vials).where(
            LotRow.id.in_(list(lot_ids))
        )
    )
    found = {lot_id: Balance(on_hand, reserved) for lot_id, on_hand, reserved in rows}
    return {lot_id: found.get(lot_id, Balance()) for lot_id in lot_ids}


def projections_and_ledger(
    session: Session, site_id: str
) -> list[tuple[str, Balance, Balance, int]]:
    """Each lot's projection beside its ledger sums and movement count, in one statement so
    both sides are read from the same snapshot."""
    sums = (
        select(
            MovementRow.lot_id.label("lot_id"),
            func.sum(MovementRow.on_hand_delta).label("on_hand"),
            func.sum(MovementRow.reserved_delta).label("reserved"),
            func.count().label("n"),
        )
        .group_by(MovementRow.lot_id)
        .subquery()
    )
    query = select(
        LotRow.id,
        LotRow.on_hand_vials,
        LotRow.reserved_vials,
        func.coalesce(sums.c.on_hand, 0),
        func.coalesce(sums.c.reserved, 0),
        func.coalesce(sums.c.n, 0),
    ).outerjoin(sums, sums.c.lot_id == LotRow.id)
    query = query.where(in_scope(LotRow.site_id))
    if site_id:
        query = query.where(LotRow.site_id == site_id)
    return [
        (lot_id, Balance(a, b), Balance(int(c), int(d)), int(n))
        for lot_id, a, b, c, d, n in session.execute(query.order_by(LotRow.id))
    ]


def view(session: Session, row: LotRow) -> Lot:
    return to_lot(row)


def add_movement(
    session: Session,
    lot: LotRow,
    kind: MovementKind,
    on_hand_delta: int,
    reserved_delta: int,
    now: dt.datetime,
    *,
    unit_cost: Decimal | None = None,
    reason_code: str = "",
    note: str = "",
    actor: str = "",
    request_id: str = "",
    reverses: str | None = None,
    grams: Decimal | None = None,
    reservation_id: str | None = None,
    reference: str = "",
) -> MovementRow:
    """Append one movement and move the lot's projections with it. The caller holds the lot
    row locked (SELECT ... FOR UPDATE, or SQLite's write lock)."""
    lot.on_hand_vials += on_hand_delta
    lot.reserved_vials += reserved_delta
    row = MovementRow(
        id=new_id(),
        lot_id=lot.id,
        site_id=lot.site_id,
        kind=kind.value,
        on_hand_delta=on_hand_delta,
        reserved_delta=reserved_delta,
        unit_cost=lot.unit_cost if unit_cost is None else unit_cost,
        currency=lot.currency,
        reason_code=reason_code,
        note=note,
        actor=actor,
        request_id=request_id,
        reverses_movement_id=reverses,
        grams=abs(on_hand_delta) * lot.presentation_grams if grams is None else grams,
        reservation_id=reservation_id,
        reference=reference,
        created_at=now,
    )
    session.add(row)
    if reverses is None:
        return row  # flushed with the transaction's other writes
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as error:  # reverses_movement_id is unique: reversed twice at once
        raise Aborted("the movement was reversed by a concurrent request") from error
    return row


def movement_row(session: Session, movement_id: str) -> MovementRow:
    row = session.scalar(select(MovementRow).where(MovementRow.id == movement_id))
    if row is None or not movement_id:
        raise NotFound("stock movement", movement_id)
    check_site(session, row.site_id, "stock movement", movement_id)
    return row


def reversal_of(session: Session, movement_ids: Sequence[str]) -> dict[str, str]:
    """movement id → id of the REVERSAL that undid it."""
    if not movement_ids:
        return {}
    rows = session.execute(
        select(MovementRow.reverses_movement_id, MovementRow.id).where(
            MovementRow.reverses_movement_id.in_(list(movement_ids))
        )
    )
    return {str(original): str(reversal) for original, reversal in rows}


def save_state(row: LotRow, lot: Lot, now: dt.datetime) -> None:
    """Store the state and revision the domain lot reached (Lot counts a revision per change
    of state); ``now`` stamps the row when the state changed."""
    if row.state != lot.state.value:
        row.state = lot.state.value
        row.revision = lot.revision
        row.updated_at = now


def list_lots(
    session: Session,
    site_id: str,
    product_id: str,
    state: LotState | None,
    lot_number: str,
    page: PageRequest,
) -> list[LotRow]:
    """First expiry first (the order stock should leave the shelf), then id."""
    query = select(LotRow).where(in_scope(LotRow.site_id))
    if site_id:
        query = query.where(LotRow.site_id == site_id)
    if product_id:
        query = query.where(LotRow.product_id == product_id)
    if state is not None:
        query = query.where(LotRow.state == state.value)
    if lot_number:
        query = query.where(LotRow.lot_number == lot_number)
    if page.after:
        expiry, last_id = dt.date.fromisoformat(page.after[0]), page.after[1]
        query = query.where(
            (LotRow.expiry_date > expiry) | ((LotRow.expiry_date == expiry) & (LotRow.id > last_id))
        )
    query = query.order_by(LotRow.expiry_date, LotRow.id).limit(page.size + 1)
    return list(session.scalars(query))


def list_movements(
    session: Session, lot_id: str, site_id: str, page: PageRequest
) -> list[MovementRow]:
    query = select(MovementRow).where(in_scope(MovementRow.site_id))
    if lot_id:
        query = query.where(MovementRow.lot_id == lot_id)
    if site_id:
        query = query.where(MovementRow.site_id == site_id)
    if page.after:
        query = query.where(MovementRow.seq > int(page.after[0]))
    return list(session.scalars(query.order_by(MovementRow.seq).limit(page.size + 1)))


class Lots:
    """The lots of one transaction as domain objects: ``get`` locks a lot's row, ``record``
    writes back what the lot decided and appends the ledger entry it raised."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, lot_id: str) -> Lot:
        return to_lot(lot_row(self.session, lot_id, for_update=True))

    def record(
        self, lot: Lot, entry: Entry, now: dt.datetime, actor: Actor
    ) -> tuple[Lot, Movement]:
        row = self.session.get(LotRow, lot.id)  # locked by get (or the caller), so in the session
        if row is None:
            raise NotFound("lot", lot.id)
        save_state(row, lot, now)
        movement = add_movement(
            self.session,
            row,
            entry.kind,
            entry.on_hand,
            entry.reserved,
            now,
            reason_code=entry.code,
            note=actor.reason,
            actor=actor.name,
            request_id=actor.request_id,
        )
        settled = to_lot(row)
        settled.settle()
        save_state(row, settled, now)
        return to_lot(row), recorded(self.session, [movement])[0]
