"""What a centre calls a better schedule: the optimiser's objective, term by term.

Every term is a site setting (``ScheduleObjective``, stored with the site, overridable per
PlanSchedule call) in whole points; the objective is the sum of the terms' costs and lower is
better. docs/optimiser.md "The centre's objective" explains each default. In short:

- an unplaced infusion costs ``placement`` points, plus ``induction_extra`` for a member of an
  induction series and ``overdue_extra`` when its due day is before the horizon's first open
  day (clinical priority: inductions and overdue patients first). ``placement = 0`` means
  "strictly first": the model then uses one more point than all other terms can ever add up
  to, so no trade-off ever leaves an infusion out;
- each day early costs ``earliness_per_day``, each day late ``lateness_per_day`` (windows may
  be asymmetric, and a late dose is worse than an early one);
- continuity: ``usual_weekday`` per infusion off the patient's usual weekday,
  ``usual_start_per_hour`` per hour away from the usual start, ``usual_chair`` per infusion off
  the usual chair;
- levelling: ``load_per_chair_hour`` per chair-hour a day's booked infusion time differs from
  the horizon's even share, ``start_peak`` per start in each day's busiest clock quarter;
- the end of the day: ``overtime_per_minute`` per expected minute an infusion runs past
  ``close − end_buffer_minutes`` when its chair time varies by ``duration_cv_percent`` (the
  infusion's own spread, normal; the KPIs simulate the knock-on delays as well).

Pure functions of a problem and a schedule; the optimiser's model puts the same coefficients on
its variables, and ``terms`` recomputes them on any schedule (greedy or optimised) so the two
can be compared and a coordinator can see why one is better.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.common.errors import Violations

if TYPE_CHECKING:  # capacity.py holds the data and imports this module's settings
    from services.scheduler.domain.capacity import (
        DayCapacity,
        InfusionRequest,
        Placement,
        ScheduleProblem,
    )

MAX_WEIGHT = 100_000  # the most any weight may be (the input contract says the same)
LIMITS = {"end_buffer_minutes": 240, "duration_cv_percent": 100}  # other settings: MAX_WEIGHT
QUARTER = 15


@dataclass(frozen=True)
class ObjectiveTerm:
    """One term of the objective on a schedule: ``value`` in its own unit (infusions, days,
    hours, chair-hours, starts, minutes), ``cost`` the points it adds (weight × value)."""

    name: str
    value: float
    cost: float


@dataclass(frozen=True)
class ScheduleObjective:
    """The centre's weights, in points; documented defaults (docs/optimiser.md)."""

    placement: int = 1000
    induction_extra: int = 1000
    overdue_extra: int = 500
    earliness_per_day: int = 10
    lateness_per_day: int = 30
    usual_weekday: int = 10
    usual_start_per_hour: int = 4
    usual_chair: int = 2
    load_per_chair_hour: int = 1
    start_peak: int = 5
    overtime_per_minute: int = 1
    end_buffer_minutes: int = 0
    duration_cv_percent: int = 15

    @classmethod
    def only(cls, **weights: int) -> ScheduleObjective:
        """Every weight 0 but ``weights`` (the variability settings keep their defaults)."""
        zero = {name: 0 for name in WEIGHTS}
        return cls(**{**zero, **weights})

    @classmethod
    def deviation_only(cls) -> ScheduleObjective:
        """The earlier objective, kept for comparison: every placement strictly first, then
        Σ |day − due| (early and late alike), nothing else."""
        return cls.only(earliness_per_day=1, lateness_per_day=1)


WEIGHTS = tuple(
    f.name
    for f in dataclasses.fields(ScheduleObjective)
    if f.name not in ("end_buffer_minutes", "duration_cv_percent")
)


def objective_with(settings: Mapping[str, int]) -> ScheduleObjective:
    """The defaults with ``settings`` (a site's, then a call's) put over them."""
    return dataclasses.replace(ScheduleObjective(), **settings)


def validate_objective(settings: Mapping[str, int], prefix: str) -> Violations:
    v = Violations()
    names = {f.name for f in dataclasses.fields(ScheduleObjective)}
    for name, value in sorted(settings.items()):
        if name not in names:
            v.add(f"{prefix}.{name}", "is not a setting of the schedule objective")
        elif not 0 <= value <= LIMITS.get(name, MAX_WEIGHT):
            v.add(f"{prefix}.{name}", f"must be 0 to {LIMITS.get(name, MAX_WEIGHT)}")
    return v


def series_member(r: InfusionRequest) -> bool:
    return bool(r.series_id)


def overdue(problem: ScheduleProblem, r: InfusionRequest) -> bool:
    return bool(problem.days) and r.due_day < problem.days[0].day


def priority_extra(problem: ScheduleProblem, r: InfusionRequest) -> int:
    o = problem.objective
    return o.induction_extra * series_member(r) + o.overdue_extra * overdue(problem, r)


def day_cost(o: ScheduleObjective, r: InfusionRequest, day: dt.date) -> int:
    """Earliness, lateness and the usual weekday of ``r`` placed on ``day``."""
    off = (day - r.due_day).days
    cost = o.earliness_per_day * max(0, -off) + o.lateness_per_day * max(0, off)
    if r.usual_weekday is not None and day.isoweekday() != r.usual_weekday:
        cost += o.usual_weekday
    return cost


def start_cost(o: ScheduleObjective, r: InfusionRequest, start: int) -> float:
    if r.usual_start_minute is None:
        return 0.0
    return o.usual_start_per_hour * abs(start - r.usual_start_minute) / 60


