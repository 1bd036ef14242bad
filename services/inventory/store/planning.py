"""Queries of forecasting, reorder policies and purchase orders.

The forecast reads aggregates only: reserved demand is summed per day in SQL (thousands of
reservations become at most a horizon's worth of rows), lots and open order lines of one
product at one site are few."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.errors import Aborted, NotFound
from services.common.pagination import PageRequest
from services.inventory.domain.purchasing import OrderLine, OrderState, PurchaseOrder
from services.inventory.domain.stock import LotState, MovementKind
from services.inventory.store.models import (
    DemandForecastRow,
    LotRow,
    MovementRow,
    PurchaseOrderLineRow,
    PurchaseOrderRow,
    ReorderPolicyRow,
    ReservationRow,
)
from services.inventory.store.site_scope import check_site, in_scope

MG_PER_G = Decimal(1000)
OPEN_STATES = ("OPEN", "PARTIALLY_RECEIVED")


def grams(mg: int) -> Decimal:
    return Decimal(mg) / MG_PER_G


@dataclass(frozen=True)
class LotStock:
    expiry_date: dt.date
    presentation_grams: Decimal
    on_hand_vials: int
    reserved_vials: int


def in_date_lots(session: Session, site_id: str, product_id: str, day: dt.date) -> list[LotStock]:
    """AVAILABLE lots with vials on hand that are still usable on ``day``."""
    rows = session.execute(
        select(
            LotRow.expiry_date,
            LotRow.presentation_grams,
            LotRow.on_hand_vials,
            LotRow.reserved_vials,
        ).where(
            LotRow.site_id == site_id,
            LotRow.product_id == product_id,
            LotRow.state == LotState.AVAILABLE.value,
            LotRow.on_hand_vials > 0,
            LotRow.expiry_date >= day,
        )
    )
    return [LotStock(*r) for r in rows]


def reserved_by_day(
    session: Session, site_id: str, product_id: str, first: dt.date, last: dt.date
) -> dict[dt.date, Decimal]:
    """Open reservations' grams per needed-on day. An ACTIVE reservation holds vials of the
    product it was allocated (maybe an equivalent); an AT_RISK one still wants what it asked."""
    rows = session.execute(
        select(ReservationRow.needed_on, func.sum(ReservationRow.grams_mg))
        .where(
            ReservationRow.site_id == site_id,
            ReservationRow.needed_on >= first,
            ReservationRow.needed_on <= last,
            or_(
                and_(
                    ReservationRow.state == "ACTIVE",
                    ReservationRow.allocated_product_id == product_id,
                ),
                and_(ReservationRow.state == "AT_RISK", ReservationRow.product_id == product_id),
            ),
        )
        .group_by(ReservationRow.needed_on)
    )
    return {day: grams(int(mg)) for day, mg in rows}


def forecast_by_day(
    session: Session, site_id: str, product_id: str, first: dt.date, last: dt.date
) -> dict[dt.date, Decimal]:
    rows = session.execute(
        select(DemandForecastRow.day, DemandForecastRow.grams_mg).where(
            DemandForecastRow.site_id == site_id,
            DemandForecastRow.product_id == product_id,
            DemandForecastRow.day >= first,
            DemandForecastRow.day <= last,
        )
    )
    return {day: grams(mg) for day, mg in rows}


def open_arrivals(
    session: Session, site_id: str, product_id: str
) -> list[tuple[dt.date | None, Decimal]]:
    """(expected date, grams still to come) of every open order line of the product."""
    rows = session.execute(
        select(
            PurchaseOrderRow.expected_date,
            PurchaseOrderLineRow.presentation_grams,
            PurchaseOrderLineRow.vials_ordered - PurchaseOrderLineRow.vials_received,
        )
        .join(PurchaseOrderRow, PurchaseOrderRow.id == PurchaseOrderLineRow.purchase_order_id)
        .where(
            PurchaseOrderRow.site_id == site_id,
            PurchaseOrderRow.state.in_(OPEN_STATES),
            PurchaseOrderLineRow.product_id == product_id,
        )
    )
    return [(day, size * remaining) for day, size, remaining in rows if remaining > 0]


def latest_receipt_cost(
    session: Session, site_id: str, product_id: str, presentation_grams: Decimal
) -> tuple[Decimal, str] | None:
    """Unit cost and currency of the last receipt of this vial size at the site. Sizes are
    compared as Decimals (text columns may hold "10" or "10.0")."""
    lots = session.execute(
        select(LotRow.id, LotRow.presentation_grams).where(
            LotRow.site_id == site_id, LotRow.product_id == product_id
        )
    )
    ids = [lot_id for lot_id, size in lots if size == presentation_grams]
    if not ids:
        return None
    row = session.execute(
        select(MovementRow.unit_cost, MovementRow.currency)
        .where(MovementRow.lot_id.in_(ids), MovementRow.kind == MovementKind.RECEIPT.value)
        .order_by(MovementRow.seq.desc())
        .limit(1)
    ).first()
    return None if row is None else (row[0], row[1])


# --- demand forecasts ---------------------------------------------------------------------------


def upsert_forecasts(
    session: Session, entries: Sequence[tuple[str, str, dt.date, int]], now: dt.datetime
) -> None:
    """(site, product, day, mg) entries, 0 mg deleting the day; existing rows of each (site,
    product) are read in one query rather than one per entry."""
    by_key: dict[tuple[str, str], list[tuple[dt.date, int]]] = {}
    for site_id, product_id, day, mg in entries:
        by_key.setdefault((site_id, product_id), []).append((day, mg))
    for (site_id, product_id), days in by_key.items():
        existing = {
            r.day: r
            for r in session.scalars(
                select(DemandForecastRow).where(
                    DemandForecastRow.site_id == site_id,
                    DemandForecastRow.product_id == product_id,
                    DemandForecastRow.day.in_([d for d, _ in days]),
                )
            )
        }
        for day, mg in days:
            row = existing.get(day)
            if row is not None and mg == 0:
                session.delete(row)
            elif row is not None:
                row.grams_mg, row.updated_at = mg, now
            elif mg > 0:
                session.add(
                    DemandForecastRow(
                        site_id=site_id, product_id=product_id, day=day, grams_mg=mg, updated_at=now
                    )
                )
    _flush(session, "a concurrent forecast upsert wrote the same day: retry")


def _flush(session: Session, clash: str) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as error:
        raise Aborted(clash) from error


# --- reorder policies ---------------------------------------------------------------------------


def policy_row(
    session: Session, site_id: str, product_id: str, *, for_update: bool = False
) -> ReorderPolicyRow | None:
    check_site(session, site_id, "reorder policy", f"{site_id}/{product_id}")
    query = select(ReorderPolicyRow).where(
        ReorderPolicyRow.site_id == site_id, ReorderPolicyRow.product_id == product_id
    )
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def insert_policy(session: Session, row: ReorderPolicyRow) -> ReorderPolicyRow:
    session.add(row)
    _flush(session, "a concurrent request created this reorder policy first: re-read it")
    return row


def site_policies(session: Session, site_id: str) -> list[ReorderPolicyRow]:
    return list(
        session.scalars(
            select(ReorderPolicyRow)
            .where(ReorderPolicyRow.site_id == site_id)
            .order_by(ReorderPolicyRow.product_id)
        )
    )


# --- purchase orders ----------------------------------------------------------------------------


def to_order(row: PurchaseOrderRow, lines: Sequence[PurchaseOrderLineRow]) -> PurchaseOrder:
    return PurchaseOrder(
        id=row.id,
        site_id=row.site_id,
        supplier=row.supplier,
        state=OrderState(row.state),
        expected_date=row.expected_date,
        reference=row.reference,
        cancel_reason=row.cancel_reason,
        revision=row.revision,
        created_at=row.created_at,
        updated_at=row.updated_at,
        lines=[
            OrderLine(
                id=x.id,
                line_number=x.line_number,
                product_id=x.product_id,
                presentation_grams=x.presentation_grams,
                vials_ordered=x.vials_ordered,
                vials_received=x.vials_received,
                unit_cost=x.unit_cost,
                currency=x.currency,
            )
            for x in sorted(lines, key=lambda x: x.line_number)
        ],
    )


def save_order(
    row: PurchaseOrderRow,
    lines: Sequence[PurchaseOrderLineRow],
    order: PurchaseOrder,
    now: dt.datetime,
) -> None:
    """Store an order's new state and line counts: a new revision of the order."""
    received = {x.id: x.vials_received for x in order.lines}
    for line in lines:
        line.vials_received = received[line.id]
    row.state = order.state.value
    row.cancel_reason = order.cancel_reason
    row.revision += 1
    row.updated_at = now


