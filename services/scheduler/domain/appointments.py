"""An appointment and its lifecycle, and a site's capacity settings.

Statuses follow FHIR R5 Appointment.status: a hold is ``pending`` and lapses at its expiry; the
infusion chair's day adds IN_PROGRESS (FHIR keeps that on the Encounter). Any other move is
FAILED_PRECONDITION naming the allowed ones.

:class:`Appointment` owns its moves: each method checks the move (status, the visit window of
domain/attendance.py, the no-show's time), applies it, and returns the events it raises, which
the booking use case turns into what the move sets going (the stock reservation's changes, the
patient's reminders, the APPOINTMENT_CHANGED notice). Nothing here reads a clock, a database or
the network: the caller passes ``now`` and the site's zone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import holidays

from services.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PreconditionViolation,
    Violations,
)
from services.scheduler.domain.attendance import (
    VisitWindow,
    check_check_in,
    check_complete,
    check_start,
    visit_window,
)
from services.scheduler.domain.due import CourseKind
from services.scheduler.domain.reminders import ReminderStatus


class AppointmentStatus(StrEnum):
    PENDING = "PENDING"
    BOOKED = "BOOKED"
    CHECKED_IN = "CHECKED_IN"
    IN_PROGRESS = "IN_PROGRESS"
    FULFILLED = "FULFILLED"
    CANCELLED = "CANCELLED"
    NOSHOW = "NOSHOW"


S = AppointmentStatus
TRANSITIONS: dict[AppointmentStatus, frozenset[AppointmentStatus]] = {
    S.PENDING: frozenset({S.BOOKED, S.CANCELLED}),
    S.BOOKED: frozenset({S.CHECKED_IN, S.CANCELLED, S.NOSHOW, S.FULFILLED}),
    S.CHECKED_IN: frozenset({S.IN_PROGRESS, S.CANCELLED, S.FULFILLED}),
    S.IN_PROGRESS: frozenset({S.FULFILLED}),
    S.FULFILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.NOSHOW: frozenset(),
}
# Statuses that hold a chair, a nurse and a start.
ACTIVE = frozenset({S.PENDING, S.BOOKED, S.CHECKED_IN, S.IN_PROGRESS})


def check_move(appointment_id: str, current: AppointmentStatus, wanted: AppointmentStatus) -> None:
    if wanted not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none"
        raise FailedPrecondition(
            [
                PreconditionViolation(
                    "APPOINTMENT_STATUS",
                    f"appointments/{appointment_id}",
                    f"a {current.value} appointment cannot become {wanted.value} "
                    f"(allowed: {allowed})",
                )
            ]
        )


# --- events: what a move sets going -------------------------------------------------------------


@dataclass(frozen=True)
class Booked:
    """A booking was made (directly, from a hold, or by the planner): reserve its stock and
    schedule its reminders."""

    appointment_id: str


@dataclass(frozen=True)
class Moved:
    """A booking moved to another time: tell the patient and the staff, amend the reservation,
    and schedule the reminders again."""

    appointment_id: str
    previous_start: dt.datetime


@dataclass(frozen=True)
class Cancelled:
    """Tell the patient and the staff, release the reservation, cancel the reminders."""

    appointment_id: str


@dataclass(frozen=True)
class MarkedNoShow:
    """Release the reservation and cancel the reminders."""

    appointment_id: str


@dataclass(frozen=True)
class Fulfilled:
    """The infusion was given: the inventory dispenses what the nurse recorded."""

    appointment_id: str
    grams_given: Decimal
    scanned_lots: list[dict[str, Any]]


Event = Booked | Moved | Cancelled | MarkedNoShow | Fulfilled


@dataclass(frozen=True)
class Parties:
    """Whom an appointment's APPOINTMENT_CHANGED names and reaches: the site (its staff) and
    the patient (with their notify subscriber, if they have one)."""

    site_name: str
    time_zone: str
    patient_name: str
    notify_subscriber_id: str


# --- the appointment ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    """What the nurse records when an infusion ends: grams given, the actual start and end
    (None: the recorded start, or the booked one; and now), and the lots scanned."""

    grams: Decimal
    started: dt.datetime | None
    ended: dt.datetime | None
    lots: list[dict[str, Any]]

    def check(self) -> None:
        """Some grams, and an end after the start when both are given."""
        if self.grams <= 0:
            raise InvalidArgument([FieldViolation("grams_given", "must be above 0")])
        if self.started and self.ended and self.ended <= self.started:
            raise InvalidArgument([FieldViolation("actual_end_time", "is not after the start")])


@dataclass(frozen=True)
class Reminder:
    """One of an appointment's reminders, as the appointment shows it (domain/reminders.py)."""

    offset_label: str
    due_at: dt.datetime
    status: ReminderStatus


