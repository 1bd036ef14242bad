"""What the due scan (services/scheduler/jobs.py) reads and writes, as columns and set-based
statements: the active plans with only the fields their due dates depend on (read from the
stored spec by the database, not by building each plan), the fulfilled and active
appointments of those plans, and the watch rows in one upsert per batch.

Two ways of naming the plans: by id (a pass after the first reads the few plans coming due and
those written since its watermark), or every active plan in id order, a batch at a time (the
first pass, with no watermark, reads them all: one query, and each batch's appointments by id
range, no IN lists of thousands of ids).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Integer,
    Row,
    Select,
    String,
    column,
    delete,
    func,
    join,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session

from services.scheduler.domain.appointments import AppointmentStatus
from services.scheduler.domain.due import Administration, CourseKind, DueSpec
from services.scheduler.domain.plans import PlanStatus
from services.scheduler.store.appointments import _active
from services.scheduler.store.events import upsert_insert
from services.scheduler.store.models import AppointmentRow, DueWatchRow, PlanRow, PlanVersionRow

_DUE_FIELDS: tuple[tuple[str, Any], ...] = (
    ("patient_id", String),
    ("product_id", String),
    ("start_date", String),
    ("interval_days", Integer),
    ("window_days_early", Integer),
    ("window_days_late", Integer),
    ("induction", JSON),
    ("keep_cadence", Boolean),
    ("last_infusion_date", String),
    ("ramp_up", JSON),
    ("infusion_days", JSON),
    ("regimen_start_date", String),
)


def _plans(session: Session) -> Select[Any]:
    """The plans with the fields of their current spec the due rule reads. PostgreSQL parses
    each stored spec (json) once, into a record (``json_to_record``); one ``->>`` per field
    would parse it once per field, five times slower over 100,000 plans."""
    joined = select(PlanRow.id, PlanRow.patient_id, PlanRow.site_id, PlanVersionRow.version)
    current = (PlanVersionRow.plan_id == PlanRow.id) & (
        PlanVersionRow.version == PlanRow.current_version
    )
    if session.get_bind().dialect.name == "postgresql":
        record = (
            func.json_to_record(PlanVersionRow.spec)
            .table_valued(*(column(name, kind) for name, kind in _DUE_FIELDS))
            .render_derived(name="due", with_types=True)
        )
        return joined.add_columns(
            record.c.patient_id.label("spec_patient_id"),
            record.c.product_id,
            record.c.start_date,
            record.c.interval_days,
            record.c.window_days_early,
            record.c.window_days_late,
            record.c.induction["days"].as_integer().label("induction_days"),
            record.c.keep_cadence,
            record.c.last_infusion_date,
            record.c.ramp_up,
            record.c.infusion_days,
            record.c.regimen_start_date,
        ).select_from(join(PlanRow, PlanVersionRow, current).join(record, true()))
    spec = PlanVersionRow.spec
    return joined.add_columns(
        spec["patient_id"].as_string().label("spec_patient_id"),
        spec["product_id"].as_string().label("product_id"),
        spec["start_date"].as_string().label("start_date"),
        spec["interval_days"].as_integer().label("interval_days"),
        spec["window_days_early"].as_integer().label("window_days_early"),
        spec["window_days_late"].as_integer().label("window_days_late"),
        spec[("induction", "days")].as_integer().label("induction_days"),
        spec["keep_cadence"].as_boolean().label("keep_cadence"),
        spec["last_infusion_date"].as_string().label("last_infusion_date"),
        spec["ramp_up"].label("ramp_up"),
        spec["infusion_days"].label("infusion_days"),
        spec["regimen_start_date"].as_string().label("regimen_start_date"),
    ).join(PlanVersionRow, current)


def active_plans(session: Session, plan_ids: Collection[str]) -> Sequence[Row[Any]]:
    """The active ones among ``plan_ids``, with their due fields."""
    return session.execute(
        _plans(session).where(
            PlanRow.id.in_(list(plan_ids)), PlanRow.status == PlanStatus.ACTIVE.value
        )
    ).all()


def active_plan_batches(session: Session, size: int) -> Iterator[Sequence[Row[Any]]]:
    """Every active plan, ``size`` at a time in id order, from one query: streamed from a
    server-side cursor on PostgreSQL (its transaction stays open while the caller writes on
    other connections), read whole first on SQLite (whose open read would block the writes).
    One query rather than a keyset query per batch: without fresh statistics PostgreSQL
    plans each of those as a sort of every remaining plan, spec parsed and all."""
    query = _plans(session).where(PlanRow.status == PlanStatus.ACTIVE.value).order_by(PlanRow.id)
    if session.get_bind().dialect.name == "postgresql":
        # Core rows (no ORM result processing), streamed
        connection = session.connection()
        yield from connection.execute(query.execution_options(yield_per=size)).partitions()
        return
    rows = session.execute(query).all()
    for first in range(0, len(rows), size):
        yield rows[first : first + size]


def due_spec_of(row: Row[Any]) -> tuple[DueSpec, list[Administration]]:
    """A plan's due rule inputs from its columns: what ``due_spec`` and ``plan_history``
    (usecases/records.py) take from the whole plan (store/codec.py's ``plan_from_spec``)."""
    last = row.last_infusion_date
    history = (
        []
        if last is None
        else [Administration(dt.date.fromisoformat(last), CourseKind.MAINTENANCE)]
    )
    spec = DueSpec(
        plan_id=row.id,
        plan_version=row.version,
        patient_id=row.spec_patient_id,
        product_id=row.product_id,
        start_date=dt.date.fromisoformat(row.start_date),
        interval_days=int(row.interval_days),
        window_days_early=int(row.window_days_early),
        window_days_late=int(row.window_days_late),
        induction_days=int(row.induction_days or 0),
        keep_cadence=bool(row.keep_cadence),
        ramp=tuple((int(day), Decimal(str(grams))) for day, grams in row.ramp_up or ()),
        infusion_days=tuple(int(d) for d in row.infusion_days or ()),
        history_from=(
            dt.date.fromisoformat(row.regimen_start_date) if row.regimen_start_date else None
        ),
    )
    return spec, history


def appointments(session: Session, where: ColumnElement[bool], now: dt.datetime) -> Sequence[Any]:
    """Fulfilled and active appointments (as ``appointments.for_plans``, in its order), the
    columns the due rule reads."""
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
            where,
            or_(
                AppointmentRow.status == AppointmentStatus.FULFILLED.value,
                _active(now),  # type: ignore[arg-type]
            ),
        )
        .order_by(AppointmentRow.local_date, AppointmentRow.id)
    ).all()


