"""Where one infusion fits on one day : the hard rules a booking must keep, checked
the same way by slot search, by booking (a race loser learns what it collided with) and by the
chair board.

A day is seen in local wall-clock minutes from midnight (09:30 is 570), with the conventions
of domain/capacity.py, which the optimiser and its independent validator share. A booking
occupies its chair from its start to its end plus the site's turnover; it takes a nurse's
attention for its whole chair time; and its start takes one of the starts a nurse can set up in
its clock quarter hour. The rules:

- inside opening hours: start on the clock grid (a multiple of the slot minutes), end by
  closing;
- chair free: no other booking (with turnover after it) and no maintenance block overlaps;
- nurse ratio: at every minute, infusions running ≤ nurses on duty × patients per nurse;
- start limit: starts in the 15-minute slot ≤ nurses on duty × starts per nurse per 15 minutes;
- one infusion per patient per day.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.scheduler.domain.capacity import DayCapacity, FixedBooking, SiteRules

START_SLOT_MINUTES = 15  # the start limit counts starts per quarter hour

CLOSED = "CLOSED"
HOURS = "HOURS"
CHAIRS = "CHAIRS"
NURSES = "NURSES"
START_LIMIT = "START_LIMIT"
PATIENT_BOOKED = "PATIENT_BOOKED"


@dataclass(frozen=True)
class Conflict:
    rule: str  # CHAIRS, NURSES, START_LIMIT, PATIENT_BOOKED, HOURS
    detail: str
    other_id: str = ""  # the booking collided with, where there is one


@dataclass(frozen=True)
class Fit:
    chair_id: str
    start: int
    end: int
    nurse_load: int  # infusions monitored at the busiest minute, this one included
    nurse_capacity: int  # nurses × ratio at that minute


def nurses_at(day: DayCapacity, minute: int) -> int:
    return sum(n for start, end, n in day.nurse_shifts if start <= minute < end)


class DayBook:
    """One day's bookings indexed for the checks: per chair sorted busy intervals, and the
    running infusions and starts per minute for the nurse rules."""

    def __init__(
        self, day: DayCapacity, rules: SiteRules, bookings: Iterable[FixedBooking]
    ) -> None:
        self.day = day
        self.rules = rules
        self.bookings = [b for b in bookings if b.day == day.day]
        self.busy: dict[str, list[tuple[int, int, str]]] = {c: [] for c in day.chairs}
        for b in self.bookings:
            self.busy.setdefault(b.chair_id, []).append(
                (b.start_minute, b.end_minute + rules.turnover_minutes, b.id)
            )
        for chair, start, end in day.chair_blocks:
            self.busy.setdefault(chair, []).append((start, end, "block"))
        for intervals in self.busy.values():
            intervals.sort()
        self.patients = {b.patient_id: b.id for b in self.bookings}
        self.starts = Counter(b.start_minute // START_SLOT_MINUTES for b in self.bookings)
        # minutes where the running count or the nurses on duty can change
        self.events = sorted(
            {b.start_minute for b in self.bookings}
            | {s for s, _, _ in day.nurse_shifts}
            | {e for _, e, _ in day.nurse_shifts}
        )

    def running(self, minute: int) -> int:
        return sum(1 for b in self.bookings if b.start_minute <= minute < b.end_minute)

    def grid(self, duration: int) -> range:
        step = self.rules.granularity_minutes
        first = -(-self.day.open_minute // step) * step
        return range(first, self.day.close_minute - duration + 1, step)

    def quarter_nurses(self, quarter: int) -> int:
        """The fewest nurses on duty in a clock quarter (within opening hours)."""
        low = max(quarter * START_SLOT_MINUTES, self.day.open_minute)
        high = min(quarter * START_SLOT_MINUTES + START_SLOT_MINUTES, self.day.close_minute)
        points = [low] + [m for m in self.events if low < m < high]
        return min(nurses_at(self.day, m) for m in points)

    def chair_conflict(self, chair: str, start: int, end: int) -> Conflict | None:
        """Overlap with the chair's bookings (each followed by turnover) or its blocks; the new
        booking's own turnover must also end before the next booking starts."""
        intervals = self.busy.get(chair)
        if intervals is None:
            return Conflict(CHAIRS, f"chair {chair} is not in service that day")
        mine_end = end + self.rules.turnover_minutes
        i = bisect.bisect_left(intervals, (mine_end,))
        for other_start, other_end, other in intervals[max(0, i - 64) : i]:
            if other_start < mine_end and start < other_end:
                what = "a maintenance block" if other == "block" else f"booking {other}"
                return Conflict(CHAIRS, f"chair {chair} is taken by {what}", other)
        return None

    def nurse_conflict(self, start: int, end: int) -> tuple[Conflict | None, int, int]:
        """The nurse ratio over [start, end) and the start limit of start's quarter hour; also
        the busiest load with this infusion and the capacity at that minute."""
        ratio, limit = self.rules.nurse_ratio, self.rules.start_limit
        if not self.day.nurse_shifts:  # the day does not model nurses
            return None, self.running(start) + 1, 0
        points = [start] + [m for m in self.events if start < m < end]
        load, capacity = 0, 0
        for minute in points:
            nurses = nurses_at(self.day, minute)
            running = self.running(minute) + 1
            if running > nurses * ratio:
                hhmm = f"{minute // 60:02d}:{minute % 60:02d}"
                return (
                    Conflict(
                        NURSES,
                        f"at {hhmm} {running} infusions would need more than the "
                        f"{nurses} nurse(s) on duty at 1:{ratio}",
                    ),
                    running,
                    nurses * ratio,
                )
            if running > load:
                load, capacity = running, nurses * ratio
        quarter = start // START_SLOT_MINUTES
        nurses = self.quarter_nurses(quarter)
        if self.starts[quarter] + 1 > nurses * limit:
            hhmm = f"{start // 60:02d}:{start % 60:02d}"
            return (
                Conflict(
                    START_LIMIT,
                    f"{self.starts[quarter]} infusion(s) already start in the quarter hour "
                    f"of {hhmm}; {nurses} nurse(s) can set up {nurses * limit}",
                ),
                load,
                capacity,
            )
        return None, load, capacity

    def check(self, chair: str, start: int, duration: int, patient_id: str) -> list[Conflict]:
        """Every rule a booking of ``duration`` chair minutes at ``start`` would break."""
        end = start + duration
        found: list[Conflict] = []
        if (
            start < self.day.open_minute
            or end > self.day.close_minute
            or start % self.rules.granularity_minutes
        ):
            found.append(Conflict(HOURS, "outside opening hours or off the booking grid"))
        if patient_id in self.patients:
            other = self.patients[patient_id]
            found.append(
                Conflict(PATIENT_BOOKED, f"the patient already has {other} that day", other)
            )
        chair_clash = self.chair_conflict(chair, start, end)
        if chair_clash:
            found.append(chair_clash)
        nurse_clash, _, _ = self.nurse_conflict(start, end)
        if nurse_clash:
            found.append(nurse_clash)
        return found

    def fits(self, duration: int, patient_id: str) -> tuple[list[Fit], str, str]:
        """Every (chair, start) the infusion fits; when none, the resource that limits the day
        and a sentence saying so."""
        if duration > self.day.close_minute - self.day.open_minute:
            hours = (self.day.close_minute - self.day.open_minute) / 60
            return [], HOURS, f"{duration} chair minutes do not fit in {hours:g} opening hours"
        if patient_id in self.patients:
            return [], PATIENT_BOOKED, f"already booked that day ({self.patients[patient_id]})"
        out: list[Fit] = []
        reasons: Counter[str] = Counter()
        any_chair = False
        for start in self.grid(duration):
            end = start + duration
            free = [c for c in self.day.chairs if self.chair_conflict(c, start, end) is None]
            if not free:
                continue
            any_chair = True
            clash, load, capacity = self.nurse_conflict(start, end)
            if clash:
                reasons[clash.rule] += 1
                continue
            out.extend(Fit(c, start, end, load, capacity) for c in free)
        if out:
            return out, "", ""
        if not any_chair:
            return [], CHAIRS, "no chair is free for that long"
        rule, _ = reasons.most_common(1)[0]
        text = (
            "not enough nurses on duty for another infusion at any free time"
            if rule == NURSES
            else "the nurses' start limit is reached at every free time"
        )
        return [], rule, text


def wall_minutes(t: dt.time) -> int:
    return t.hour * 60 + t.minute


def wall_time(minutes: int) -> dt.time:
    return dt.time(min(minutes, 24 * 60 - 1) // 60, min(minutes, 24 * 60 - 1) % 60)


def rank(
    fits: Sequence[tuple[dt.date, Fit]],
    due: dt.date,
    morning: bool | None,
    last_chair: str,
) -> list[tuple[dt.date, Fit]]:
    """Closest to the due date first; then the preferred time of day and chair; then the
    lightest nurse load (to level the day); then earlier, then chair id for a stable order."""

    def key(item: tuple[dt.date, Fit]) -> tuple[int, int, int, float, int, str]:
        day, fit = item
        wrong_time = 0 if morning is None else int((fit.start < 12 * 60) != morning)
        other_chair = 0 if not last_chair else int(fit.chair_id != last_chair)
        load = fit.nurse_load / fit.nurse_capacity if fit.nurse_capacity else 0.0
        return (abs((day - due).days), wrong_time, other_chair, load, fit.start, fit.chair_id)

    return sorted(fits, key=key)