def order_row(session: Session, order_id: str, *, for_update: bool = False) -> PurchaseOrderRow:
    query = select(PurchaseOrderRow).where(PurchaseOrderRow.id == order_id)
    if for_update:
        query = query.with_for_update()
    row = session.scalar(query) if order_id else None
    if row is None:
        raise NotFound("purchase order", order_id)
    check_site(session, row.site_id, "purchase order", order_id)
    return row


def order_lines(
    session: Session, order_ids: Iterable[str]
) -> dict[str, list[PurchaseOrderLineRow]]:
    ids = list(order_ids)
    found: dict[str, list[PurchaseOrderLineRow]] = {i: [] for i in ids}
    if ids:
        rows = session.scalars(
            select(PurchaseOrderLineRow)
            .where(PurchaseOrderLineRow.purchase_order_id.in_(ids))
            .order_by(PurchaseOrderLineRow.purchase_order_id, PurchaseOrderLineRow.line_number)
        )
        for row in rows:
            found[row.purchase_order_id].append(row)
    return found


def insert_order(
    session: Session, order: PurchaseOrderRow, lines: Sequence[PurchaseOrderLineRow]
) -> None:
    session.add(order)
    session.flush()  # the order row first: its lines refer to it
    session.add_all(lines)
    session.flush()


def list_orders(
    session: Session, site_id: str, state: str, page: PageRequest
) -> list[PurchaseOrderRow]:
    """Newest first (ids are UUIDv7, so id order is creation order)."""
    query = select(PurchaseOrderRow).where(in_scope(PurchaseOrderRow.site_id))
    if site_id:
        query = query.where(PurchaseOrderRow.site_id == site_id)
    if state:
        query = query.where(PurchaseOrderRow.state == state)
    if page.after:
        query = query.where(PurchaseOrderRow.id < page.after[0])
    return list(session.scalars(query.order_by(PurchaseOrderRow.id.desc()).limit(page.size + 1)))
