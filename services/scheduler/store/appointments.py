"""Appointment, chair-block and day-lock rows, and a new booking's reads and writes as a few
set-based statements (the booking's hot path, usecases/bookings.py ``book``)."""

from __future__ import annotations

import datetime as dt
import types
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from typing import Any
from typing import cast as typed_as
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Date,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session, selectinload

from services.common.audit.trail import wrote
from services.common.db import Kept, Rider, UtcDateTime, defer_write
from services.common.errors import NotFound
from services.common.joint_writes import Write, insert_in_order, insert_one, write_all
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
from services.scheduler.domain.reminders import ReminderStatus, local_start
from services.scheduler.domain.sites import ChairBlock
from services.scheduler.store import reminders
from services.scheduler.store.events import PATIENT_COPY, Event, outbox_rows, write_events
from services.scheduler.store.models import (
    AppointmentRow,
    ChairBlockRow,
    ChairRow,
    MeasurementRow,
    PatientRow,
    PayerCapsRow,
    PlanAuthorisationRow,
    PlanRow,
    PlanVersionRow,
    ReminderRow,
    SiteRow,
    outbox,
)
from services.scheduler.store.reminders import CANCEL_NOTIFICATION
from services.scheduler.store.repository import (
    check_site_scope,
    patient_row,
    site_row,
    site_scope_clause,
)

LOCK_PREFIX = "scheduler.booking:"
"""Site-day locks are PostgreSQL advisory locks on hashtextextended(LOCK_PREFIX || site_id ||
'/' || the ISO date): the key is computed by the database, the same way wherever it is taken
(lock_days, booking_inputs)."""


def _lock_key(site_id: Any) -> Any:
    """The key of ``site_id`` on the day bound as ``lock_day`` (its ISO date)."""
    day = bindparam("lock_day", type_=String())
    return func.hashtextextended(literal(LOCK_PREFIX) + site_id + literal("/") + day, 0)


_LOCK_DAY = select(func.pg_advisory_xact_lock(_lock_key(bindparam("lock_site", type_=String()))))


def lock_days(session: Session, site_id: str, days: Collection[dt.date]) -> None:
    """Take the site-day locks in date order (so two multi-day bookings cannot deadlock), for
    the rest of the transaction: a transaction-level advisory lock per day, one statement each
    and no row written. SQLite's write lock already serialises writers."""
    dialect = session.get_bind().dialect.name
    if dialect != "postgresql":
        return
    for day in sorted(set(days)):
        session.execute(_LOCK_DAY, {"lock_site": site_id, "lock_day": day.isoformat()})


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
    for key, value in _values(a).items():
        setattr(row, key, value)


def _values(a: Appointment) -> dict[str, Any]:
    return {
        "site_id": a.site_id,
        "patient_id": a.patient_id,
        "plan_id": a.plan_id,
        "plan_version": a.plan_version,
        "chair_id": a.chair_id,
        "status": a.status.value,
        "local_date": a.local_date,
        "start_minute": a.start_minute,
        "end_minute": a.end_minute,
        "start_at": a.start_at,
        "end_at": a.end_at,
        "chair_minutes": a.chair_minutes,
        "course": a.course.value,
        "course_day": a.course_day,
        "due_date": a.due_date,
        "series_id": a.series_id,
        "dose_grams": a.dose_grams,
        "product_id": a.product_id,
        "hold_expires_at": a.hold_expires_at,
        "cancel_reason": a.cancel_reason,
        "grams_given": a.grams_given,
        "actual_start_at": a.actual_start_at,
        "actual_end_at": a.actual_end_at,
        "scanned_lots": a.scanned_lots,
        "updated_at": a.updated_at,
        "revision": a.revision,
    }


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


_HOLDING_STATUSES = [
    literal(s.value, String()) for s in ACTIVE if s is not AppointmentStatus.PENDING
]


