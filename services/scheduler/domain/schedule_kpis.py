"""KPIs of a schedule (issue 4 §7): the same figures for the optimiser and the greedy baseline.

Occupancy counts the infusions' chair minutes ``[start, end)`` of the placements AND of the
fixed bookings (the centre's chairs as a whole), turnover not included. Open chair-minutes are
``chairs × (close − open)`` summed over the horizon's open days (blocks not subtracted).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from services.scheduler.domain.capacity import (
    START_LIMIT_SLOT_MINUTES,
    Placement,
    ScheduleKpis,
    ScheduleProblem,
)


def kpis(problem: ScheduleProblem, placements: Sequence[Placement]) -> ScheduleKpis:
    requests = {r.id: r for r in problem.requests}
    close = {d.day: d.close_minute for d in problem.days}
    n_requests = len(problem.requests)
    placed = [p for p in placements if p.request_id in requests]
    in_window = sum(
        1
        for p in placed
        if requests[p.request_id].earliest_day <= p.day <= requests[p.request_id].latest_day
    )
    deviations = [abs((p.day - requests[p.request_id].due_day).days) for p in placed]
    open_minutes = sum(len(d.chairs) * (d.close_minute - d.open_minute) for d in problem.days)
    spans = [(f.day, f.start_minute, f.end_minute) for f in problem.fixed] + [
        (p.day, p.start_minute, p.end_minute) for p in placed
    ]
    occupied = sum(e - s for _, s, e in spans)
    events: dict[object, list[tuple[int, int]]] = defaultdict(list)
    for day, s, e in spans:
        events[day] += [(s, 1), (e, -1)]
    peak = 0
    for items in events.values():
        level = 0
        for _, step in sorted(items):  # ends (-1) sort before starts (+1) at the same minute
            level += step
            peak = max(peak, level)
    starts: dict[tuple[object, int], int] = defaultdict(int)
    for day, s, _ in spans:
        starts[(day, s // START_LIMIT_SLOT_MINUTES)] += 1
    want_chair = [p for p in placed if requests[p.request_id].preferred_chair]
    want_start = [p for p in placed if requests[p.request_id].preferred_start_minute is not None]
    return ScheduleKpis(
        placed=len(placed),
        unplaced=n_requests - len(placed),
        in_window_share=in_window / n_requests if n_requests else 1.0,
        mean_deviation_days=sum(deviations) / len(deviations) if deviations else 0.0,
        chair_utilisation=occupied / open_minutes if open_minutes else 0.0,
        peak_concurrent_chairs=peak,
        minutes_past_closing=sum(max(0, p.end_minute - close.get(p.day, 24 * 60)) for p in placed),
        total_deviation_days=sum(deviations),
        peak_starts_per_slot=max(starts.values(), default=0),
        preferred_chair_share=(
            sum(1 for p in want_chair if p.chair_id == requests[p.request_id].preferred_chair)
            / len(want_chair)
            if want_chair
            else 0.0
        ),
        preferred_start_share=(
            sum(
                1
                for p in want_start
                if p.start_minute == requests[p.request_id].preferred_start_minute
            )
            / len(want_start)
            if want_start
            else 0.0
        ),
    )