@dataclass
class Appointment:
    """A hold or booking. The booked wall-clock time (``local_date``, ``start_minute``) is the
    truth; the instants are derived from it in the site's zone, so a daylight-saving change
    never moves a booking's local time. ``revision`` counts the changes (the etag), each move
    adds one; ``stock_*`` is the inventory's answer to the reservation, set by the relay."""

    id: str
    site_id: str
    patient_id: str
    plan_id: str
    plan_version: int
    chair_id: str
    status: AppointmentStatus
    local_date: dt.date
    start_minute: int
    end_minute: int
    start_at: dt.datetime
    end_at: dt.datetime
    chair_minutes: int
    course: CourseKind
    course_day: int
    due_date: dt.date
    dose_grams: Decimal
    product_id: str
    created_at: dt.datetime
    updated_at: dt.datetime
    revision: int = 0
    series_id: str = ""
    hold_expires_at: dt.datetime | None = None
    cancel_reason: str = ""
    grams_given: Decimal | None = None
    actual_start_at: dt.datetime | None = None
    actual_end_at: dt.datetime | None = None
    scanned_lots: list[dict[str, Any]] = field(default_factory=list)
    stock_status: str = ""
    stock_note: str = ""
    reminders: tuple[Reminder, ...] = ()

    def status_at(self, now: dt.datetime) -> AppointmentStatus:
        """A hold past its expiry is read as cancelled; nothing needs to sweep it."""
        if (
            self.status is S.PENDING
            and self.hold_expires_at is not None
            and self.hold_expires_at <= now
        ):
            return S.CANCELLED
        return self.status

    # --- the moves ------------------------------------------------------------------------------

    def confirm(self, now: dt.datetime) -> list[Event]:
        """A hold becomes a booking, unless it has lapsed (HOLD_EXPIRED)."""
        if self.status is S.PENDING and self.status_at(now) is S.CANCELLED:
            assert self.hold_expires_at is not None
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "HOLD_EXPIRED",
                        f"appointments/{self.id}",
                        f"the hold lapsed at {self.hold_expires_at:%Y-%m-%d %H:%M} UTC; "
                        "find a slot again",
                    )
                ]
            )
        check_move(self.id, self.status, S.BOOKED)
        self.hold_expires_at = None
        self._become(S.BOOKED, now)
        return [Booked(self.id)]

    def check_in(self, now: dt.datetime, zone: ZoneInfo) -> list[Event]:
        """Only on the booked local day (domain/attendance.py)."""
        self._check(S.CHECKED_IN, now)
        check_check_in(self._window(zone), now)
        self._become(S.CHECKED_IN, now)
        return []

    def start(self, now: dt.datetime, zone: ZoneInfo, started: dt.datetime) -> list[Event]:
        """In the chair: the start is on the booked local day and has happened."""
        self._check(S.IN_PROGRESS, now)
        check_start(self._window(zone), now, started)
        self.actual_start_at = started
        self._become(S.IN_PROGRESS, now)
        return []

    def complete(self, now: dt.datetime, zone: ZoneInfo, given: Completion) -> list[Event]:
        """The infusion was given: the grams, the times (the start defaults to the recorded
        one, else the booked one; the end to now) and the lots scanned."""
        given.check()
        started = given.started or self.actual_start_at or self.start_at
        ended = given.ended or now
        self._check(S.FULFILLED, now)
        check_complete(self._window(zone), now, started, ended)
        self.grams_given = given.grams
        self.actual_start_at = started
        self.actual_end_at = ended
        self.scanned_lots = given.lots
        self._become(S.FULFILLED, now)
        return [Fulfilled(self.id, given.grams, given.lots)]

    def mark_no_show(self, now: dt.datetime) -> list[Event]:
        """Only once the booked time has come."""
        self._check(S.NOSHOW, now)
        if now < self.start_at:
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "APPOINTMENT_STARTED",
                        f"appointments/{self.id}",
                        f"a no-show is recorded after the booked time ({self.start_at:%H:%M} UTC)",
                    )
                ]
            )
        self._become(S.NOSHOW, now)
        return [MarkedNoShow(self.id)]

    def cancel(self, now: dt.datetime, reason: str) -> list[Event]:
        self._check(S.CANCELLED, now)
        self.cancel_reason = reason
        self._become(S.CANCELLED, now)
        return [Cancelled(self.id)]

    def check_movable(self, now: dt.datetime) -> AppointmentStatus:
        """Only a held or booked appointment moves; its status (which the move keeps)."""
        status = self.status_at(now)
        if status not in (S.PENDING, S.BOOKED):
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "APPOINTMENT_STATUS",
                        f"appointments/{self.id}",
                        f"only a held or booked appointment moves (it is {status.value})",
                    )
                ]
            )
        return status

    def move_to(self, placement: Placement, now: dt.datetime) -> list[Event]:
        """Take the new place (its rules were checked on the locked day). A booking whose
        start changed raises Moved; a hold moves quietly."""
        previous = self.start_at
        self._place(placement)
        self.cancel_reason = ""
        self._become(self.status, now)
        if self.start_at != previous and self.status is S.BOOKED:
            return [Moved(self.id, previous)]
        return []

    @classmethod
    def placed(
        cls, appointment_id: str, placement: Placement, status: AppointmentStatus, now: dt.datetime
    ) -> tuple[Appointment, list[Event]]:
        """A new hold (PENDING, lapsing at ``placement.hold_expires_at``) or booking."""
        p = placement
        appointment = cls(
            id=appointment_id,
            site_id=p.site_id,
            patient_id=p.patient_id,
            plan_id=p.plan_id,
            plan_version=p.plan_version,
            chair_id=p.chair_id,
            status=status,
            local_date=p.local_date,
            start_minute=p.timing.start_minute,
            end_minute=p.timing.end_minute,
            start_at=p.timing.start_at,
            end_at=p.timing.end_at,
            chair_minutes=p.chair_minutes,
            course=p.course,
            course_day=p.course_day,
            due_date=p.due_date,
            dose_grams=p.dose_grams,
            product_id=p.product_id,
            created_at=now,
            updated_at=now,
            series_id=p.series_id,
            hold_expires_at=p.hold_expires_at,
        )
        appointment._become(status, now)
        return appointment, ([Booked(appointment_id)] if status is S.BOOKED else [])

    def _place(self, p: Placement) -> None:
        self.site_id = p.site_id
        self.patient_id = p.patient_id
        self.plan_id = p.plan_id
        self.plan_version = p.plan_version
        self.chair_id = p.chair_id
        self.local_date = p.local_date
        self.start_minute = p.timing.start_minute
        self.end_minute = p.timing.end_minute
        self.start_at = p.timing.start_at
        self.end_at = p.timing.end_at
        self.chair_minutes = p.chair_minutes
        self.course = p.course
        self.course_day = p.course_day
        self.due_date = p.due_date
        self.series_id = p.series_id or self.series_id
        self.dose_grams = p.dose_grams
        self.product_id = p.product_id
        self.hold_expires_at = p.hold_expires_at

    def _check(self, wanted: AppointmentStatus, now: dt.datetime) -> None:
        check_move(self.id, self.status_at(now), wanted)

    def _window(self, zone: ZoneInfo) -> VisitWindow:
        return visit_window(self.id, self.local_date, self.end_at, zone)

    def _become(self, status: AppointmentStatus, now: dt.datetime) -> None:
        self.status = status
        self.revision += 1
        self.updated_at = now


