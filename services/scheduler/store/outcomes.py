"""Outcome records and review decisions: rows ↔ domain values, and their queries.

Both tables are append-only. A patient's records are listed newest first; scope follows the
plan (its site), checked by the use case through repository.plan_row."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from services.common.pagination import PageRequest
from services.common.scope import current_scope
from services.scheduler.domain.regimens.cycles import Measure
from services.scheduler.domain.regimens.outcomes import Hand, OutcomeEntry, Scale
from services.scheduler.domain.regimens.reviews import Decision
from services.scheduler.store.models import OutcomeRow, PlanRow, ReviewDecisionRow
from services.scheduler.store.repository import site_scope_clause


def outcome_from_row(row: OutcomeRow) -> OutcomeEntry:
    return OutcomeEntry(
        id=row.id,
        patient_id=row.patient_id,
        plan_id=row.plan_id,
        recorded_on=row.recorded_on,
        measure=Measure(row.measure),
        value=row.value,
        hand=Hand(row.hand) if row.hand else None,
        scale=Scale(row.scale) if row.scale else None,
        wearing_off_none=row.wearing_off_none,
        appointment_id=row.appointment_id,
        note=row.note,
        recorded_by=row.recorded_by,
    )


def insert_outcome(session: Session, e: OutcomeEntry, now: dt.datetime) -> OutcomeRow:
    row = OutcomeRow(
        id=e.id,
        patient_id=e.patient_id,
        plan_id=e.plan_id,
        appointment_id=e.appointment_id,
        recorded_on=e.recorded_on,
        measure=e.measure.value,
        value=e.value,
        hand=e.hand.value if e.hand else "",
        scale=e.scale.value if e.scale else "",
        wearing_off_none=e.wearing_off_none,
        note=e.note,
        recorded_by=e.recorded_by,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def list_outcomes(
    session: Session, patient_id: str, plan_id: str, page: PageRequest
) -> list[OutcomeRow]:
    """Newest first; only records under plans whose site is in the caller's scope."""
    visible = select(PlanRow.id).where(
        PlanRow.patient_id == patient_id, site_scope_clause(current_scope(), PlanRow.site_id)
    )
    query = select(OutcomeRow).where(
        OutcomeRow.patient_id == patient_id, OutcomeRow.plan_id.in_(visible)
    )
    if plan_id:
        query = query.where(OutcomeRow.plan_id == plan_id)
    key = tuple_(OutcomeRow.recorded_on, OutcomeRow.id)
    if page.after:
        day, last_id = page.after
        query = query.where(key < (dt.date.fromisoformat(day), last_id))
    query = query.order_by(OutcomeRow.recorded_on.desc(), OutcomeRow.id.desc())
    return list(session.scalars(query.limit(page.size + 1)))


def plan_outcomes(session: Session, plan_id: str) -> list[OutcomeEntry]:
    rows = session.scalars(
        select(OutcomeRow)
        .where(OutcomeRow.plan_id == plan_id)
        .order_by(OutcomeRow.recorded_on, OutcomeRow.created_at, OutcomeRow.id)
    )
    return [outcome_from_row(r) for r in rows]


def insert_decision(
    session: Session,
    decision_id: str,
    plan_id: str,
    patient_id: str,
    plan_version: int,
    decided_on: dt.date,
    decision: Decision,
    reason: str,
    decided_by: str,
    now: dt.datetime,
) -> ReviewDecisionRow:
    row = ReviewDecisionRow(
        id=decision_id,
        plan_id=plan_id,
        patient_id=patient_id,
        plan_version=plan_version,
        decided_on=decided_on,
        decision=decision.value,
        reason=reason,
        decided_by=decided_by,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def decisions_for(session: Session, plan_ids: Sequence[str]) -> dict[str, list[ReviewDecisionRow]]:
    found: dict[str, list[ReviewDecisionRow]] = {}
    if not plan_ids:
        return found
    rows = session.scalars(
        select(ReviewDecisionRow)
        .where(ReviewDecisionRow.plan_id.in_(sorted(set(plan_ids))))
        .order_by(ReviewDecisionRow.decided_on, ReviewDecisionRow.created_at)
    )
    for row in rows:
        found.setdefault(row.plan_id, []).append(row)
    return found


def decision_row(session: Session, decision_id: str) -> ReviewDecisionRow | None:
    return session.get(ReviewDecisionRow, decision_id) if decision_id else None
