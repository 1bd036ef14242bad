"""Ledger facts for the cost report. Grams and costs are exact decimal text columns, so they
are summed in Python (domain.cost), not in SQL; vial counts are integers and are summed here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from services.inventory.domain.cost import CostKind, CostMovement, Holding, Recipient
from services.inventory.domain.stock import MovementKind
from services.inventory.store.models import (
    AdministrationRow,
    LotRow,
    MovementRow,
    ReservationRow,
)

_COST_KINDS = (MovementKind.DISPENSE.value, MovementKind.WASTE.value)


def cost_movements(
    session: Session, site_id: str, since: dt.datetime, until: dt.datetime
) -> list[CostMovement]:
    """The site's DISPENSE and WASTE movements made in [since, until), each flagged when a
    REVERSAL (made at any time) undid it."""
    reversal = aliased(MovementRow)
    query = (
        select(
            MovementRow.kind,
            LotRow.product_id,
            MovementRow.grams,
            LotRow.presentation_grams,
            MovementRow.unit_cost,
            MovementRow.currency,
            MovementRow.reservation_id,
            reversal.id,
        )
        .join(LotRow, LotRow.id == MovementRow.lot_id)
        .outerjoin(reversal, reversal.reverses_movement_id == MovementRow.id)
        .where(
            MovementRow.site_id == site_id,
            MovementRow.kind.in_(_COST_KINDS),
            MovementRow.created_at >= since,
            MovementRow.created_at < until,
        )
        .order_by(MovementRow.seq)
    )
    return [
        CostMovement(
            kind=CostKind(kind),
            product_id=product_id,
            grams=grams,
            vial_grams=vial_grams,
            vial_cost=unit_cost,
            currency=currency,
            reservation_id=reservation_id or "",
            reversed=reversed_by is not None,
        )
        for (
            kind,
            product_id,
            grams,
            vial_grams,
            unit_cost,
            currency,
            reservation_id,
            reversed_by,
        ) in session.execute(query)
    ]


def recipients(session: Session, reservation_ids: Collection[str]) -> dict[str, Recipient]:
    """reservation id → the patient and appointment it was dispensed to: from the
    administration trace, or (should a trace be missing) from the reservation itself."""
    ids = sorted(set(reservation_ids))
    found: dict[str, Recipient] = {}
    for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
        for rid, patient, appointment in session.execute(
            select(
                AdministrationRow.reservation_id,
                AdministrationRow.patient_id,
                AdministrationRow.appointment_id,
            )
            .where(AdministrationRow.reservation_id.in_(chunk))
            .distinct()
        ):
            found.setdefault(rid, Recipient(patient, appointment))
        missing = [r for r in chunk if r not in found]
        if missing:
            for rid, patient, appointment in session.execute(
                select(
                    ReservationRow.id, ReservationRow.patient_id, ReservationRow.appointment_id
                ).where(ReservationRow.id.in_(missing))
            ):
                found[rid] = Recipient(patient, appointment)
    return found


def holdings(session: Session, site_id: str, until: dt.datetime) -> list[Holding]:
    """Each lot's on-hand vials at ``until``: the sum of its movements made before then,
    leaving out every reversed movement and every REVERSAL (a pair sums to zero once both are
    made; leaving both out values the period as if the mistake had never been made, the same
    rule as for dispensed and wasted cost)."""
    reversal = aliased(MovementRow)
    on_hand = func.sum(MovementRow.on_hand_delta)
    query = (
        select(
            LotRow.product_id,
            LotRow.presentation_grams,
            LotRow.unit_cost,
            LotRow.currency,
            on_hand,
        )
        .join(LotRow, LotRow.id == MovementRow.lot_id)
        .outerjoin(reversal, reversal.reverses_movement_id == MovementRow.id)
        .where(
            MovementRow.site_id == site_id,
            MovementRow.created_at < until,
            MovementRow.kind != MovementKind.REVERSAL.value,
            reversal.id.is_(None),
        )
        .group_by(
            LotRow.id,
            LotRow.product_id,
            LotRow.presentation_grams,
            LotRow.unit_cost,
            LotRow.currency,
        )
        .having(on_hand > 0)
        .order_by(LotRow.product_id, LotRow.id)
    )
    return [
        Holding(product_id, int(vials), vial_grams, unit_cost, currency)
        for product_id, vial_grams, unit_cost, currency, vials in session.execute(query)
    ]
