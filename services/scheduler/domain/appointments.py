"""Appointment statuses and the moves between them, and a site's capacity settings.

Statuses follow FHIR R5 Appointment.status: a hold is ``pending`` and lapses at its expiry; the
infusion chair's day adds IN_PROGRESS (FHIR keeps that on the Encounter). Any other move is
FAILED_PRECONDITION naming the allowed ones.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from zoneinfo import ZoneInfo

import holidays

from services.common.errors import FailedPrecondition, PreconditionViolation, Violations


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
