"""Reproducible schedule-optimiser instances: the same seed, the same problem.

The benchmark instance: 30 chairs, 08:00-18:00 on the 20 weekdays of four weeks, turnover 15 min,
nurses at 1:4 with a start limit of 2 per nurse per quarter (7 nurses 08:00-09:00, 8 until
17:00, 6 in the last hour), a few half-day chair blocks, about 900 due-but-unbooked infusions
with windows of ±3 calendar days, and enough existing (fixed) appointments that requests plus
fixed bookings take about 85 % of the chair-minutes (turnover included).

Chair minutes come from the domain's own arithmetic (services.scheduler.domain.infusion): a
patient weight (normal, mean 75 kg, sd 15, 45-140), a dose by indication (PID 0.4-0.6 g/kg,
CIDP/MMN maintenance 1 g/kg, induction 2 g/kg as 2 × 1 or 5 × 0.4 g/kg on consecutive days)
rounded up to 5 g, a 10 % product ramped 0.5 → 1 → 2 mL/kg/h for 30 min each and then the
patient's tolerated maximum (2-6 mL/kg/h, mostly 4), 30 min premedication, 15 min observation
(60 min on a first infusion), rounded up to the 15-min slot. The mix is an approximation of a
typical neurology/immunology infusion unit, not a real centre's data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from dataclasses import dataclass
from decimal import Decimal

from services.scheduler.domain.capacity import (
    DayCapacity,
    FixedBooking,
    InfusionRequest,
    ScheduleProblem,
    SiteRules,
)
from services.scheduler.domain.greedy import Board
from services.scheduler.domain.infusion import RateStepSpec, RateUnit, chair_time, infusion_time

RAMP = (Decimal("0.5"), Decimal("1"), Decimal("2"))
MAX_RATES = ((Decimal(2), 1), (Decimal(3), 2), (Decimal(4), 4), (Decimal(5), 2), (Decimal(6), 1))


@dataclass(frozen=True)
class InstanceSpec:
    chairs: int = 30
    weeks: int = 4
    open_minute: int = 8 * 60
    close_minute: int = 18 * 60
    requests: int = 900
    load: float = 0.85  # requests + fixed bookings, chair minutes + turnover / chair capacity
    window_days: int = 3
    turnover: int = 15
    nurse_ratio: int = 4
    start_limit: int = 2
    first_day: dt.date = dt.date(2026, 3, 2)  # a Monday
    blocks: int = 4
    weekend_due_share: float = 0.08  # due days that fall on a weekend (re-anchored cycles)
    preferred_share: float = 0.6  # requests with a usual chair and start time
    patients_with_fixed_share: float = 0.03  # requests of patients already booked nearby
    # nurses on duty: all day, plus one group for all but the last hour, plus one from the
    # second hour to the last (7 / 8 / 6 with the defaults)
    nurses: tuple[int, int, int] = (6, 1, 1)
    closed_weekdays: tuple[int, ...] = ()  # indices (0 = first weekday) of closure days
    # cumulative shares of PID, CIDP/MMN maintenance, 2-day and (the rest) 5-day inductions
    kinds: tuple[float, float, float] = (0.45, 0.96, 0.99)
    # of the requests with a usual chair and start: also a usual weekday, drawn apart (so the
    # rest of the instance is the same with or without it); most keep their due day's weekday
    usual_weekday_share: float = 1.0
    usual_weekday_moved: float = 0.25  # ... of those, a weekday other than the due day's


def chair_minutes(rng: random.Random, grams_per_kg: Decimal, first: bool = False) -> int:
    kg = Decimal(str(round(min(140.0, max(45.0, rng.gauss(75, 15))), 1)))
    grams = -(-(grams_per_kg * kg) // 5) * 5
    rates = [r for r, w in MAX_RATES for _ in range(w)]
    top = rng.choice(rates)
    steps = tuple(RateStepSpec(r, RateUnit.ML_PER_KG_H, 30) for r in RAMP if r < top) + (
        RateStepSpec(top, RateUnit.ML_PER_KG_H),
    )
    minutes = infusion_time(Decimal(grams), Decimal(10), steps, kg).minutes
    obs = (60, "first") if first else (15, "repeat")
    return min(chair_time(30, minutes, obs).booked_minutes, 9 * 60)


def _kind(rng: random.Random, kinds: tuple[float, float, float]) -> tuple[str, Decimal, int]:
    """(indication, g/kg per day, days in the course)."""
    u = rng.random()
    if u < kinds[0]:
        return "PID", Decimal(rng.choice(["0.4", "0.5", "0.6"])), 1
    if u < kinds[1]:
        return "CIDP", Decimal(1), 1
    if u < kinds[2]:
        return "INDUCTION2", Decimal(1), 2
    return "INDUCTION5", Decimal("0.4"), 5


def _days(spec: InstanceSpec) -> tuple[tuple[DayCapacity, ...], list[dt.date]]:
    calendar = [spec.first_day + dt.timedelta(days=k) for k in range(7 * spec.weeks)]
    chairs = tuple(f"C{k + 1:02d}" for k in range(spec.chairs))
    o, c = spec.open_minute, spec.close_minute
    base, early, middle = spec.nurses
    shifts = tuple(
        shift
        for shift in ((o, c, base), (o, c - 60, early), (o + 60, c - 60, middle))
        if shift[2] > 0
    )
    weekdays = [day for day in calendar if day.weekday() < 5]
    days = tuple(
        DayCapacity(day, o, c, chairs, (), shifts)
        for k, day in enumerate(weekdays)
        if k not in spec.closed_weekdays
    )
    return days, calendar


def generate(seed: int, spec: InstanceSpec | None = None) -> ScheduleProblem:
    spec = spec or InstanceSpec()
    rng = random.Random(seed)
    days, calendar = _days(spec)
    # maintenance: half-day blocks on random chairs and days
    blocked: dict[dt.date, list[tuple[str, int, int]]] = {}
    for _ in range(spec.blocks):
        d = rng.choice(days)
        half = rng.choice([(spec.open_minute, 13 * 60), (13 * 60, spec.close_minute)])
        blocked.setdefault(d.day, []).append((rng.choice(d.chairs), *half))
    days = tuple(
        DayCapacity(
            d.day,
            d.open_minute,
            d.close_minute,
            d.chairs,
            tuple(blocked.get(d.day, ())),
            d.nurse_shifts,
        )
        for d in days
    )
    rules = SiteRules(spec.nurse_ratio, spec.start_limit, spec.turnover)
    weekdays = [day for day in calendar if day.weekday() < 5]  # closure days are due days too
    weekend = [day for day in calendar if day.weekday() >= 5]

    requests: list[InfusionRequest] = []
    n = 0
    while len(requests) < spec.requests:
        kind, gpk, course = _kind(rng, spec.kinds)
        patient = f"P{n:04d}"
        n += 1
        if course > 1:
            # an induction course: due on consecutive weekdays from a random first one
            first = rng.randrange(0, len(weekdays) - course + 1)
            for k in range(course):
                due = weekdays[first + k]
                requests.append(
                    InfusionRequest(
                        id=f"R{len(requests):04d}",
                        patient_id=patient,
                        duration_minutes=chair_minutes(rng, gpk, first=k == 0),
                        due_day=due,
                        earliest_day=due - dt.timedelta(days=spec.window_days),
                        latest_day=due + dt.timedelta(days=spec.window_days),
                        series_id=f"S{patient}",
                        series_index=k,
                    )
                )
            continue
        due = rng.choice(weekend if rng.random() < spec.weekend_due_share else weekdays)
        duration = chair_minutes(rng, gpk, first=rng.random() < 0.05)
        pref_chair, pref_start = "", None
        if rng.random() < spec.preferred_share:
            pref_chair = rng.choice(days[0].chairs)
            latest = spec.close_minute - duration
            pref_start = rng.randrange(spec.open_minute, latest + 1, 15) if latest >= 0 else None
        requests.append(
            InfusionRequest(
                id=f"R{len(requests):04d}",
                patient_id=patient,
                duration_minutes=duration,
                due_day=due,
                earliest_day=due - dt.timedelta(days=spec.window_days),
                latest_day=due + dt.timedelta(days=spec.window_days),
                usual_chair=pref_chair,
                usual_start_minute=pref_start,
            )
        )
    requests = requests[: spec.requests]
    # a series cut short by the count: drop its tail's series tag would break it; keep whole
    series_len: dict[str, int] = {}
    for r in requests:
        if r.series_id:
            series_len[r.series_id] = series_len.get(r.series_id, 0) + 1
    requests = [r for r in requests if not r.series_id or series_len[r.series_id] in (2, 5)]

    # existing appointments: booked at random feasible spots until the load is reached
    capacity = sum(len(d.chairs) * (d.close_minute - d.open_minute) for d in days)
    need = spec.load * capacity - sum(r.duration_minutes + spec.turnover for r in requests)
    board = Board(ScheduleProblem(rules, days, (), ()))
    fixed: list[FixedBooking] = []
    misses = 0
    while need > 0 and misses < 200:
        kind, gpk, _ = _kind(rng, spec.kinds)
        duration = chair_minutes(rng, gpk if kind != "INDUCTION5" else Decimal(1))
        i = rng.randrange(len(days))
        probe = InfusionRequest(
            "probe", f"F{len(fixed):04d}", duration, days[i].day, days[i].day, days[i].day
        )
        spot = board.earliest(probe, i)  # booked as the desk does: earliest fit
        if spot is None:
            misses += 1
            continue
        p = board.place(probe, i, *spot)
        fixed.append(
            FixedBooking(
                f"F{len(fixed):04d}",
                probe.patient_id,
                p.chair_id,
                p.day,
                p.start_minute,
                p.end_minute,
            )
        )
        need -= duration + spec.turnover
    # some patients with a request already have an appointment two days before its due day
    pick = rng.sample(
        [r for r in requests if not r.series_id],
        k=int(spec.patients_with_fixed_share * len(requests)),
    )
    by_id = {f.id: f for f in fixed}
    order = list(by_id)
    rng.shuffle(order)
    for r, fid in zip(pick, order, strict=False):
        f = by_id[fid]
        # the fixed booking becomes this patient's, and the request's due day moves next to it
        by_id[fid] = FixedBooking(
            f.id, r.patient_id, f.chair_id, f.day, f.start_minute, f.end_minute
        )
        due = f.day + dt.timedelta(days=rng.choice([1, 2]))
        requests[requests.index(r)] = InfusionRequest(
            r.id,
            r.patient_id,
            r.duration_minutes,
            due,
            due - dt.timedelta(days=spec.window_days),
            due + dt.timedelta(days=spec.window_days),
            usual_chair=r.usual_chair,
            usual_start_minute=r.usual_start_minute,
        )
    return ScheduleProblem(rules, days, tuple(by_id.values()), _weekdays(seed, spec, requests))


def _weekdays(
    seed: int, spec: InstanceSpec, requests: list[InfusionRequest]
) -> tuple[InfusionRequest, ...]:
    """Usual weekdays from a generator of their own: the due day's weekday (a weekend due day:
    a random one), another one for ``usual_weekday_moved`` of them."""
    rng = random.Random(f"weekday-{seed}")
    out = []
    for r in requests:
        if r.usual_start_minute is not None and rng.random() < spec.usual_weekday_share:
            weekday = r.due_day.isoweekday() if r.due_day.weekday() < 5 else rng.randint(1, 5)
            if rng.random() < spec.usual_weekday_moved:
                weekday = rng.choice([w for w in range(1, 6) if w != weekday])
            r = dataclasses.replace(r, usual_weekday=weekday)
        out.append(r)
    return tuple(out)


def describe(problem: ScheduleProblem) -> dict[str, object]:
    """The figures a reader needs to judge the instance."""
    capacity = sum(len(d.chairs) * (d.close_minute - d.open_minute) for d in problem.days)
    turn = problem.rules.turnover_minutes
    req = sum(r.duration_minutes + turn for r in problem.requests)
    fix = sum(f.end_minute - f.start_minute + turn for f in problem.fixed)
    durations = sorted(r.duration_minutes for r in problem.requests)
    return {
        "open_days": len(problem.days),
        "chairs": len(problem.days[0].chairs) if problem.days else 0,
        "requests": len(problem.requests),
        "series": len({r.series_id for r in problem.requests if r.series_id}),
        "fixed_bookings": len(problem.fixed),
        "chair_blocks": sum(len(d.chair_blocks) for d in problem.days),
        "load_with_turnover": round((req + fix) / capacity, 3),
        "request_share_of_capacity": round(req / capacity, 3),
        "duration_min": durations[0] if durations else 0,
        "duration_p50": durations[len(durations) // 2] if durations else 0,
        "duration_mean": round(sum(durations) / len(durations), 1) if durations else 0,
        "duration_max": durations[-1] if durations else 0,
    }


# A nurse-limited month of our own: 30 chairs but 5 nurses at 1:4 all day (20 infusions at
# once; 24 with a sixth nurse in the middle of the day), a closure day (the second Wednesday),
# many inductions (a fifth of the patients start a 2- or 5-day course) and more requests than
# the nurses can take.
NURSE_LIMITED = InstanceSpec(
    requests=1000,
    load=0.0,
    nurses=(4, 0, 1),
    closed_weekdays=(7,),
    kinds=(0.35, 0.8, 0.93),
    blocks=4,
)


def small(chairs: int, nurses: tuple[int, int, int] = (6, 1, 1)) -> InstanceSpec:
    """10 open days, 2.1 requests a chair-day (more than fit), no fixed bookings or blocks,
    so that a formulation counting chairs is exact (the regression tests' independent check)."""
    return InstanceSpec(
        chairs=chairs,
        weeks=2,
        requests=21 * chairs,
        load=0.0,
        blocks=0,
        patients_with_fixed_share=0.0,
        nurses=nurses,
    )
