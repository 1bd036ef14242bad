"""What the due scan (services/scheduler/jobs.py) reads and writes, as columns and set-based
statements: the active plans with only their current version's due inputs (a short string
written with the version, store/due_inputs.py, not the spec parsed nor the plan built), the
fulfilled and active appointments and the doses given at home of those plans, and the watch
rows in one upsert per batch.

Two ways of naming the plans: by id (a pass after the first reads the few plans coming due and
those written since its watermark), or every active plan in id order, a batch at a time (the
first pass, with no watermark, reads them all: one query, and each batch's appointments and
home doses by id range, no IN lists of thousands of ids).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    delete,
    or_,
    select,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from services.scheduler.domain.appointments import AppointmentStatus
from services.scheduler.domain.due import Administration, DueSpec
from services.scheduler.domain.plans import PlanStatus
from services.scheduler.store import due_inputs
from services.scheduler.store.appointments import _active
from services.scheduler.store.events import upsert_insert
from services.scheduler.store.models import AppointmentRow, DueWatchRow, PlanRow, PlanVersionRow

# Which plans a read is about, as a condition on a table's plan id column: by id, or by range.
PlanFilter = Callable[[InstrumentedAttribute[str]], ColumnElement[bool]]
# A plan as the due scan reads it: id, patient_id, site_id, version, due_inputs.
PlanColumns = Row[str, str, str, int, str]


def _plans() -> Select[str, str, str, int, str]:
    """The plans with their current version's due inputs (store/due_inputs.py): five short
    columns, on every database alike."""
    current = (PlanVersionRow.plan_id == PlanRow.id) & (
        PlanVersionRow.version == PlanRow.current_version
    )
    return select(
        PlanRow.id,
        PlanRow.patient_id,
        PlanRow.site_id,
        PlanVersionRow.version,
        PlanVersionRow.due_inputs,
    ).join(PlanVersionRow, current)


def active_plans(session: Session, plan_ids: Collection[str]) -> Sequence[PlanColumns]:
    """The active ones among ``plan_ids``, with their due fields."""
    return session.execute(
        _plans().where(PlanRow.id.in_(list(plan_ids)), PlanRow.status == PlanStatus.ACTIVE.value)
    ).all()


def active_plan_batches(session: Session, size: int) -> Iterator[Sequence[PlanColumns]]:
    """Every active plan, ``size`` at a time in id order, from one query: streamed from a
    server-side cursor on PostgreSQL (its transaction stays open while the caller writes on
    other connections), read whole first on SQLite (whose open read would block the writes).
    One query rather than a keyset query per batch: without fresh statistics PostgreSQL
    plans each of those as a sort of every remaining plan."""
    query = _plans().where(PlanRow.status == PlanStatus.ACTIVE.value).order_by(PlanRow.id)
    if session.get_bind().dialect.name == "postgresql":
        # Core rows (no ORM result processing), streamed
        connection = session.connection()
        yield from connection.execute(query.execution_options(yield_per=size)).partitions()
        return
    rows = session.execute(query).all()
    for first in range(0, len(rows), size):
        yield rows[first : first + size]


def due_spec_of(row: PlanColumns) -> tuple[DueSpec, list[Administration]]:
    """A plan's due rule inputs from its columns (``_plans``): what ``due_spec`` and
    ``plan_history`` (usecases/records.py) take from the whole plan."""
    spec, history = due_inputs.decode(row.due_inputs)
    named = dataclasses.replace(
        spec, plan_id=row.id, plan_version=row.version, patient_id=row.patient_id
    )
    return named, list(history)


def appointments(session: Session, plans: PlanFilter, now: dt.datetime) -> Sequence[Any]:
    """Fulfilled and active appointments of ``plans`` (as ``appointments.for_plans``, in its
    order), the columns the due rule reads."""
    return session.execute(
        select(
            AppointmentRow.plan_id,
            AppointmentRow.status,
            AppointmentRow.local_date,
            AppointmentRow.course,
            AppointmentRow.course_day,
            AppointmentRow.due_date,
            AppointmentRow.hold_expires_at,
        )
        .where(
            plans(AppointmentRow.plan_id),
            or_(
                AppointmentRow.status == AppointmentStatus.FULFILLED.value,
                _active(now),  # type: ignore[arg-type]
            ),
        )
        .order_by(AppointmentRow.local_date, AppointmentRow.id)
    ).all()


def of_plans(plan_ids: Collection[str]) -> PlanFilter:
    ids = sorted(plan_ids)
    return lambda plan_id: plan_id.in_(ids)


def of_plan_range(first: str, last: str) -> PlanFilter:
    """The plans from ``first`` to ``last`` in id order: a batch of the first pass, read by
    range, since an IN list of its 5,000 ids costs more to render and send than the read."""
    return lambda plan_id: (plan_id >= first) & (plan_id <= last)


def forget(session: Session, plan_ids: Collection[str]) -> None:
    if plan_ids:
        session.execute(delete(DueWatchRow).where(DueWatchRow.plan_id.in_(list(plan_ids))))


def forget_inactive(session: Session, now: dt.datetime) -> None:
    """The watch rows come due of plans no longer active (the first pass reads the active
    plans by range, so it does not meet these)."""
    active = select(PlanRow.id).where(PlanRow.status == PlanStatus.ACTIVE.value)
    session.execute(
        delete(DueWatchRow).where(
            DueWatchRow.next_check_at <= now, DueWatchRow.plan_id.not_in(active)
        )
    )


_UNNEST_UPSERT = f"""
INSERT INTO {DueWatchRow.__tablename__} (plan_id, next_check_at, checked_at)
SELECT plan_id, next_check_at, %s::timestamptz
FROM unnest(%s::text[], %s::timestamptz[]) AS rows (plan_id, next_check_at)
ON CONFLICT (plan_id) DO UPDATE
SET next_check_at = excluded.next_check_at, checked_at = excluded.checked_at
WHERE {DueWatchRow.__tablename__}.next_check_at IS DISTINCT FROM excluded.next_check_at
"""


def save(
    session: Session, plan_ids: list[str], checks: list[dt.datetime | None], now: dt.datetime
) -> None:
    """Upsert the watch rows (plan ``plan_ids[i]`` next looked at ``checks[i]``): on
    PostgreSQL one statement, the rows passed as two arrays (``unnest``); elsewhere one
    statement executed over the rows. A row whose next check is unchanged is not written
    again (a first pass over plans already watched rewrites only what moved: about 40 %
    less time for the statement than updating every row, in psql on 100,000 rows)."""
    if not plan_ids:
        return
    if session.get_bind().dialect.name == "postgresql":
        # the driver itself, the arrays adapted in its C code: through SQLAlchemy's per-value
        # processing, 100,000 ids cost more than the upsert (the statement runs in the
        # session's transaction)
        driver = session.connection().connection.driver_connection
        with driver.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(_UNNEST_UPSERT, (now, plan_ids, checks))
        return
    insert = upsert_insert(session)
    stmt = insert(DueWatchRow.__table__)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["plan_id"],
            set_={
                "next_check_at": stmt.excluded.next_check_at,
                "checked_at": stmt.excluded.checked_at,
            },
            where=DueWatchRow.__table__.c.next_check_at.is_distinct_from(
                stmt.excluded.next_check_at
            ),
        ),
        [
            {"plan_id": plan, "next_check_at": check, "checked_at": now}
            for plan, check in zip(plan_ids, checks, strict=True)
        ],
    )