def of_plans(plan_ids: Collection[str]) -> ColumnElement[bool]:
    return AppointmentRow.plan_id.in_(list(plan_ids))


def of_plan_range(first: str, last: str) -> ColumnElement[bool]:
    return (AppointmentRow.plan_id >= first) & (AppointmentRow.plan_id <= last)


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
SELECT plan_id, next_check_at, %b::timestamptz
FROM unnest(%b::text[], %b::timestamptz[]) AS rows (plan_id, next_check_at)
ON CONFLICT (plan_id) DO UPDATE
SET next_check_at = excluded.next_check_at, checked_at = excluded.checked_at
"""


def save(
    session: Session, plan_ids: list[str], checks: list[dt.datetime | None], now: dt.datetime
) -> None:
    """Upsert the watch rows (plan ``plan_ids[i]`` next looked at ``checks[i]``): on
    PostgreSQL one statement, the rows passed as two arrays (``unnest``); elsewhere one
    statement executed over the rows."""
    if not plan_ids:
        return
    if session.get_bind().dialect.name == "postgresql":
        # psycopg itself, to send the arrays in binary: as text, quoting 100,000 ids costs
        # more than the upsert (the statement runs in the session's transaction)
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
        ),
        [
            {"plan_id": plan, "next_check_at": check, "checked_at": now}
            for plan, check in zip(plan_ids, checks, strict=True)
        ],
    )