def expected_overtime(o: ScheduleObjective, day: DayCapacity, start: int, duration: int) -> float:
    """E[max(0, start + duration·X − (close − buffer))] minutes, X ~ Normal(1, cv)."""
    mean = start + duration - (day.close_minute - o.end_buffer_minutes)
    sd = duration * o.duration_cv_percent / 100
    if sd <= 0:
        return float(max(0, mean))
    z = mean / sd
    density = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    tail = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return mean * tail + sd * density


def load_targets(problem: ScheduleProblem) -> list[float]:
    """Each open day's even share of all infusion minutes (fixed bookings and every request),
    in proportion to its open chair-minutes."""
    capacity = [len(d.chairs) * (d.close_minute - d.open_minute) for d in problem.days]
    total = sum(f.end_minute - f.start_minute for f in problem.fixed if _open(problem, f.day))
    total += sum(r.duration_minutes for r in problem.requests)
    whole = sum(capacity)
    return [total * c / whole if whole else 0.0 for c in capacity]


def _open(problem: ScheduleProblem, day: dt.date) -> bool:
    return any(d.day == day for d in problem.days)


def strict_placement(problem: ScheduleProblem, max_day_cost: Iterable[float]) -> int:
    """One point more than every other term can add up to (``placement = 0``): the most each
    request's day and start can cost, the load of every day all off its share, every quarter's
    starts at once and every infusion's overtime at the latest start."""
    o = problem.objective
    bound = sum(max_day_cost)
    hours = sum(len(d.chairs) * (d.close_minute - d.open_minute) for d in problem.days) / 60
    bound += o.load_per_chair_hour * 2 * hours
    bound += o.start_peak * len(problem.days) * (len(problem.requests) + len(problem.fixed))
    longest = max((d.close_minute - d.open_minute for d in problem.days), default=0)
    for r in problem.requests:
        bound += o.usual_start_per_hour * 24 + o.usual_chair
        bound += o.overtime_per_minute * (o.end_buffer_minutes + r.duration_minutes + longest)
    return int(math.ceil(bound)) + 1


def terms(problem: ScheduleProblem, placements: Sequence[Placement]) -> tuple[ObjectiveTerm, ...]:
    """The objective of ``placements``, term by term (costs add up to the objective)."""
    o = problem.objective
    requests = {r.id: r for r in problem.requests}
    days = {d.day: (i, d) for i, d in enumerate(problem.days)}
    placed = [p for p in placements if p.request_id in requests and p.day in days]
    got = {p.request_id for p in placed}
    weight = o.placement or strict_placement(
        problem, (max_costs(problem, r) for r in problem.requests)
    )
    missing = [r for r in problem.requests if r.id not in got]
    early = late = weekday_misses = 0
    start_hours = 0.0
    chair_misses = 0
    overtime = 0.0
    load = [0.0] * len(problem.days)
    starts: dict[tuple[int, int], int] = defaultdict(int)
    for f in problem.fixed:
        if f.day in days:
            i = days[f.day][0]
            load[i] += f.end_minute - f.start_minute
            starts[(i, f.start_minute // QUARTER)] += 1
    for p in placed:
        r = requests[p.request_id]
        i, d = days[p.day]
        off = (p.day - r.due_day).days
        early += max(0, -off)
        late += max(0, off)
        weekday_misses += r.usual_weekday is not None and p.day.isoweekday() != r.usual_weekday
        if r.usual_start_minute is not None:
            start_hours += abs(p.start_minute - r.usual_start_minute) / 60
        chair_misses += bool(r.usual_chair) and p.chair_id != r.usual_chair
        overtime += expected_overtime(o, d, p.start_minute, r.duration_minutes)
        load[i] += r.duration_minutes
        starts[(i, p.start_minute // QUARTER)] += 1
    targets = load_targets(problem)
    load_hours = sum(abs(a - b) for a, b in zip(load, targets, strict=True)) / 60
    peaks = [0] * len(problem.days)
    for (i, _), n in starts.items():
        peaks[i] = max(peaks[i], n)
    unplaced_cost = sum(weight + priority_extra(problem, r) for r in missing)
    return (
        ObjectiveTerm("unplaced", len(missing), unplaced_cost),
        ObjectiveTerm("earliness_days", early, o.earliness_per_day * early),
        ObjectiveTerm("lateness_days", late, o.lateness_per_day * late),
        ObjectiveTerm("usual_weekday_misses", weekday_misses, o.usual_weekday * weekday_misses),
        ObjectiveTerm("usual_start_hours_off", start_hours, o.usual_start_per_hour * start_hours),
        ObjectiveTerm("usual_chair_misses", chair_misses, o.usual_chair * chair_misses),
        ObjectiveTerm("load_chair_hours_off", load_hours, o.load_per_chair_hour * load_hours),
        ObjectiveTerm("start_peaks", sum(peaks), o.start_peak * sum(peaks)),
        ObjectiveTerm("expected_overtime_minutes", overtime, o.overtime_per_minute * overtime),
    )


def max_costs(problem: ScheduleProblem, r: InfusionRequest) -> int:
    """The most ``r``'s day can cost inside its window (for the strict placement weight)."""
    return max(
        (
            day_cost(problem.objective, r, d.day)
            for d in problem.days
            if r.earliest_day <= d.day <= r.latest_day
        ),
        default=0,
    )
