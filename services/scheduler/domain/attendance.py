"""When a visit's chair records may be made: check-in, start and completion.

An infusion centre works by the local day: the day list is printed for it, the patient comes in
on it, and nothing of a visit is recorded days before (or after) it. So each step is accepted
only in a window around the booked day, in the site's local time (a site's "today" is its local
date, docs/api.md):

- **check-in** from the local midnight that begins the booked day to the next one: a patient
  early for an 08:00 chair is checked in, a patient who comes on another day is rebooked (or
  marked a no-show), not checked in;
- **start** at an instant on that local day, not ahead of the clock (a start is recorded once
  it has happened); the status rule (domain/appointments.py) already requires check-in first;
- **completion** from the start of the day until the later of its end and
  :data:`LATE_COMPLETION` after the planned end, so an infusion slowed by a reaction that runs
  past midnight is still completed; the recorded end is after the start and not ahead of the
  clock.

A day's bounds come from the zone database, so a day with a clock change is 23 or 25 hours
long, as the site lives it. Pure: the caller passes the clock's ``now``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from services.common.errors import FailedPrecondition, PreconditionViolation
from services.common.reasons import Rule

LATE_COMPLETION = dt.timedelta(hours=6)
"""How long after its planned end a visit can still be completed, when that is later than the
end of its day. The longest chair times booked are about five hours (docs/dosing.md: 295
minutes for 70 g at the full ramp), and a reaction that slows the rest of an infusion to half
rate at most doubles what is left of it: six hours covers such an overrun for a visit planned
to end late in the evening. Later than that, the record is a correction for the pharmacy and
the ward, not the chair's workflow."""

CLOCK_TOLERANCE = dt.timedelta(minutes=5)
"""How far a recorded start or end may lie ahead of the server's clock: the ward's devices and
the server disagree by a minute or two, not by more."""


@dataclass(frozen=True)
class VisitWindow:
    """The instants (UTC) that bound one visit's records."""

    appointment_id: str
    zone: ZoneInfo
    opens: dt.datetime  # the local midnight that begins the booked day
    day_ends: dt.datetime  # the next local midnight
    closes: dt.datetime  # the last instant a completion is accepted

    def local(self, instant: dt.datetime) -> str:
        return f"{instant.astimezone(self.zone):%Y-%m-%d %H:%M}"

    def day(self) -> str:
        """The booked day as the site sees it, for messages."""
        return f"{self.local(self.opens)} to {self.local(self.day_ends)} ({self.zone.key})"


def visit_window(
    appointment_id: str, day: dt.date, planned_end: dt.datetime, zone: ZoneInfo
) -> VisitWindow:
    opens = _midnight(day, zone)
    day_ends = _midnight(day + dt.timedelta(days=1), zone)
    closes = max(day_ends, planned_end.astimezone(dt.UTC) + LATE_COMPLETION)
    return VisitWindow(appointment_id, zone, opens, day_ends, closes)


def _midnight(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    """The instant a local day begins (in the rare zone that skips midnight, the wall clock's
    reading of it, as domain/appointments.local_instant reads skipped times)."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.UTC)


def check_check_in(window: VisitWindow, now: dt.datetime) -> None:
    """CHECK_IN_WINDOW unless ``now`` is on the booked local day."""
    if not window.opens <= now < window.day_ends:
        _refuse(
            "CHECK_IN_WINDOW",
            window,
            [f"check-in is open on the booked day, {window.day()}; it is {window.local(now)}"],
        )


def check_start(window: VisitWindow, now: dt.datetime, started: dt.datetime) -> None:
    """START_WINDOW unless the start is on the booked local day and has happened."""
    _refuse("START_WINDOW", window, _start_problems(window, now, started))


def check_complete(
    window: VisitWindow, now: dt.datetime, started: dt.datetime, ended: dt.datetime
) -> None:
    """COMPLETE_WINDOW unless the completion comes, and the recorded end lies, between the start
    of the booked day and the window's close, the end after the start and not ahead of now."""
    span = f"{window.local(window.opens)} to {window.local(window.closes)} ({window.zone.key})"
    if not window.opens <= now <= window.closes:
        problems = [
            f"completion is open from {span}: the booked day, or until "
            f"{LATE_COMPLETION.total_seconds() / 3600:g} h after the planned end if that is "
            f"later; it is {window.local(now)}"
        ]
    elif not window.opens <= ended <= window.closes:
        problems = [f"the end {window.local(ended)} is outside {span}"]
    elif ended > now + CLOCK_TOLERANCE:
        problems = [f"the end {window.local(ended)} is ahead of the clock ({window.local(now)})"]
    elif ended <= started:
        problems = [f"the end {window.local(ended)} is not after the start {window.local(started)}"]
    else:
        problems = _start_problems(window, now, started)
    _refuse("COMPLETE_WINDOW", window, problems)


def _start_problems(window: VisitWindow, now: dt.datetime, started: dt.datetime) -> list[str]:
    if not window.opens <= started < window.day_ends:
        return [f"the start {window.local(started)} is not on the booked day, {window.day()}"]
    if started > now + CLOCK_TOLERANCE:
        return [f"the start {window.local(started)} is ahead of the clock ({window.local(now)})"]
    return []


def _refuse(rule: Rule, window: VisitWindow, problems: list[str]) -> None:
    if problems:
        raise FailedPrecondition(
            [
                PreconditionViolation(rule, f"appointments/{window.appointment_id}", text)
                for text in problems
            ]
        )
