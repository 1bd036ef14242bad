"""Reservation, line and administration rows; the lot queries allocation needs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from decimal import Decimal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from services.common.errors import NotFound
from services.common.pagination import PageRequest
from services.inventory.domain.reservations import (
    Administration,
    HeldLine,
    Reservation,
    ReservationState,
)
from services.inventory.domain.stock import LotState
from services.inventory.store.models import (
    AdministrationRow,
    LotRow,
    ReservationLineRow,
    ReservationRow,
)
from services.inventory.store.site_scope import check_site, in_scope


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


def new_row(reservation: Reservation, request_hash: str) -> ReservationRow:
    """The row of a reservation just opened (added to the session by the caller)."""
    r = reservation
    return ReservationRow(
        id=r.id,
        appointment_id=r.appointment_id,
        request_hash=request_hash,
        site_id=r.site_id,
        patient_id=r.patient_id,
        product_id=r.product_id,
        alternative_product_ids=list(r.alternative_product_ids),
        grams_mg=r.grams_mg,
        rounding_band_percent=r.rounding_band_percent,
        needed_on=r.needed_on,
        state=r.state.value,
        allocated_product_id=r.allocated_product_id,
        allocated_mg=r.allocated_mg,
        at_risk_reason=r.at_risk_reason,
        revision=r.revision,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


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


def lines(session: Session, reservation_ids: Sequence[str]) -> dict[str, list[ReservationLineRow]]:
    out: dict[str, list[ReservationLineRow]] = {rid: [] for rid in reservation_ids}
    if reservation_ids:
        for line in session.scalars(
            select(ReservationLineRow).where(
                ReservationLineRow.reservation_id.in_(list(reservation_ids))
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


def promisable(
    session: Session, site_id: str, products: Sequence[str], needed_on: dt.date
) -> list[tuple[str, str, Decimal, dt.date, int]]:
    """(lot id, product, vial grams, expiry, unreserved vials) of the lots that may be
    promised for the day, read without locks and without building ORM objects."""
    rows = session.execute(
        select(
            LotRow.id,
            LotRow.product_id,
            LotRow.presentation_grams,
            LotRow.expiry_date,
            LotRow.on_hand_vials - LotRow.reserved_vials,
        ).where(
            LotRow.site_id == site_id,
            LotRow.product_id.in_(list(products)),
            LotRow.state == LotState.AVAILABLE.value,
            LotRow.expiry_date >= needed_on,
            LotRow.on_hand_vials > LotRow.reserved_vials,
        )
    )
    return [(a, b, c, d, int(e)) for a, b, c, d, e in rows]


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
