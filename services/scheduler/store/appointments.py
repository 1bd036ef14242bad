"""Appointment, chair-block and day-lock rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, selectinload

from services.common.errors import NotFound
from services.common.pagination import PageRequest
from services.common.scope import current_scope
from services.scheduler.domain.appointments import (
    ACTIVE,
    Appointment,
    AppointmentStatus,
    Parties,
    Reminder,
)
from services.scheduler.domain.capacity import FixedBooking
from services.scheduler.domain.due import CourseKind
from services.scheduler.domain.reminders import ReminderStatus
from services.scheduler.domain.sites import ChairBlock
from services.scheduler.store import reminders
from services.scheduler.store.events import Event, write_events
from services.scheduler.store.models import (
    AppointmentRow,
    BookingLockRow,
    ChairBlockRow,
    ChairRow,
    outbox,
)
from services.scheduler.store.repository import (
    check_site_scope,
    patient_row,
    site_row,
    site_scope_clause,
)


def lock_days(session: Session, site_id: str, days: Collection[dt.date]) -> None:
    """Take the site-day locks in date order (so two multi-day bookings cannot deadlock).
    The lock rows are created on first use; SQLite's write lock already serialises writers."""
    dialect = session.get_bind().dialect.name
    if dialect != "postgresql":
        return
    for day in sorted(set(days)):
        session.execute(
            postgresql.insert(BookingLockRow)
            .values(site_id=site_id, local_date=day)
            .on_conflict_do_nothing()
        )
        session.execute(
            select(BookingLockRow)
            .where(BookingLockRow.site_id == site_id, BookingLockRow.local_date == day)
            .with_for_update()
        )


