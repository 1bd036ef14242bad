"""KPIs of a schedule: the same figures for the optimiser and the greedy baseline.

Occupancy counts the infusions' chair minutes ``[start, end)`` of the placements AND of the
fixed bookings (the centre's chairs as a whole), turnover not included. Open chair-minutes are
``chairs × (close − open)`` per open day (blocks not subtracted).

Expected overtime is simulated, not taken from the objective's per-infusion expectation: every
booking's chair time (fixed ones too) is drawn OVERTIME_SAMPLES times from a lognormal with
mean 1 and a coefficient of variation of OVERTIME_DURATION_CV, seeded; on each chair the next
patient starts at the booked time or once the previous patient and the cleaning are done,
whichever is later; a day's overtime is how long after closing its last patient leaves. Nurse
delays are not simulated. The KPI is the mean over samples and open days.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from statistics import pstdev

import numpy as np

from services.scheduler.domain.capacity import (
    START_LIMIT_SLOT_MINUTES,
    Placement,
    ScheduleKpis,
    ScheduleProblem,
)

USUAL_START_KEPT_MINUTES = 30  # a start this close to the usual one keeps the habit
OVERTIME_SAMPLES = 200
OVERTIME_DURATION_CV = 0.15


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def kpis(problem: ScheduleProblem, placements: Sequence[Placement], seed: int = 0) -> ScheduleKpis:
    requests = {r.id: r for r in problem.requests}
    open_days = {d.day: d for d in problem.days}
    close = {d.day: d.close_minute for d in problem.days}
    n_requests = len(problem.requests)
    placed = [p for p in placements if p.request_id in requests]
    in_window = sum(
        1
        for p in placed
        if requests[p.request_id].earliest_day <= p.day <= requests[p.request_id].latest_day
    )
    offsets = [(p.day - requests[p.request_id].due_day).days for p in placed]
    lateness = [max(0, off) for off in offsets]
    open_minutes = sum(len(d.chairs) * (d.close_minute - d.open_minute) for d in problem.days)
    spans = [(f.day, f.start_minute, f.end_minute) for f in problem.fixed] + [
        (p.day, p.start_minute, p.end_minute) for p in placed
    ]
    occupied = sum(e - s for _, s, e in spans)
    events: dict[object, list[tuple[int, int]]] = defaultdict(list)
    busy: dict[object, int] = defaultdict(int)
    for day, s, e in spans:
        events[day] += [(s, 1), (e, -1)]
        busy[day] += e - s
    peak = 0
    for items in events.values():
        level = 0
        for _, step in sorted(items):  # ends (-1) sort before starts (+1) at the same minute
            level += step
            peak = max(peak, level)
    starts: dict[tuple[object, int], int] = defaultdict(int)
    for day, s, _ in spans:
        starts[(day, s // START_LIMIT_SLOT_MINUTES)] += 1
    daily_peak: dict[object, int] = defaultdict(int)
    for (when, _), n in starts.items():
        if when in open_days:
            daily_peak[when] = max(daily_peak[when], n)
    utilisation = [
        busy[d.day] / (len(d.chairs) * (d.close_minute - d.open_minute))
        for d in problem.days
        if d.chairs and d.close_minute > d.open_minute
    ]
    want_chair = [p for p in placed if requests[p.request_id].usual_chair]
    want_start = [p for p in placed if requests[p.request_id].usual_start_minute is not None]
    want_weekday = [p for p in placed if requests[p.request_id].usual_weekday is not None]
    got = {p.request_id for p in placed}
    series = {r.series_id for r in problem.requests if r.series_id}
    kept_series = {requests[rid].series_id for rid in got if requests[rid].series_id}
    overtime = expected_overtime(problem, placements, seed)
    return ScheduleKpis(
        placed=len(placed),
        unplaced=n_requests - len(placed),
        in_window_share=in_window / n_requests if n_requests else 1.0,
        mean_deviation_days=sum(abs(o) for o in offsets) / len(offsets) if offsets else 0.0,
        chair_utilisation=occupied / open_minutes if open_minutes else 0.0,
        peak_concurrent_chairs=peak,
        minutes_past_closing=sum(max(0, p.end_minute - close.get(p.day, 24 * 60)) for p in placed),
        total_deviation_days=sum(abs(o) for o in offsets),
        peak_starts_per_slot=max(starts.values(), default=0),
        usual_chair_share=_share(
            sum(1 for p in want_chair if p.chair_id == requests[p.request_id].usual_chair),
            len(want_chair),
        ),
        usual_start_share=_share(
            sum(
                1
                for p in want_start
                if abs(p.start_minute - (requests[p.request_id].usual_start_minute or 0))
                <= USUAL_START_KEPT_MINUTES
            ),
            len(want_start),
        ),
        usual_weekday_share=_share(
            sum(
                1
                for p in want_weekday
                if p.day.isoweekday() == requests[p.request_id].usual_weekday
            ),
            len(want_weekday),
        ),
        series_dropped=len(series - kept_series),
        mean_lateness_days=sum(lateness) / len(lateness) if lateness else 0.0,
        max_lateness_days=max(lateness, default=0),
        on_due_day_share=_share(sum(1 for o in offsets if o == 0), len(offsets)),
        daily_utilisation_spread=pstdev(utilisation) if len(utilisation) > 1 else 0.0,
        mean_daily_peak_starts=(
            sum(daily_peak.values()) / len(problem.days) if problem.days else 0.0
        ),
        expected_overtime_minutes=sum(overtime) / len(overtime) if overtime else 0.0,
        expected_overtime_worst_day=max(overtime, default=0.0),
    )


def expected_overtime(
    problem: ScheduleProblem, placements: Sequence[Placement], seed: int
) -> list[float]:
    """Per open day, the simulated mean minutes its last patient leaves after closing."""
    rng = np.random.default_rng(seed)
    sigma = math.sqrt(math.log(1 + OVERTIME_DURATION_CV**2))
    turn = problem.rules.turnover_minutes
    chairs: dict[tuple[object, str], list[tuple[int, int]]] = defaultdict(list)
    for f in problem.fixed:
        chairs[(f.day, f.chair_id)].append((f.start_minute, f.end_minute - f.start_minute))
    for p in placements:
        chairs[(p.day, p.chair_id)].append((p.start_minute, p.end_minute - p.start_minute))
    out = []
    for d in problem.days:
        last = np.zeros(OVERTIME_SAMPLES)
        for chair in d.chairs:
            free_at = np.full(OVERTIME_SAMPLES, -np.inf)
            for start, minutes in sorted(chairs.get((d.day, chair), [])):
                factor = rng.lognormal(-(sigma**2) / 2, sigma, OVERTIME_SAMPLES)
                begin = np.maximum(start, free_at)
                end = begin + minutes * factor
                last = np.maximum(last, end)
                free_at = end + turn
        out.append(float(np.maximum(last - d.close_minute, 0).mean()))
    return out
