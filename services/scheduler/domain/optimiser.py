"""Batch schedule optimiser (issue 4 §7): OR-Tools CP-SAT decides day and start, then chairs are
assigned per day. Pure domain code: no gRPC, no SQL, no clock reads (``time.perf_counter`` only
measures the solve). docs/optimiser.md explains the model; in short:

Stage 1, CP-SAT. For request r and each open day i of its window where it can be at all, a
literal x[r,i] and a start s[r,i] on the granularity grid within opening hours (end <= close).
Three optional intervals share x[r,i] and s[r,i]: the chair interval [s, s + duration +
turnover), the nurse interval [s, s + duration) and the start interval (the clock quarter of s).
Per day, three cumulatives: chairs (capacity = chairs; fixed bookings and blocks enter as fixed
demand profiles), nurses (capacity = the day's most nurses × ratio; minutes with fewer nurses,
and fixed bookings, as fixed demand) and starts (per quarter, likewise). At most one x per
request and per patient-day (days with a fixed booking of the patient are not offered). A
series picks a first day y[F]; member k is on day F + k with the same literal. With a stock
budget (``ScheduleProblem.stock``), a day whose grams of the request's product cannot cover its
dose is not offered, and per product and day  Σ milligrams · x ≤ the day's milligrams  (a
knapsack: several infusions on one day draw on the same stock).

Objective, lexicographic by two sequential solves (the second hinted with the first and bound
by its result):
  1. minimise  W·unplaced + Σ |day − due|        with W = 1 + the largest possible total
     deviation, so one more placement always beats any deviation;
  2. keeping (1) at least as good: minimise  V·Σ_days peak starts per quarter + preferred
     start misses, with V = 1 + number of requests naming a start.
Preferred chairs are honoured in stage 2.

Stage 2, chairs. The chair cumulative guarantees that at every minute no more infusions need a
chair than chairs are free, which is enough for an interval colouring when chairs are all free
all day; fixed bookings and blocks sit on given chairs, so per day the placements are coloured
greedily (preferred chair, else the tightest free chair) and, if that leaves one out, exactly by
a small CP-SAT assignment with the starts fixed. Whatever still has no chair is moved by the
board to the closest-to-due spot that holds every rule, or reported unplaced. The result is
checked by the independent validator; if it broke a rule (a bug), the greedy result is returned
instead and the notes say so.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
from ortools.sat.python import cp_model

from services.scheduler.domain.capacity import (
    START_LIMIT_SLOT_MINUTES,
    DayCapacity,
    InfusionRequest,
    Placement,
    ScheduleProblem,
    ScheduleResult,
    SolvePhase,
)
from services.scheduler.domain.greedy import (
    DAY_MINUTES,
    Board,
    first_start,
    greedy,
    nurse_curve,
    quarter_caps,
    series_groups,
    stock_budget,
)
from services.scheduler.domain.schedule_check import violations
from services.scheduler.domain.schedule_kpis import kpis

PHASE1_SHARE = 0.7  # of the time limit; phase 2 gets the rest plus what phase 1 left
# CP-SAT work units per second of time limit: stopping on deterministic time makes a run with
# a given seed repeatable; the wall-clock limit is only a safety net (docs/optimiser.md).
DETERMINISTIC_UNITS_PER_SECOND = 0.05

Q = START_LIMIT_SLOT_MINUTES
CHAIR_STAGE_RESERVE_S = 2.0  # kept back from the time limit for the chair stage
MG_PER_GRAM = 1000  # CP-SAT wants integers: doses rounded up, budgets down, in milligrams


@dataclass
class _Option:
    request: InfusionRequest
    day: int
    x: cp_model.IntVar
    start: cp_model.IntVar
    deviation: int


@dataclass
class _Model:
    model: cp_model.CpModel
    options: list[_Option] = field(default_factory=list)
    by_request: dict[str, list[_Option]] = field(default_factory=dict)
    primary: cp_model.LinearExprT = 0  # W·unplaced + deviation, as an expression
    weight: int = 1
    peaks: list[cp_model.IntVar] = field(default_factory=list)
    matches: list[cp_model.IntVar] = field(default_factory=list)


def _segments(values: np.ndarray, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """Maximal runs [start, end) of equal positive value within [lo, hi)."""
    out: list[tuple[int, int, int]] = []
    t = lo
    while t < hi:
        v = int(values[t])
        u = t + 1
        while u < hi and int(values[u]) == v:
            u += 1
        if v > 0:
            out.append((t, u, v))
        t = u
    return out


def _fixed_profile(
    model: cp_model.CpModel, segments: list[tuple[int, int, int]]
) -> tuple[list[cp_model.IntervalVar], list[int]]:
    intervals = [
        model.new_fixed_size_interval_var(s, e - s, f"fix_{s}_{e}") for s, e, _ in segments
    ]
    return intervals, [v for _, _, v in segments]


def _mg(grams: Decimal, up: bool) -> int:
    scaled = grams * MG_PER_GRAM
    return int(math.ceil(scaled) if up else math.floor(scaled))


def _request_days(
    problem: ScheduleProblem,
    req: InfusionRequest,
    fixed_patients: set[tuple[str, int]],
    stock: dict[tuple[str, dt.date], Decimal] | None,
) -> list[int]:
    g = problem.rules.granularity_minutes
    out = []
    for i, d in enumerate(problem.days):
        if not req.earliest_day <= d.day <= req.latest_day:
            continue
        if (req.patient_id, i) in fixed_patients:
            continue
        if first_start(d, g) + req.duration_minutes > d.close_minute:
            continue
        if (
            stock is not None
            and req.grams > 0
            and _mg(stock.get((req.product_id, d.day), Decimal(0)), up=False)
            < _mg(req.grams, up=True)
        ):
            continue  # the day's stock cannot cover this dose even alone
        out.append(i)
    return out


def _build(problem: ScheduleProblem) -> _Model:
    rules = problem.rules
    g = rules.granularity_minutes
    turn = rules.turnover_minutes
    index = {d.day: i for i, d in enumerate(problem.days)}
    fixed_patients = {(f.patient_id, index[f.day]) for f in problem.fixed if f.day in index}
    m = _Model(cp_model.CpModel())
    model = m.model
    stock = stock_budget(problem)

    # which days each request may take; series members are tied to their first day
    allowed: dict[str, list[int]] = {
        r.id: _request_days(problem, r, fixed_patients, stock) for r in problem.requests
    }
    tied: dict[tuple[str, int], cp_model.IntVar] = {}
    for sid, members in series_groups(problem.requests).items():
        firsts = [
            f
            for f in range(len(problem.days))
            if all(f + k in allowed[mm.id] for k, mm in enumerate(members))
        ]
        for f in firsts:
            y = model.new_bool_var(f"series_{sid}_{f}")
            for k, mm in enumerate(members):
                tied[(mm.id, f + k)] = y
        for k, mm in enumerate(members):
            allowed[mm.id] = [f + k for f in firsts]
        if firsts:
            model.add_at_most_one(tied[(members[0].id, f)] for f in firsts)

    chair_iv: dict[int, list[cp_model.IntervalVar]] = defaultdict(list)
    nurse_iv: dict[int, list[cp_model.IntervalVar]] = defaultdict(list)
    start_iv: dict[int, list[cp_model.IntervalVar]] = defaultdict(list)
    for r in problem.requests:
        opts: list[_Option] = []
        for i in allowed[r.id]:
            d = problem.days[i]
            grid = list(range(first_start(d, g), d.close_minute - r.duration_minutes + 1, g))
            x = tied[(r.id, i)] if (r.id, i) in tied else model.new_bool_var(f"x_{r.id}_{i}")
            s = model.new_int_var_from_domain(cp_model.Domain.from_values(grid), f"s_{r.id}_{i}")
            dev = abs((d.day - r.due_day).days)
            opts.append(_Option(r, i, x, s, dev))
            chair_iv[i].append(
                model.new_optional_fixed_size_interval_var(s, r.duration_minutes + turn, x, "c")
            )
            nurse_iv[i].append(
                model.new_optional_fixed_size_interval_var(s, r.duration_minutes, x, "n")
            )
            if g % Q == 0:
                start_iv[i].append(model.new_optional_fixed_size_interval_var(s, Q, x, "q"))
            else:
                qv = model.new_int_var(0, DAY_MINUTES // Q, f"q_{r.id}_{i}")
                model.add(Q * qv <= s).only_enforce_if(x)
                model.add(s <= Q * qv + Q - 1).only_enforce_if(x)
                start_iv[i].append(model.new_optional_fixed_size_interval_var(Q * qv, Q, x, "q"))
            if r.preferred_start_minute is not None and r.preferred_start_minute in grid:
                hit = model.new_bool_var(f"pref_{r.id}_{i}")
                model.add_implication(hit, x)
                model.add(s == r.preferred_start_minute).only_enforce_if(hit)
                m.matches.append(hit)
        if not r.series_id and len(opts) > 1:
            model.add_at_most_one(o.x for o in opts)
        m.options += opts
        m.by_request[r.id] = opts

    # one infusion per patient per day
    per_patient_day: dict[tuple[str, int], list[cp_model.IntVar]] = defaultdict(list)
    for o in m.options:
        per_patient_day[(o.request.patient_id, o.day)].append(o.x)
    for lits in per_patient_day.values():
        if len(lits) > 1:
            model.add_at_most_one(lits)

    # stock: per product and day, the doses placed fit the day's grams (a knapsack)
    if stock is not None:
        per_product_day: dict[tuple[str, int], list[_Option]] = defaultdict(list)
        for o in m.options:
            if o.request.grams > 0:
                per_product_day[(o.request.product_id, o.day)].append(o)
        for (product, i), opts in sorted(per_product_day.items()):
            need = [_mg(o.request.grams, up=True) for o in opts]
            budget = _mg(stock.get((product, problem.days[i].day), Decimal(0)), up=False)
            if sum(need) > budget:
                model.add(cp_model.LinearExpr.weighted_sum([o.x for o in opts], need) <= budget)

    # per-day resources
    fixed_by_day: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
    for fb in problem.fixed:
        if fb.day in index:
            fixed_by_day[index[fb.day]].append((fb.chair_id, fb.start_minute, fb.end_minute))
    day_options: dict[int, list[_Option]] = defaultdict(list)
    for o in m.options:
        day_options[o.day].append(o)
    for i, d in enumerate(problem.days):
        if not chair_iv[i]:
            continue
        free_chair_minutes = _chairs(model, d, fixed_by_day[i], turn, chair_iv[i])
        # redundant energy cut (the LP bound of the cumulative alone is weak)
        model.add(
            sum((o.request.duration_minutes + turn) * o.x for o in day_options[i])
            <= free_chair_minutes
        )
        if d.nurse_shifts:
            _nurses(model, d, fixed_by_day[i], rules.nurse_ratio, nurse_iv[i])
            _starts(model, d, fixed_by_day[i], rules.start_limit, start_iv[i])
        peak = model.new_int_var(0, len(start_iv[i]) + len(fixed_by_day[i]), f"peak_{i}")
        fixed_starts = np.zeros(DAY_MINUTES // Q + 1, dtype=np.int64)
        for _, fs, _ in fixed_by_day[i]:
            fixed_starts[fs // Q] += 1
        segs = [(q * Q, q * Q + Q, int(v)) for q, v in enumerate(fixed_starts) if v > 0]
        fiv, fdem = _fixed_profile(model, segs)
        model.add_cumulative(start_iv[i] + fiv, [1] * len(start_iv[i]) + fdem, peak)
        m.peaks.append(peak)

    worst = sum(max((o.deviation for o in opts), default=0) for opts in m.by_request.values())
    m.weight = worst + 1
    m.primary = m.weight * len(problem.requests) - cp_model.LinearExpr.weighted_sum(
        [o.x for o in m.options], [m.weight - o.deviation for o in m.options]
    )
    return m


def _chairs(
    model: cp_model.CpModel,
    d: DayCapacity,
    fixed: list[tuple[str, int, int]],
    turn: int,
    intervals: list[cp_model.IntervalVar],
) -> int:
    horizon = DAY_MINUTES + turn + 1
    taken = {c: np.zeros(horizon, dtype=bool) for c in d.chairs}
    for chair, s, e in d.chair_blocks:
        if chair in taken:
            taken[chair][max(0, s) : max(0, e)] = True
    for chair, s, e in fixed:
        if chair in taken:
            taken[chair][s : e + turn] = True
    busy = np.zeros(horizon, dtype=np.int64)
    for arr in taken.values():
        busy += arr
    fiv, fdem = _fixed_profile(model, _segments(busy, 0, horizon))
    model.add_cumulative(intervals + fiv, [1] * len(intervals) + fdem, len(d.chairs))
    lo, hi = d.open_minute, d.close_minute + turn
    return int(len(d.chairs) * (hi - lo) - busy[lo:hi].sum())


def _nurses(
    model: cp_model.CpModel,
    d: DayCapacity,
    fixed: list[tuple[str, int, int]],
    ratio: int,
    intervals: list[cp_model.IntervalVar],
) -> None:
    room = nurse_curve(d) * ratio
    for _, s, e in fixed:
        room[s:e] -= 1
    lo, hi = d.open_minute, d.close_minute
    top = max(1, int(room[lo:hi].max()))
    reduction = np.clip(top - room, 0, top)
    fiv, fdem = _fixed_profile(model, _segments(reduction, lo, hi))
    model.add_cumulative(intervals + fiv, [1] * len(intervals) + fdem, top)


def _starts(
    model: cp_model.CpModel,
    d: DayCapacity,
    fixed: list[tuple[str, int, int]],
    limit: int,
    intervals: list[cp_model.IntervalVar],
) -> None:
    caps = quarter_caps(d, nurse_curve(d), limit)
    for _, fs, _ in fixed:
        caps[fs // Q] -= 1
    lo, hi = d.open_minute // Q, -(-d.close_minute // Q)
    top = max(1, int(caps[lo:hi].max()))
    segs = [(q * Q, q * Q + Q, int(top - max(0, caps[q]))) for q in range(lo, hi)]
    fiv, fdem = _fixed_profile(model, [sg for sg in segs if sg[2] > 0])
    model.add_cumulative(intervals + fiv, [1] * len(intervals) + fdem, top)


def _solver(seconds: float, seed: int, workers: int) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.num_workers = workers
    p.random_seed = seed
    p.interleave_search = True  # deterministic multi-worker search (batches in a fixed order)
    p.max_deterministic_time = max(0.1, seconds * DETERMINISTIC_UNITS_PER_SECOND)
    p.max_time_in_seconds = max(0.2, seconds * 1.2)  # safety net only
    return solver


def _found(status: object) -> bool:
    return int(status) in (cp_model.OPTIMAL, cp_model.FEASIBLE)  # type: ignore[call-overload]


def _phase(name: str, solver: cp_model.CpSolver, status: object, seconds: float) -> SolvePhase:
    found = _found(status)
    return SolvePhase(
        name=name,
        status=solver.status_name(status),  # type: ignore[arg-type,unused-ignore]
        objective=solver.objective_value if found else None,
        best_bound=solver.best_objective_bound if found else None,
        seconds=seconds,
    )


def solve(
    problem: ScheduleProblem, time_limit_s: float, seed: int, workers: int = 1
) -> ScheduleResult:
    began = time.perf_counter()
    base = greedy(problem)
    m = _build(problem)
    model = m.model
    notes: list[str] = []

    # hint: the greedy schedule
    index = {d.day: i for i, d in enumerate(problem.days)}
    _hint(m, {p.request_id: (index[p.day], p.start_minute) for p in base.placements})

    # phase 1: placements and deviation
    model.minimize(m.primary)
    t1 = time.perf_counter()
    # Budgets are fractions of the limit, never of the wall time left: a deterministic-time
    # limit that depended on how long the machine took would make runs unrepeatable.
    solver = _solver(max(0.5, time_limit_s * PHASE1_SHARE), seed, workers)
    status = solver.solve(model)
    phases = [_phase("placed+deviation", solver, status, time.perf_counter() - t1)]
    if not _found(status):
        notes.append(f"CP-SAT found no schedule ({solver.status_name(status)}): greedy returned")
        return _finish(problem, base, "GREEDY_FALLBACK", phases, notes, began, m.weight)
    primary = round(solver.objective_value)
    chosen = {
        o.request.id: (o.day, solver.value(o.start)) for o in m.options if solver.boolean_value(o.x)
    }

    # phase 2: level loading and preferred starts, keeping phase 1's result
    left = max(0.5, time_limit_s * (1 - PHASE1_SHARE) - CHAIR_STAGE_RESERVE_S)
    model.clear_hints()  # type: ignore[no-untyped-call]
    _hint(m, chosen)
    model.add(m.primary <= primary)
    misses = len(m.matches) - sum(m.matches) if m.matches else 0
    model.minimize((len(m.matches) + 1) * sum(m.peaks) + misses)
    t2 = time.perf_counter()
    solver2 = _solver(left, seed, workers)
    status2 = solver2.solve(model)
    phases.append(_phase("peak starts+preferred start", solver2, status2, time.perf_counter() - t2))
    if _found(status2):
        chosen = {
            o.request.id: (o.day, solver2.value(o.start))
            for o in m.options
            if solver2.boolean_value(o.x)
        }
    status_name = solver.status_name(status)
    placements, unplaced = _assign_chairs(problem, chosen, notes)
    result = ScheduleResult(
        placements=tuple(placements),
        unplaced=tuple(unplaced),
        status=status_name,
        objective=float(_primary_value(problem, placements, m.weight)),
        best_bound=phases[0].best_bound,
        solve_seconds=time.perf_counter() - began,
        kpis=kpis(problem, placements),
        phases=tuple(phases),
        notes=tuple(notes),
    )
    broken = violations(problem, placements)
    if broken:
        notes.append("optimiser schedule broke rules, greedy returned: " + "; ".join(broken[:5]))
        return _finish(problem, base, "GREEDY_FALLBACK", phases, notes, began, m.weight)
    if _primary_value(problem, base.placements, m.weight) < (result.objective or 0):
        notes.append("the greedy schedule places more or deviates less: greedy returned")
        return _finish(problem, base, "GREEDY_FALLBACK", phases, notes, began, m.weight)
    return result


def _hint(m: _Model, chosen: dict[str, tuple[int, int]]) -> None:
    """Hint every literal and the chosen starts (a series' shared literal only once)."""
    done: set[int] = set()
    for o in m.options:
        on = chosen.get(o.request.id, (-1, 0))[0] == o.day
        if o.x.index not in done:
            done.add(o.x.index)
            m.model.add_hint(o.x, int(on))
        if on:
            m.model.add_hint(o.start, chosen[o.request.id][1])


def _primary_value(problem: ScheduleProblem, placements: Sequence[Placement], weight: int) -> int:
    due = {r.id: r.due_day for r in problem.requests}
    dev = sum(abs((p.day - due[p.request_id]).days) for p in placements)
    return weight * (len(problem.requests) - len(placements)) + dev


def _finish(
    problem: ScheduleProblem,
    base: ScheduleResult,
    status: str,
    phases: list[SolvePhase],
    notes: list[str],
    began: float,
    weight: int,
) -> ScheduleResult:
    return ScheduleResult(
        placements=base.placements,
        unplaced=base.unplaced,
        status=status,
        objective=float(_primary_value(problem, base.placements, weight)),
        best_bound=phases[0].best_bound if phases else None,
        solve_seconds=time.perf_counter() - began,
        kpis=base.kpis,
        phases=tuple(phases),
        notes=tuple(notes),
    )


# -- stage 2: chairs ------------------------------------------------------------------------------
def _assign_chairs(
    problem: ScheduleProblem, chosen: dict[str, tuple[int, int]], notes: list[str]
) -> tuple[list[Placement], list[tuple[str, str]]]:
    board = Board(problem)
    requests = {r.id: r for r in problem.requests}
    groups = series_groups(problem.requests)
    by_day: dict[int, list[tuple[InfusionRequest, int]]] = defaultdict(list)
    for rid, (i, s) in chosen.items():
        by_day[i].append((requests[rid], s))
    placed: dict[str, Placement] = {}
    left_out: list[InfusionRequest] = []
    for i in sorted(by_day):
        items = sorted(by_day[i], key=lambda t: (t[1], -t[0].duration_minutes, t[0].id))
        got = _colour_day(board, i, items, prefer=True)
        if len(got) < len(items):
            for rid, p in got.items():
                board.remove(requests[rid], p)
            got = _colour_day(board, i, items, prefer=False)
        if len(got) < len(items):
            for rid, p in got.items():
                board.remove(requests[rid], p)
            got = _exact_day(board, i, items)
            for rid, p in got.items():
                board.place(requests[rid], i, p.start_minute, p.chair_id)
            notes.append(
                f"{problem.days[i].day}: chairs and starts re-solved exactly (colouring failed)"
            )
        placed.update(got)
        left_out += [r for r, _ in items if r.id not in got]
    # a series member without a chair takes its whole series out
    moved: list[list[InfusionRequest]] = []
    seen: set[str] = set()
    for r in left_out:
        unit = groups[r.series_id] if r.series_id else [r]
        if unit[0].id in seen:
            continue
        seen.add(unit[0].id)
        for mm in unit:
            if mm.id in placed:
                board.remove(mm, placed.pop(mm.id))
        moved.append(unit)
    unplaced: list[tuple[str, str]] = []
    for unit in moved:
        notes.append(f"no chair for {unit[0].id} at its planned time: moved by the board")
        got_list = _reinsert(board, unit)
        if got_list is None:
            reason = board.why_not_series(unit) if unit[0].series_id else board.why_not(unit[0])
            unplaced += [(mm.id, reason) for mm in unit]
        else:
            placed.update({p.request_id: p for p in got_list})
    # anything the solver left out: explain (and place it if the board finds room after all)
    for r in problem.requests:
        if r.id in placed or r.id in chosen or any(u[0] == r.id for u in unplaced):
            continue
        unit = groups[r.series_id] if r.series_id else [r]
        if r is not unit[0]:
            continue
        got_list = _reinsert(board, unit)
        if got_list is None:
            reason = board.why_not_series(unit) if r.series_id else board.why_not(r)
            unplaced += [(mm.id, reason) for mm in unit]
        else:
            notes.append(f"{r.id}: placed after the solve by the board")
            placed.update({p.request_id: p for p in got_list})
    order = {r.id: k for k, r in enumerate(problem.requests)}
    unplaced.sort(key=lambda u: order[u[0]])
    out = sorted(placed.values(), key=lambda p: (p.day, p.start_minute, p.chair_id))
    return out, unplaced


def _colour_day(
    board: Board, i: int, items: list[tuple[InfusionRequest, int]], prefer: bool
) -> dict[str, Placement]:
    got: dict[str, Placement] = {}
    day = board.days[i]
    turn = board.rules.turnover_minutes
    for r, s in items:
        e = s + r.duration_minutes
        free = board.chairs_free(i, s, e)
        if not free:
            continue
        if prefer and r.preferred_chair in free:
            chair = r.preferred_chair
        else:
            # tightest fit: the chair whose next taken minute after us comes soonest,
            # then the one freed most recently before us
            def fit(c: str, s: int = s, e: int = e) -> tuple[int, int, int]:
                arr = day.chair_free[c]
                after = np.flatnonzero(~arr[e + turn :])
                nxt = int(after[0]) if len(after) else DAY_MINUTES
                before = np.flatnonzero(~arr[:s])
                prev = int(before[-1]) if len(before) else -1
                return (nxt, -prev, day.cap.chairs.index(c))

            chair = min(free, key=fit)
        got[r.id] = board.place(r, i, s, chair)
    return got


def _exact_day(
    board: Board, i: int, items: list[tuple[InfusionRequest, int]]
) -> dict[str, Placement]:
    """Chairs for one day exactly, starts free to move within the day (nurse and start rules
    kept, fixed bookings and blocks where they are); most placed, then fewest moved starts."""
    model = cp_model.CpModel()
    rules = board.rules
    turn = rules.turnover_minutes
    cap = board.days[i].cap
    g = rules.granularity_minutes
    per_chair: dict[str, list[cp_model.IntervalVar]] = defaultdict(list)
    lits: dict[tuple[str, str], cp_model.IntVar] = {}
    starts: dict[str, cp_model.IntVar] = {}
    nurse_iv: list[cp_model.IntervalVar] = []
    start_iv: list[cp_model.IntervalVar] = []
    score: list[cp_model.LinearExprT] = []
    for r, s0 in items:
        grid = list(range(first_start(cap, g), cap.close_minute - r.duration_minutes + 1, g))
        s = model.new_int_var_from_domain(cp_model.Domain.from_values(grid), f"s_{r.id}")
        starts[r.id] = s
        here = model.new_bool_var(f"p_{r.id}")
        mine = []
        for c in cap.chairs:
            a = model.new_bool_var(f"a_{r.id}_{c}")
            lits[(r.id, c)] = a
            per_chair[c].append(
                model.new_optional_fixed_size_interval_var(s, r.duration_minutes + turn, a, "i")
            )
            mine.append(a)
            if c == r.preferred_chair:
                score.append(a)
        model.add(sum(mine) == here)
        nurse_iv.append(
            model.new_optional_fixed_size_interval_var(s, r.duration_minutes, here, "n")
        )
        if g % Q == 0:
            start_iv.append(model.new_optional_fixed_size_interval_var(s, Q, here, "q"))
        else:
            qv = model.new_int_var(0, DAY_MINUTES // Q, f"q_{r.id}")
            model.add(Q * qv <= s)
            model.add(s <= Q * qv + Q - 1)
            start_iv.append(model.new_optional_fixed_size_interval_var(Q * qv, Q, here, "q"))
        moved = model.new_bool_var(f"m_{r.id}")
        model.add(s == s0).only_enforce_if(~moved)
        model.add_hint(s, s0)
        score.append(1000 * here - 10 * moved)
    fixed = [
        (f.chair_id, f.start_minute, f.end_minute) for f in board.problem.fixed if f.day == cap.day
    ]
    for c in cap.chairs:
        taken = [(bs, be) for bc, bs, be in cap.chair_blocks if bc == c]
        taken += [(fs, fe + turn) for fc, fs, fe in fixed if fc == c]
        per_chair[c] += [
            model.new_fixed_size_interval_var(a, b - a, "t") for a, b in taken if b > a
        ]
        model.add_no_overlap(per_chair[c])
    if cap.nurse_shifts:
        _nurses(model, cap, fixed, rules.nurse_ratio, nurse_iv)
        _starts(model, cap, fixed, rules.start_limit, start_iv)
    model.maximize(sum(score))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.max_deterministic_time = 2.0
    status = solver.solve(model)
    out: dict[str, Placement] = {}
    if not _found(status):
        return out
    for r, _ in items:
        for c in cap.chairs:
            if solver.boolean_value(lits[(r.id, c)]):
                at = int(solver.value(starts[r.id]))
                out[r.id] = Placement(r.id, cap.day, c, at, at + r.duration_minutes)
    return out


def _reinsert(board: Board, unit: list[InfusionRequest]) -> list[Placement] | None:
    """Place a request (or a whole series) at the feasible spot closest to its due day."""
    head = unit[0]
    if len(unit) == 1 and not head.series_id:
        days = sorted(
            board.window_days(head),
            key=lambda i: (abs((board.problem.days[i].day - head.due_day).days), i),
        )
        for i in days:
            spot = board.earliest(head, i)
            if spot is not None:
                return [board.place(head, i, *spot)]
        return None
    firsts = sorted(
        board.series_first_days(unit),
        key=lambda f: (abs((board.problem.days[f].day - head.due_day).days), f),
    )
    return board.try_series(unit, firsts)