@dataclass(frozen=True)
class Placement:
    """Where and what a booking is: the chair and time the slot rules accepted, and the
    infusion it is for (plan item, chair minutes, dose, product)."""

    site_id: str
    patient_id: str
    plan_id: str
    plan_version: int
    chair_id: str
    local_date: dt.date
    timing: Timing
    chair_minutes: int
    course: CourseKind
    course_day: int
    due_date: dt.date
    dose_grams: Decimal
    product_id: str
    series_id: str = ""
    hold_expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class NurseShift:
    weekday: int  # ISO, Monday = 1
    start: dt.time
    end: dt.time
    nurses: int


# Defaults where a site says nothing. The ratio (patients per nurse) and the start limit (infusions
# starting together) are typical day-unit figures: no source gives a number. Slot minutes are the
# booking granularity of docs/clinical-rules.md#chair-time.
DEFAULT_NURSE_RATIO = 4
DEFAULT_START_LIMIT = 2
DEFAULT_TURNOVER_MINUTES = 15
DEFAULT_SLOT_MINUTES = 15  # docs/clinical-rules.md#chair-time
DEFAULT_HOLD_MINUTES = 15


@dataclass(frozen=True)
class SiteCapacity:
    nurse_shifts: tuple[NurseShift, ...] = field(default=())
    nurse_ratio: int = DEFAULT_NURSE_RATIO
    start_limit: int = DEFAULT_START_LIMIT
    turnover_minutes: int = DEFAULT_TURNOVER_MINUTES
    slot_minutes: int = DEFAULT_SLOT_MINUTES
    hold_minutes: int = DEFAULT_HOLD_MINUTES
    holiday_country: str = ""
    holiday_subdivision: str = ""