class SqlAppointments:
    """The appointments of one transaction as the lifecycle use cases see them
    (usecases/bookings.py AppointmentStore): rows stay in the session, Appointments go out."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, appointment_id: str) -> Appointment:
        return get(self.session, appointment_id, for_update=True)

    def add(self, appointment: Appointment) -> None:
        add(self.session, appointment)

    def save(self, appointment: Appointment) -> None:
        save(self.session, appointment)

    def current(self, appointment_id: str) -> Appointment:
        return current(self.session, appointment_id)

    def zone(self, site_id: str) -> ZoneInfo:
        return ZoneInfo(site_row(self.session, site_id).time_zone)

    def parties(self, appointment: Appointment) -> Parties:
        site = site_row(self.session, appointment.site_id)
        patient = patient_row(self.session, appointment.patient_id)
        return Parties(
            site.display_name,
            site.time_zone,
            f"{patient.given_name} {patient.family_name}",
            patient.notify_subscriber_id,
        )

    def write(self, events: Sequence[Event], now: dt.datetime) -> None:
        write_events(self.session, outbox, events, now)

    def schedule_reminders(
        self, appointment_id: str, zone: ZoneInfo, offsets: Sequence[float], now: dt.datetime
    ) -> None:
        reminders.schedule(self.session, appointment_id, zone, offsets, now)

    def cancel_reminders(self, appointment_id: str, now: dt.datetime) -> None:
        reminders.cancel(self.session, appointment_id, now)


def get(session: Session, appointment_id: str, *, for_update: bool = False) -> Appointment:
    """The appointment, NOT_FOUND when it does not exist or is out of the caller's scope;
    ``for_update`` locks it for the rest of the transaction."""
    return appointment_of(appointment_row(session, appointment_id, for_update=for_update))


def add(session: Session, appointment: Appointment) -> None:
    row = AppointmentRow(id=appointment.id, created_at=appointment.created_at)
    _write(row, appointment)
    session.add(row)
    session.flush()


def save(session: Session, appointment: Appointment) -> None:
    """Write back an appointment read in this session (its row is in the session already)."""
    row = session.get(AppointmentRow, appointment.id)
    assert row is not None, "save only what this session read; add a new appointment"
    _write(row, appointment)
    session.flush()


def current(session: Session, appointment_id: str) -> Appointment:
    """The appointment as this session holds it now, with what saving it set going (its
    reminders); no query."""
    row = session.get(AppointmentRow, appointment_id)
    assert row is not None, "read or add the appointment in this session first"
    return appointment_of(row)


def appointment_of(row: AppointmentRow) -> Appointment:
    return Appointment(
        id=row.id,
        site_id=row.site_id,
        patient_id=row.patient_id,
        plan_id=row.plan_id,
        plan_version=row.plan_version,
        chair_id=row.chair_id,
        status=AppointmentStatus(row.status),
        local_date=row.local_date,
        start_minute=row.start_minute,
        end_minute=row.end_minute,
        start_at=row.start_at,
        end_at=row.end_at,
        chair_minutes=row.chair_minutes,
        course=CourseKind(row.course),
        course_day=row.course_day,
        due_date=row.due_date,
        dose_grams=row.dose_grams,
        product_id=row.product_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        revision=row.revision,
        series_id=row.series_id,
        hold_expires_at=row.hold_expires_at,
        cancel_reason=row.cancel_reason,
        grams_given=row.grams_given,
        actual_start_at=row.actual_start_at,
        actual_end_at=row.actual_end_at,
        scanned_lots=list(row.scanned_lots),
        stock_status=row.stock_status,
        stock_note=row.stock_note,
        reminders=tuple(
            Reminder(r.offset_label, r.due_at, ReminderStatus(r.status)) for r in row.reminders
        ),
    )


def _write(row: AppointmentRow, a: Appointment) -> None:
    """Everything the scheduler changes (the stock answer is the relay's to write)."""
    row.site_id = a.site_id
    row.patient_id = a.patient_id
    row.plan_id = a.plan_id
    row.plan_version = a.plan_version
    row.chair_id = a.chair_id
    row.status = a.status.value
    row.local_date = a.local_date
    row.start_minute = a.start_minute
    row.end_minute = a.end_minute
    row.start_at = a.start_at
    row.end_at = a.end_at
    row.chair_minutes = a.chair_minutes
    row.course = a.course.value
    row.course_day = a.course_day
    row.due_date = a.due_date
    row.series_id = a.series_id
    row.dose_grams = a.dose_grams
    row.product_id = a.product_id
    row.hold_expires_at = a.hold_expires_at
    row.cancel_reason = a.cancel_reason
    row.grams_given = a.grams_given
    row.actual_start_at = a.actual_start_at
    row.actual_end_at = a.actual_end_at
    row.scanned_lots = a.scanned_lots
    row.updated_at = a.updated_at
    row.revision = a.revision


def add_block(session: Session, block: ChairBlock, now: dt.datetime) -> None:
    session.add(
        ChairBlockRow(
            id=block.id,
            site_id=block.site_id,
            chair_id=block.chair_id,
            start_at=block.start_at,
            end_at=block.end_at,
            reason=block.reason,
            created_at=now,
        )
    )
    session.flush()


def delete_block(session: Session, block_id: str) -> None:
    """NOT_FOUND when there is no such block in the caller's scope."""
    row = session.get(ChairBlockRow, block_id) if block_id else None
    if row is None:
        raise NotFound("chair block", block_id)
    check_site_scope(session, row.site_id, "chair block", block_id)
    session.delete(row)
    session.flush()


def block_of(row: ChairBlockRow) -> ChairBlock:
    return ChairBlock(row.id, row.site_id, row.chair_id, row.start_at, row.end_at, row.reason)


def appointment_row(
    session: Session, appointment_id: str, *, for_update: bool = False
) -> AppointmentRow:
    query = (
        select(AppointmentRow)
        .where(AppointmentRow.id == appointment_id)
        .options(selectinload(AppointmentRow.reminders))
    )
    if for_update:
        query = query.with_for_update()
    row = session.scalar(query) if appointment_id else None
    if row is None:
        raise NotFound("appointment", appointment_id)
    check_site_scope(session, row.site_id, "appointment", appointment_id)
    return row


def _active(now: dt.datetime) -> object:
    """Holding a chair now: booked or in the chair, or a hold not yet lapsed."""
    return or_(
        AppointmentRow.status.in_([s.value for s in ACTIVE if s is not AppointmentStatus.PENDING]),
        (AppointmentRow.status == AppointmentStatus.PENDING.value)
        & (AppointmentRow.hold_expires_at > now),
    )


def active_on(
    session: Session,
    site_id: str,
    first: dt.date,
    last: dt.date,
    now: dt.datetime,
    *,
    with_reminders: bool = False,
) -> list[AppointmentRow]:
    """``with_reminders`` for rows shown after the session (the board); the slot rules
    never read them."""
    query = select(AppointmentRow)
    if with_reminders:
        query = query.options(selectinload(AppointmentRow.reminders))
    return list(
        session.scalars(
            query.where(
                AppointmentRow.site_id == site_id,
                AppointmentRow.local_date >= first,
                AppointmentRow.local_date <= last,
                _active(now),  # type: ignore[arg-type]
            ).order_by(AppointmentRow.local_date, AppointmentRow.start_minute, AppointmentRow.id)
        )
    )


def fixed_on(
    session: Session, site_id: str, first: dt.date, last: dt.date, now: dt.datetime
) -> list[FixedBooking]:
    """The site's active bookings on those days, as the slot rules see them."""
    return [
        FixedBooking(r.id, r.patient_id, r.chair_id, r.local_date, r.start_minute, r.end_minute)
        for r in active_on(session, site_id, first, last, now)
    ]


def for_plans(
    session: Session, plan_ids: Collection[str], now: dt.datetime
) -> list[AppointmentRow]:
    """Fulfilled and active appointments of the plans (the due list reads both)."""
    if not plan_ids:
        return []
    return list(
        session.scalars(
            select(AppointmentRow)
            .where(
                AppointmentRow.plan_id.in_(list(plan_ids)),
                or_(
                    AppointmentRow.status == AppointmentStatus.FULFILLED.value,
                    _active(now),  # type: ignore[arg-type]
                ),
            )
            .order_by(AppointmentRow.local_date, AppointmentRow.id)
        )
    )


def recent_fulfilled(
    session: Session, site_id: str, patient_ids: Collection[str], since: dt.date, per_patient: int
) -> dict[str, list[AppointmentRow]]:
    """Each patient's latest fulfilled appointments at the site from ``since`` on, most recent
    first, at most ``per_patient`` each (the habits PlanSchedule learns from)."""
    out: dict[str, list[AppointmentRow]] = {}
    if not patient_ids:
        return out
    rows = session.scalars(
        select(AppointmentRow)
        .where(
            AppointmentRow.site_id == site_id,
            AppointmentRow.patient_id.in_(sorted(set(patient_ids))),
            AppointmentRow.status == AppointmentStatus.FULFILLED.value,
            AppointmentRow.local_date >= since,
        )
        .order_by(
            AppointmentRow.patient_id, AppointmentRow.local_date.desc(), AppointmentRow.id.desc()
        )
    )
    for row in rows:
        mine = out.setdefault(row.patient_id, [])
        if len(mine) < per_patient:
            mine.append(row)
    return out


def last_for_patient(session: Session, patient_id: str) -> AppointmentRow | None:
    return session.scalar(
        select(AppointmentRow)
        .where(
            AppointmentRow.patient_id == patient_id,
            AppointmentRow.status == AppointmentStatus.FULFILLED.value,
        )
        .order_by(AppointmentRow.local_date.desc(), AppointmentRow.id.desc())
        .limit(1)
    )


def list_appointments(
    session: Session,
    site_id: str,
    patient_id: str,
    first: dt.date | None,
    last: dt.date | None,
    status: AppointmentStatus | None,
    page: PageRequest,
) -> list[AppointmentRow]:
    query = (
        select(AppointmentRow)
        .options(selectinload(AppointmentRow.reminders))
        .where(site_scope_clause(current_scope(), AppointmentRow.site_id))
    )
    if site_id:
        query = query.where(AppointmentRow.site_id == site_id)
    if patient_id:
        query = query.where(AppointmentRow.patient_id == patient_id)
    if first is not None:
        query = query.where(AppointmentRow.local_date >= first)
    if last is not None:
        query = query.where(AppointmentRow.local_date <= last)
    if status is not None:
        query = query.where(AppointmentRow.status == status.value)
    if page.after:
        day, minute, last_id = (
            dt.date.fromisoformat(page.after[0]),
            int(page.after[1]),
            page.after[2],
        )
        query = query.where(
            (AppointmentRow.local_date > day)
            | ((AppointmentRow.local_date == day) & (AppointmentRow.start_minute > minute))
            | (
                (AppointmentRow.local_date == day)
                & (AppointmentRow.start_minute == minute)
                & (AppointmentRow.id > last_id)
            )
        )
    query = query.order_by(
        AppointmentRow.local_date, AppointmentRow.start_minute, AppointmentRow.id
    ).limit(page.size + 1)
    return list(session.scalars(query))


def active_chairs(session: Session, site_id: str) -> list[ChairRow]:
    return list(
        session.scalars(
            select(ChairRow)
            .where(ChairRow.site_id == site_id, ChairRow.active.is_(True))
            .order_by(ChairRow.display_name, ChairRow.id)
        )
    )


def blocks_between(
    session: Session, site_id: str, start: dt.datetime, end: dt.datetime
) -> list[ChairBlockRow]:
    return list(
        session.scalars(
            select(ChairBlockRow)
            .where(
                ChairBlockRow.site_id == site_id,
                ChairBlockRow.start_at < end,
                ChairBlockRow.end_at > start,
            )
            .order_by(ChairBlockRow.start_at, ChairBlockRow.id)
        )
    )
