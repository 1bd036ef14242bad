"""Rows of a plan's coverage (authorisations and payer caps) and the administrations the caps
count. Callers check the plan (and so the caller's scope) with repository.plan_row first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.crud import found
from services.scheduler.domain.appointments import AppointmentStatus
from services.scheduler.domain.regimens.caps import State
from services.scheduler.domain.regimens.coverage import Given, PlanAuthorisation, PlanCaps
from services.scheduler.store.models import (
    AppointmentRow,
    PayerCapsRow,
    PlanAuthorisationRow,
)

# appointment status → how the caps count it
CAP_STATE = {
    AppointmentStatus.PENDING.value: State.HELD,
    AppointmentStatus.BOOKED.value: State.BOOKED,
    AppointmentStatus.CHECKED_IN.value: State.BOOKED,
    AppointmentStatus.IN_PROGRESS.value: State.BOOKED,
    AppointmentStatus.FULFILLED.value: State.GIVEN,
    AppointmentStatus.CANCELLED.value: State.CANCELLED,
    AppointmentStatus.NOSHOW.value: State.NO_SHOW,
}


def authorisation_of(row: PlanAuthorisationRow) -> PlanAuthorisation:
    return PlanAuthorisation(
        id=row.id,
        plan_id=row.plan_id,
        payer=row.payer,
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        approved_grams=row.approved_grams,
        approved_doses=row.approved_doses,
        active=row.active,
        cap_override_reason=row.cap_override_reason,
    )


def caps_of(row: PayerCapsRow) -> PlanCaps:
    return PlanCaps(
        plan_id=row.plan_id,
        payer=row.payer,
        grams_per_7_days=row.grams_per_7_days,
        grams_per_28_days=row.grams_per_28_days,
        authorisation_required=row.authorisation_required,
    )


def authorisation_rows(session: Session, plan_ids: Collection[str]) -> list[PlanAuthorisationRow]:
    """Newest first (by start, then creation)."""
    if not plan_ids:
        return []
    return list(
        session.scalars(
            select(PlanAuthorisationRow)
            .where(PlanAuthorisationRow.plan_id.in_(sorted(plan_ids)))
            .order_by(
                PlanAuthorisationRow.valid_from.desc(),
                PlanAuthorisationRow.created_at.desc(),
                PlanAuthorisationRow.id,
            )
        )
    )


def authorisation_row(
    session: Session, authorisation_id: str, *, for_update: bool = False
) -> PlanAuthorisationRow:
    query = select(PlanAuthorisationRow).where(PlanAuthorisationRow.id == authorisation_id)
    if for_update:
        query = query.with_for_update()
    return found(session.scalar(query), "authorisation", authorisation_id)


def caps_rows(session: Session, plan_ids: Collection[str]) -> dict[str, PayerCapsRow]:
    if not plan_ids:
        return {}
    rows = session.scalars(select(PayerCapsRow).where(PayerCapsRow.plan_id.in_(sorted(plan_ids))))
    return {r.plan_id: r for r in rows}


def caps_row(session: Session, plan_id: str, *, for_update: bool = False) -> PayerCapsRow | None:
    query = select(PayerCapsRow).where(PayerCapsRow.plan_id == plan_id)
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def administrations(
    session: Session,
    patient_id: str,
    product_id: str,
    first: dt.date,
    last: dt.date,
    exclude_id: str = "",
    now: dt.datetime | None = None,
) -> Sequence[Given]:
    """The patient's administrations of the product dated ``first`` to ``last``, as the caps
    count them: whole-vial grams booked or held (a lapsed hold does not count), grams given
    once given."""
    rows = session.scalars(
        select(AppointmentRow).where(
            AppointmentRow.patient_id == patient_id,
            AppointmentRow.product_id == product_id,
            AppointmentRow.local_date >= first,
            AppointmentRow.local_date <= last,
            AppointmentRow.id != exclude_id,
        )
    )
    counted = []
    for row in rows:
        state = CAP_STATE[row.status]
        if (
            state is State.HELD
            and now is not None
            and row.hold_expires_at is not None
            and row.hold_expires_at <= now
        ):
            continue
        grams = row.grams_given if state is State.GIVEN and row.grams_given else row.dose_grams
        counted.append(Given(row.id, row.plan_id, row.local_date, grams, state))
    return counted
