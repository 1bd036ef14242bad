"""A patient's habits for the schedule's continuity terms: the weekday, start time and chair
they usually have. Set on the therapy plan, or else learned from their recent visits.

Learning: of the last ``RECENT_VISITS`` fulfilled appointments at the site, the most common
weekday and chair count as usual when at least two visits (or the only one) share them, the
most recent visit winning a tie; the usual start is the median start of those visits. A plan's
own setting always wins, field by field.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median_low

from services.common.errors import Violations

RECENT_VISITS = 4


@dataclass(frozen=True)
class Habits:
    weekday: int | None = None  # ISO weekday, Monday = 1
    start_minute: int | None = None  # local minutes from midnight
    chair_id: str = ""

    def over(self, learned: Habits) -> Habits:
        """These settings, each unset one taken from ``learned``."""
        return Habits(
            self.weekday if self.weekday is not None else learned.weekday,
            self.start_minute if self.start_minute is not None else learned.start_minute,
            self.chair_id or learned.chair_id,
        )


@dataclass(frozen=True)
class Visit:
    day: dt.date
    start_minute: int
    chair_id: str


def _usual(values: Sequence[object]) -> object | None:
    """The most common value (most recent first on a tie) if two share it or there is one."""
    if not values:
        return None
    counts = Counter(values)
    best = max(values, key=lambda v: counts[v])  # max keeps the first of equals: the latest
    return best if counts[best] >= 2 or len(values) == 1 else None


def learned(visits: Sequence[Visit]) -> Habits:
    """Habits from visits, most recent first (only the first RECENT_VISITS count)."""
    recent = list(visits[:RECENT_VISITS])
    if not recent:
        return Habits()
    weekday = _usual([v.day.isoweekday() for v in recent])
    chair = _usual([v.chair_id for v in recent])
    return Habits(
        weekday=int(str(weekday)) if weekday is not None else None,
        start_minute=int(median_low([v.start_minute for v in recent])),
        chair_id=str(chair) if chair is not None else "",
    )


def validate_habits(h: Habits, prefix: str) -> Violations:
    v = Violations()
    if h.weekday is not None and not 1 <= h.weekday <= 7:
        v.add(f"{prefix}usual_weekday", "must be MONDAY … SUNDAY")
    if h.start_minute is not None and not 0 <= h.start_minute < 24 * 60:
        v.add(f"{prefix}usual_start", "must be a time of day")
    return v