def validate_capacity(c: SiteCapacity, prefix: str = "site.capacity") -> Violations:
    v = Violations()
    if not 1 <= c.nurse_ratio <= 20:
        v.add(f"{prefix}.nurse_ratio", "must be 1 to 20 patients per nurse")
    if not 1 <= c.start_limit <= 10:
        v.add(f"{prefix}.start_limit", "must be 1 to 10 starts per nurse per 15 minutes")
    if not 0 <= c.turnover_minutes <= 120:
        v.add(f"{prefix}.turnover_minutes", "must be 0 to 120")
    if c.slot_minutes not in (5, 10, 15, 20, 30, 60):
        v.add(f"{prefix}.slot_minutes", "must be 5, 10, 15, 20, 30 or 60")
    if not 1 <= c.hold_minutes <= 24 * 60:
        v.add(f"{prefix}.hold_minutes", "must be 1 minute to 24 hours")
    for i, shift in enumerate(c.nurse_shifts):
        if not 1 <= shift.weekday <= 7:
            v.add(f"{prefix}.nurse_shifts[{i}].day", "is required")
        if shift.end <= shift.start:
            v.add(f"{prefix}.nurse_shifts[{i}].end", "must be after start")
        if not 1 <= shift.nurses <= 200:
            v.add(f"{prefix}.nurse_shifts[{i}].nurses", "must be 1 to 200")
    if c.holiday_subdivision and not c.holiday_country:
        v.add(f"{prefix}.holiday_country", "is required with a subdivision")
    if c.holiday_country:
        if not known_holidays(c.holiday_country, ""):
            v.add(f"{prefix}.holiday_country", f"{c.holiday_country!r} is not a known country")
        elif c.holiday_subdivision and not known_holidays(c.holiday_country, c.holiday_subdivision):
            v.add(
                f"{prefix}.holiday_subdivision",
                f"{c.holiday_subdivision!r} is not a subdivision of {c.holiday_country}",
            )
    return v


def known_holidays(country: str, subdivision: str) -> bool:
    try:
        holidays.country_holidays(country, subdiv=subdivision or None, years=2026)
    except NotImplementedError:
        return False
    return True


def public_holidays(c: SiteCapacity, years: range) -> frozenset[dt.date]:
    """Closed days from the ``holidays`` package for the site's country and subdivision."""
    if not c.holiday_country:
        return frozenset()
    found = holidays.country_holidays(
        c.holiday_country, subdiv=c.holiday_subdivision or None, years=list(years)
    )
    return frozenset(found.keys())


def local_instant(day: dt.date, minute: int, zone: ZoneInfo) -> dt.datetime:
    """The instant of a local wall-clock minute. A wall time skipped by a spring-forward change
    is read with the offset before the change (zoneinfo's fold=0), as a clock on the wall is."""
    later, minute = divmod(minute, 24 * 60)
    return dt.datetime.combine(
        day + dt.timedelta(days=later), dt.time(minute // 60, minute % 60), tzinfo=zone
    )


def wall_minute(day: dt.date, instant: dt.datetime, zone: ZoneInfo) -> int:
    """Local wall-clock minutes of an instant, counted from the midnight of ``day``."""
    local = instant.astimezone(zone)
    return (local.date() - day).days * 24 * 60 + local.hour * 60 + local.minute


@dataclass(frozen=True)
class Timing:
    """Where a booking sits: by the wall clock (what the patient is told, and what a DST
    change never moves) and as instants (chair minutes are real elapsed minutes)."""

    start_minute: int
    end_minute: int
    start_at: dt.datetime
    end_at: dt.datetime


def timing(day: dt.date, start_minute: int, chair_minutes: int, zone: ZoneInfo) -> Timing:
    # in UTC: adding minutes to a zoned datetime would add wall-clock, not elapsed, time
    start = local_instant(day, start_minute, zone).astimezone(dt.UTC)
    end = start + dt.timedelta(minutes=chair_minutes)
    return Timing(start_minute, wall_minute(day, end, zone), start, end)
