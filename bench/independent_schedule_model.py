"""An independent formulation of the schedule problem, to check the optimiser's optimum.

Written from capacity.py's rules without the optimiser's code: one binary per request, open
day and grid start (no duration classes, no flows), chairs, nurses and starts as covering rows
at every start and every minute the nurses on duty change, the deviation Anyive
``W·unplaced + Σ |day − due|``. Chairs are counted, not assigned, so it is exact only when
every chair is free all day (no fixed bookings, no blocks): the instances it checks are built
that way. Solved by SCIP through pywraplp directly.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ortools.linear_solver import pywraplp  # type: ignore[import-untyped]

from services.scheduler.domain.capacity import ScheduleProblem


def nurses_at(shifts: tuple[tuple[int, int, int], ...], minute: int) -> int:
    return sum(n for s, e, n in shifts if s <= minute < e)


def optimum(problem: ScheduleProblem, seconds: float = 120) -> tuple[str, float, float]:
    """(status, Anyive, bound) of the deviation Anyive."""
    assert not problem.fixed and not any(d.chair_blocks for d in problem.days)
    solver = pywraplp.Solver.CreateSolver("SCIP")
    rules = problem.rules
    g, turn = rules.granularity_minutes, rules.turnover_minutes
    x: dict[tuple[str, int, int], Any] = {}
    for r in problem.requests:
        for i, d in enumerate(problem.days):
            if r.earliest_day <= d.day <= r.latest_day:
                first = -(-d.open_minute // g) * g
                for t in range(first, d.close_minute - r.duration_minutes + 1, g):
                    x[(r.id, i, t)] = solver.BoolVar("")
    on_day: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for (rid, i, _), v in x.items():
        on_day[(rid, i)].append(v)
    series: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in problem.requests:
        if r.series_id:
            series[r.series_id].append((r.series_index, r.id))
    for members in series.values():
        members.sort()
        starts = []
        for f in range(len(problem.days)):
            u = solver.BoolVar("")
            starts.append(u)
            for k, (_, rid) in enumerate(members):
                solver.Add(sum(on_day.get((rid, f + k), [])) == u)
        solver.Add(sum(starts) <= 1)
        for _, rid in members:  # a member on a day its series does not start from: never
            for f in range(len(problem.days)):
                k = [m for _, m in members].index(rid)
                if f - k < 0 or f - k + len(members) > len(problem.days):
                    solver.Add(sum(on_day.get((rid, f), [])) == 0)
    for r in problem.requests:
        solver.Add(sum(v for (rid, _, _), v in x.items() if rid == r.id) <= 1)
    patient_day: dict[tuple[str, int], list[Any]] = defaultdict(list)
    patients = {r.id: r.patient_id for r in problem.requests}
    durations = {r.id: r.duration_minutes for r in problem.requests}
    for (rid, i, _), v in x.items():
        patient_day[(patients[rid], i)].append(v)
    for vs in patient_day.values():
        if len(vs) > 1:
            solver.Add(sum(vs) <= 1)
    for i, d in enumerate(problem.days):
        here = [(rid, t, v) for (rid, j, t), v in x.items() if j == i]
        points = {t for _, t, _ in here} | {s for s, _, _ in d.nurse_shifts}
        points |= {e for _, e, _ in d.nurse_shifts}
        for m in sorted(points):
            chairs = [v for rid, t, v in here if t <= m < t + durations[rid] + turn]
            if len(chairs) > len(d.chairs):
                solver.Add(sum(chairs) <= len(d.chairs))
            if d.nurse_shifts and d.open_minute <= m < d.close_minute:
                running = [v for rid, t, v in here if t <= m < t + durations[rid]]
                room = nurses_at(d.nurse_shifts, m) * rules.nurse_ratio
                if len(running) > room:
                    solver.Add(sum(running) <= room)
        if d.nurse_shifts:
            quarters: dict[int, list[Any]] = defaultdict(list)
            for _, t, v in here:
                quarters[t // 15].append(v)
            for q, vs in quarters.items():
                minutes = [
                    m for m in range(15 * q, 15 * q + 15) if d.open_minute <= m < d.close_minute
                ]
                allowed = min(nurses_at(d.nurse_shifts, m) for m in minutes) * rules.start_limit
                if len(vs) > allowed:
                    solver.Add(sum(vs) <= allowed)
    due = {r.id: r.due_day for r in problem.requests}
    deviation = {key: abs((problem.days[key[1]].day - due[key[0]]).days) for key in x}
    worst = sum(max((deviation[k] for k in x if k[0] == r.id), default=0) for r in problem.requests)
    weight = worst + 1
    Anyive = solver.Objective()
    for key, v in x.items():
        Anyive.SetCoefficient(v, deviation[key] - weight)
    Anyive.SetOffset(weight * len(problem.requests))
    Anyive.SetMinimization()
    solver.SetTimeLimit(int(seconds * 1000))
    solver.SetSolverSpecificParametersAsString("timing/clocktype = 1\n")
    status = solver.Solve()
    names = {pywraplp.Solver.OPTIMAL: "OPTIMAL", pywraplp.Solver.FEASIBLE: "FEASIBLE"}
    return names.get(status, "OTHER"), Anyive.Value(), Anyive.BestBound()
