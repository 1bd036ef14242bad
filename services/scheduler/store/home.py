"""Doses given at home (``home_infusions``): written by RecordHomeInfusion, read as the due
list's history beside the fulfilled appointments."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from services.scheduler.domain.due import Administration, CourseKind
from services.scheduler.store.models import HomeInfusionRow


def given_at_home(session: Session, plan_ids: Collection[str]) -> dict[str, list[Administration]]:
    """Each plan's doses given at home, by day."""
    if not plan_ids:
        return {}
    return doses_at_home(session, HomeInfusionRow.plan_id.in_(sorted(plan_ids)))


def doses_at_home(session: Session, where: ColumnElement[bool]) -> dict[str, list[Administration]]:
    """The doses given at home that ``where`` selects, by plan and day."""
    found: dict[str, list[Administration]] = {}
    rows = session.execute(
        select(HomeInfusionRow.plan_id, HomeInfusionRow.given_on, HomeInfusionRow.due_date)
        .where(where)
        .order_by(HomeInfusionRow.given_on, HomeInfusionRow.id)
    )
    for plan_id, given_on, due_date in rows:
        found.setdefault(plan_id, []).append(
            Administration(given_on, CourseKind.MAINTENANCE, due_date)
        )
    return found
