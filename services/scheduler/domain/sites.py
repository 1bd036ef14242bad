"""Sites keep local opening hours in their own IANA time zone; chairs belong to a site."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from services.common.errors import Violations
from services.common.time_zones import is_valid_time_zone
from services.scheduler.domain.appointments import SiteCapacity, validate_capacity
from services.scheduler.domain.objective import (
    ScheduleObjective,
    objective_with,
    validate_objective,
)


@dataclass(frozen=True)
class OpeningHours:
    weekday: int  # ISO weekday, Monday = 1 … Sunday = 7
    open: dt.time
    close: dt.time


@dataclass(frozen=True)
class Site:
    id: str
    organisation_id: str
    display_name: str
    time_zone: str
    opening_hours: tuple[OpeningHours, ...] = ()
    closure_dates: tuple[dt.date, ...] = field(default=())
    capacity: SiteCapacity = field(default_factory=SiteCapacity)
    # PlanSchedule's objective weights this site sets (name → points); the rest are defaults
    schedule_objective: dict[str, int] = field(default_factory=dict)

    @property
    def objective(self) -> ScheduleObjective:
        return objective_with(self.schedule_objective)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def local_today(self, now: dt.datetime) -> dt.date:
        return now.astimezone(self.zone).date()


@dataclass(frozen=True)
class Chair:
    id: str
    site_id: str
    display_name: str
    active: bool = True


@dataclass(frozen=True)
class ChairBlock:
    """A chair out of service for a while (maintenance, a spill): no booking overlaps it."""

    id: str
    site_id: str
    chair_id: str
    start_at: dt.datetime
    end_at: dt.datetime
    reason: str


def validate_site(site: Site, prefix: str = "site") -> Violations:
    """Every rule a site must keep; returns all violations, not just the first."""
    v = Violations()
    if not site.organisation_id.strip():
        v.add(f"{prefix}.organisation_id", "is required")
    if not site.display_name.strip():
        v.add(f"{prefix}.display_name", "is required")
    if not is_valid_time_zone(site.time_zone):
        v.add(f"{prefix}.time_zone", f"{site.time_zone!r} is not an IANA time zone")
    v.extend(validate_capacity(site.capacity, f"{prefix}.capacity").items)
    v.extend(validate_objective(site.schedule_objective, f"{prefix}.schedule_objective").items)
    by_day: dict[int, list[tuple[int, OpeningHours]]] = {}
    for index, hours in enumerate(site.opening_hours):
        path = f"{prefix}.opening_hours[{index}]"
        if not 1 <= hours.weekday <= 7:
            v.add(f"{path}.day", "is required (MONDAY … SUNDAY)")
            continue
        if hours.close <= hours.open:
            v.add(f"{path}.close", f"{hours.close:%H:%M} is not after {hours.open:%H:%M}")
            continue
        by_day.setdefault(hours.weekday, []).append((index, hours))
    for intervals in by_day.values():
        intervals.sort(key=lambda item: item[1].open)
        for (_, earlier), (index, later) in zip(intervals, intervals[1:], strict=False):
            if later.open < earlier.close:
                v.add(
                    f"{prefix}.opening_hours[{index}]",
                    f"{later.open:%H:%M}–{later.close:%H:%M} overlaps "
                    f"{earlier.open:%H:%M}–{earlier.close:%H:%M} on the same day",
                )
    if len(set(site.closure_dates)) != len(site.closure_dates):
        v.add(f"{prefix}.closure_dates", "lists a date twice")
    return v


def validate_chair(chair: Chair, prefix: str = "chair") -> Violations:
    v = Violations()
    if not chair.site_id:
        v.add(f"{prefix}.site_id", "is required")
    if not chair.display_name.strip():
        v.add(f"{prefix}.display_name", "is required")
    return v