def _active(now: dt.datetime | Any) -> object:
    """Holding a chair now: booked or in the chair, or a hold not yet lapsed. The statuses are
    constants written into the statement, not a list expanded at each execution (SQLAlchemy
    renders an expanding IN's text again for every call: 3 % of a booking's CPU)."""
    return or_(
        AppointmentRow.status.in_(_HOLDING_STATUSES),
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


# --- a new booking in a few statements --------------------------------------------------------

_appointments = typed_as(Table, AppointmentRow.__table__)
_reminders = typed_as(Table, ReminderRow.__table__)

RECENT_MEASUREMENTS = 3
"""The patient's latest measurements read with a booking: the one that applies on the dosing
day is among them unless three were recorded after it (then the dose takes its full path)."""


@dataclass(frozen=True)
class BookingInputs:
    """What one joined read returns for a new booking: the plan (row and current version),
    its patient, site and the chair asked for (None: no such chair), and the patient's latest
    measurements (newest first)."""

    plan: Any  # plan row columns: id, patient_id, site_id, status, current_version, usual_*
    version: Any  # version, spec
    patient: Any  # PatientRow's columns
    site: Any  # SiteRow's columns
    chair: Any | None  # id, site_id, active
    measurements: list[Any]  # MeasurementRow's columns
    covered: bool  # the plan has an authorisation or payer caps (coverage to check)


def _prefixed(prefix: str, table: Any) -> list[Any]:
    return [c.label(f"{prefix}{c.key}") for c in table.columns]


def _part(row: Any, prefix: str) -> Any:
    """The row's ``prefix``ed columns under their own names."""
    return types.SimpleNamespace(**{name: row[i] for i, name in _columns(row._fields, prefix)})


@lru_cache(maxsize=64)
def _columns(fields: tuple[str, ...], prefix: str) -> tuple[tuple[int, str], ...]:
    """Where a result's ``prefix``ed columns are, worked out once per statement: matching the
    prefix against every one of the joined read's 90 columns for each part of each row cost
    a booking 3 % of its CPU."""
    return tuple((i, f[len(prefix) :]) for i, f in enumerate(fields) if f.startswith(prefix))


@cache
def _inputs_query(lock: bool) -> Kept:
    """booking_inputs' statement, built once (building it cost more than running it)."""
    recent = (
        select(MeasurementRow.id)
        .where(MeasurementRow.patient_id == PlanRow.patient_id)
        .order_by(MeasurementRow.measured_on.desc(), MeasurementRow.id.desc())
        .limit(RECENT_MEASUREMENTS)
        .correlate(PlanRow)
        .scalar_subquery()
    )
    columns: list[Any] = [
        *_prefixed("p_", PlanRow.__table__),
        *_prefixed("v_", PlanVersionRow.__table__),
        *_prefixed("t_", PatientRow.__table__),
        *_prefixed("s_", SiteRow.__table__),
        ChairRow.id.label("c_id"),
        ChairRow.site_id.label("c_site_id"),
        ChairRow.active.label("c_active"),
        *_prefixed("m_", MeasurementRow.__table__),
        # whether the plan has an authorisation or payer caps to check (most have neither)
        or_(
            exists().where(PlanAuthorisationRow.plan_id == PlanRow.id),
            exists().where(PayerCapsRow.plan_id == PlanRow.id),
        ).label("covered"),
    ]
    if lock:
        plans = PlanRow.__table__.alias("locked_plan")
        locked = (
            select(func.pg_advisory_xact_lock(_lock_key(plans.c.site_id)))
            .where(plans.c.id == bindparam("plan_id", type_=String()))
            .scalar_subquery()
        )
        columns.append(locked.label("locked"))
    return Kept(
        select(*columns)
        .select_from(PlanRow)
        .join(
            PlanVersionRow,
            and_(
                PlanVersionRow.plan_id == PlanRow.id,
                PlanVersionRow.version == PlanRow.current_version,
            ),
        )
        .join(PatientRow, PatientRow.id == PlanRow.patient_id)
        .join(SiteRow, SiteRow.id == PlanRow.site_id)
        .outerjoin(ChairRow, ChairRow.id == bindparam("chair_id", type_=String()))
        .outerjoin(
            MeasurementRow,
            and_(MeasurementRow.patient_id == PlanRow.patient_id, MeasurementRow.id.in_(recent)),
        )
        .where(PlanRow.id == bindparam("plan_id", type_=String()))
        .order_by(MeasurementRow.measured_on.desc(), MeasurementRow.id.desc())
    )


def booking_inputs(
    session: Session, plan_id: str, chair_id: str, day: dt.date, *, lock: bool = True
) -> BookingInputs | None:
    """The plan, its current version, patient, site, the chair and the patient's latest
    measurements in one statement; on PostgreSQL it also takes the lock of the plan's site on
    ``day`` (lock_days' lock), before the day is read, unless ``lock`` is False (the caller
    took its days' locks already). None when there is no such plan (the
    caller raises NOT_FOUND; scope is the caller's to check, from the site's organisation)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    query = _inputs_query(lock and postgres)
    params = {"plan_id": plan_id, "chair_id": chair_id, "lock_day": day.isoformat()}
    rows = query.execute(session.connection(), params).all()  # Core rows, no ORM layer
    if not rows:
        return None
    first = rows[0]
    return BookingInputs(
        plan=_part(first, "p_"),
        version=_part(first, "v_"),
        patient=_part(first, "t_"),
        site=_part(first, "s_"),
        chair=None if first.c_id is None else _part(first, "c_"),
        measurements=[_part(r, "m_") for r in rows if r.m_id is not None],
        covered=bool(first.covered),
    )


@cache
def _day_query() -> Kept:
    """booking_day's statement, built once."""
    a = AppointmentRow
    text, number = String(), Integer()
    instant, date = UtcDateTime(), Date()
    site = bindparam("site_id", type_=text)
    now = bindparam("now", type_=instant)

    def typed(value: Any, type_: Any) -> Any:
        return cast(null(), type_) if value is None else value

    def branch(
        kind: str,
        *,
        id_: Any,
        chair: Any = None,
        patient: Any = None,
        status: Any = None,
        course: Any = None,
        name: Any = None,
        on: Any = None,
        due: Any = None,
        first: Any = None,
        last: Any = None,
        course_day: Any = None,
        start: Any = None,
        end: Any = None,
    ) -> Any:
        return select(
            literal(kind, text).label("kind"),
            id_.label("id"),
            typed(chair, text).label("chair_id"),
            typed(patient, text).label("patient_id"),
            typed(status, text).label("status"),
            typed(course, text).label("course"),
            typed(name, text).label("name"),
            typed(on, date).label("local_date"),
            typed(due, date).label("due_date"),
            typed(first, number).label("start_minute"),
            typed(last, number).label("end_minute"),
            typed(course_day, number).label("course_day"),
            typed(start, instant).label("start_at"),
            typed(end, instant).label("end_at"),
        )

    chairs = branch("chair", id_=ChairRow.id, name=ChairRow.display_name).where(
        ChairRow.site_id == site, ChairRow.active.is_(True)
    )
    blocks = branch(
        "block",
        id_=ChairBlockRow.id,
        chair=ChairBlockRow.chair_id,
        start=ChairBlockRow.start_at,
        end=ChairBlockRow.end_at,
    ).where(
        ChairBlockRow.site_id == site,
        ChairBlockRow.start_at < bindparam("next_midnight", type_=instant),
        ChairBlockRow.end_at > bindparam("midnight", type_=instant),
    )
    booked = branch(
        "booking",
        id_=a.id,
        chair=a.chair_id,
        patient=a.patient_id,
        on=a.local_date,
        first=a.start_minute,
        last=a.end_minute,
    ).where(a.site_id == site, a.local_date == bindparam("day", type_=date), _active(now))
    mine = branch(
        "plan",
        id_=a.id,
        status=a.status,
        course=a.course,
        on=a.local_date,
        due=a.due_date,
        course_day=a.course_day,
    ).where(
        a.plan_id == bindparam("plan_id", type_=text),
        or_(a.status == AppointmentStatus.FULFILLED.value, _active(now)),  # type: ignore[arg-type]
    )
    return Kept(union_all(chairs, blocks, booked, mine))


@dataclass(frozen=True)
class BookingDay:
    """A site day as one statement reads it for a booking: the site's chairs in service (by
    name), the chair blocks crossing the day, the day's active bookings, and the plan's
    fulfilled and active appointments (its history and what is booked already)."""

    chairs: list[str]
    blocks: list[tuple[str, dt.datetime, dt.datetime]]
    bookings: list[FixedBooking]
    plan_appointments: list[Any]  # id, plan_id, status, local_date, course, course_day, due_date


def booking_day(
    session: Session,
    site_id: str,
    day: dt.date,
    midnight: dt.datetime,
    next_midnight: dt.datetime,
    plan_id: str,
    now: dt.datetime,
) -> BookingDay:
    """One UNION ALL of four reads (see BookingDay), in the transaction holding the day's lock."""
    params = {
        "site_id": site_id,
        "day": day,
        "midnight": midnight,
        "next_midnight": next_midnight,
        "plan_id": plan_id,
        "now": now,
    }
    rows = _day_query().execute(session.connection(), params).all()  # Core rows, no ORM layer
    by_kind: dict[str, list[Any]] = {"chair": [], "block": [], "booking": [], "plan": []}
    for row in rows:
        by_kind[row.kind].append(row)
    return BookingDay(
        chairs=[r.id for r in sorted(by_kind["chair"], key=lambda r: (r.name, r.id))],
        blocks=[
            (r.chair_id, r.start_at, r.end_at)
            for r in sorted(by_kind["block"], key=lambda r: (r.start_at, r.id))
        ],
        bookings=[
            FixedBooking(r.id, r.patient_id, r.chair_id, r.local_date, r.start_minute, r.end_minute)
            for r in sorted(by_kind["booking"], key=lambda r: (r.start_minute, r.id))
        ],
        plan_appointments=[
            types.SimpleNamespace(
                id=r.id,
                plan_id=plan_id,
                status=r.status,
                local_date=r.local_date,
                course=r.course,
                course_day=r.course_day,
                due_date=r.due_date,
            )
            for r in sorted(by_kind["plan"], key=lambda r: (r.local_date, r.id))
        ],
    )


@cache
def _locked_appointment() -> Any:
    """BatchedAppointments.get's statement, built once."""
    r = ReminderRow
    return (
        select(
            *_prefixed("a_", _appointments),
            SiteRow.organisation_id.label("s_organisation_id"),
            SiteRow.display_name.label("s_display_name"),
            SiteRow.time_zone.label("s_time_zone"),
            PatientRow.given_name.label("t_given_name"),
            PatientRow.family_name.label("t_family_name"),
            PatientRow.notify_subscriber_id.label("t_notify_subscriber_id"),
            *_prefixed("r_", _reminders),
        )
        .select_from(AppointmentRow)
        .join(SiteRow, SiteRow.id == AppointmentRow.site_id)
        .outerjoin(PatientRow, PatientRow.id == AppointmentRow.patient_id)
        .outerjoin(r, r.appointment_id == AppointmentRow.id)
        .where(AppointmentRow.id == bindparam("appointment_id", type_=String()))
        .with_for_update(of=AppointmentRow)
    )


class BatchedAppointments:
    """The appointments of one transaction (usecases/bookings.py AppointmentStore), read and
    written in as few statements as the lifecycle allows: ``get`` reads the appointment
    (locked), its reminders, site and patient in one statement; what the use case then decides
    (the appointment saved or added, reminders cancelled and scheduled, outbox rows) is held
    and written together, on PostgreSQL by one statement (a data-modifying WITH that also
    carries the idempotency key's response: services.common.db.defer_write), on SQLite by one
    per table. One appointment per store; a caller that reads after saving flushes first
    (services.common.db.flush_deferred)."""

    def __init__(self, session: Session, zones: dict[str, ZoneInfo] | None = None) -> None:
        self.session = session
        self._zones = dict(zones or {})
        self._appointment: Appointment | None = None
        self._new = False
        self._deferred = False
        self._reminders: list[dict[str, Any]] = []  # as read, then as changed
        self._cancelled: list[str] = []
        self._added: list[dict[str, Any]] = []
        self._events: list[Event] = []
        self._now: dt.datetime | None = None
        self._parties: Parties | None = None

    def get(self, appointment_id: str) -> Appointment:
        params = {"appointment_id": appointment_id}
        rows = (  # Core rows on the session's connection: no ORM layer
            self.session.connection().execute(_locked_appointment(), params).all()
            if appointment_id
            else []
        )
        if not rows or not current_scope().sees(rows[0].s_organisation_id, rows[0].a_site_id):
            raise NotFound("appointment", appointment_id)
        first = rows[0]
        site, patient = _part(first, "s_"), _part(first, "t_")
        self._zones[first.a_site_id] = ZoneInfo(site.time_zone)
        self._parties = Parties(
            site.display_name,
            site.time_zone,
            f"{patient.given_name} {patient.family_name}",
            patient.notify_subscriber_id or "",
        )
        self._reminders = [vars(_part(row, "r_")) for row in rows if row.r_id is not None]
        row = _part(first, "a_")
        row.reminders = []  # the store keeps them (self._reminders): _current adds them
        self._appointment = self._current(appointment_of(row))
        return replace(self._appointment)

    def add(self, appointment: Appointment) -> None:
        assert self._appointment is None, "one appointment per store"
        self._new = True
        self.save(appointment)

    def save(self, appointment: Appointment) -> None:
        self._appointment = appointment
        wrote(self.session, AppointmentRow(id=appointment.id, patient_id=appointment.patient_id))
        if not self._deferred:
            self._deferred = True
            defer_write(self.session, self._write)

    def write(self, events: Sequence[Event], now: dt.datetime) -> None:
        self._events.extend(events)
        self._now = now

    def schedule_reminders(
        self, appointment_id: str, zone: ZoneInfo, offsets: Sequence[float], now: dt.datetime
    ) -> None:
        a = self._mine(appointment_id)
        taken = {r["dedupe_key"] for r in [*self._reminders, *self._added]}
        self._added.extend(
            reminders.new_rows(
                a.id,
                local_start(a.local_date, a.start_minute, zone),
                a.start_at,
                offsets,
                now,
                taken,
            )
        )

    def cancel_reminders(self, appointment_id: str, now: dt.datetime) -> None:
        """As store/reminders.cancel: those not sent are cancelled; those raised are cancelled
        at notify too (CANCEL_NOTIFICATION), unless the appointment has begun."""
        a = self._mine(appointment_id)
        events: list[Event] = []
        for reminder in self._reminders:
            status = reminder["status"]
            raised = status == ReminderStatus.RAISED.value and a.start_at > now
            if status == ReminderStatus.SCHEDULED.value or raised:
                reminder["status"] = ReminderStatus.CANCELLED.value
                reminder["updated_at"] = now
                self._cancelled.append(reminder["id"])
            if raised:
                key = reminder["dedupe_key"]
                for k in (key, key + PATIENT_COPY):
                    events.append(Event(CANCEL_NOTIFICATION, f"CANCEL:{k}", {"dedupe_key": k}))
        self.write(events, now)

    def current(self, appointment_id: str) -> Appointment:
        return self._current(self._mine(appointment_id))

    def zone(self, site_id: str) -> ZoneInfo:
        return self._zones[site_id]

    def parties(self, appointment: Appointment) -> Parties:
        assert self._parties is not None, "read the appointment with get() first"
        return self._parties

    def _mine(self, appointment_id: str) -> Appointment:
        a = self._appointment
        assert a is not None and a.id == appointment_id, "one appointment per store"
        return a

    def _current(self, a: Appointment) -> Appointment:
        held = sorted(
            [*self._reminders, *self._added], key=lambda r: (r["due_at"], r["created_at"])
        )
        return replace(
            a,
            reminders=tuple(
                Reminder(r["offset_label"], r["due_at"], ReminderStatus(r["status"])) for r in held
            ),
        )

    def _write(self, riders: Sequence[Rider]) -> None:
        a = self._appointment
        assert a is not None
        dialect = self.session.get_bind().dialect.name
        writes: list[Write] = []
        if self._new:
            row = {
                "id": a.id,
                "created_at": a.created_at,
                "stock_status": a.stock_status,
                "stock_note": a.stock_note,
                **_values(a),
            }
            writes.append((insert_one(_appointments, tuple(row)), [row]))
        else:
            row = {f"v_{k}": v for k, v in {"id": a.id, **_values(a)}.items()}
            writes.append((_update_appointment(tuple(row)), [row]))
        if self._cancelled:
            cancelled = {"ids": self._cancelled, "to_status": ReminderStatus.CANCELLED.value}
            writes.append((_CANCEL_REMINDERS, [{**cancelled, "at": self._now}]))
        if self._added:
            writes.append((insert_one(_reminders, tuple(self._added[0])), self._added))
        events = outbox_rows(self._events, self._now or a.updated_at)
        if events:  # in the events' order, so their rows take their seq in it
            writes.append(
                insert_in_order(outbox, events, skip_conflicts_on="dedupe_key", dialect=dialect)
            )
        writes.extend((statement, [params]) for statement, params in riders)
        write_all(self.session, writes)


# Statements the batched store writes with, built once: building a statement cost more than
# sending it, and a statement built alike each time is compiled once (SQLAlchemy's cache).


@cache
def _update_appointment(keys: tuple[str, ...]) -> Any:
    """UPDATE of an appointment's ``keys`` (each bound as ``v_<column>``, the row by v_id)."""
    c = _appointments.c
    values = {k[2:]: bindparam(k, type_=c[k[2:]].type) for k in keys if k != "v_id"}
    return update(_appointments).where(c.id == bindparam("v_id", type_=c.id.type)).values(values)


_CANCEL_REMINDERS = (
    update(_reminders)
    .where(_reminders.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=bindparam("to_status", type_=String()),
        updated_at=bindparam("at", type_=UtcDateTime()),
    )
)
