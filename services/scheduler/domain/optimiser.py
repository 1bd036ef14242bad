"""Batch schedule optimiser: an exact time-indexed MIP for the horizon, then starts and chairs
per day. Pure domain code: no gRPC, no SQL, no clock reads (``time.perf_counter`` only
measures). docs/optimiser.md has the formulation and the measurements; in short:

1. **Horizon** (horizon_model.py): which day each request takes and how many infusions of each
   duration start at each grid minute of each day, with every hard rule as rows and the
   centre's objective (domain/objective.py) less the usual start and chair. Chairs are one flow
   per day, exact for days in ``exact`` (one flow per group of identical free stretches).
   When a limit stops this solve short of its gap, the **window search** solves the same model
   again a few open days at a time, the rest of the incumbent fixed (``_search``).
2. **Starts per request**, per day: the day's requests are matched to the day's starts (a
   linear assignment on the usual start time), and when the objective values usual start times
   the day is re-solved as a small MIP with one family per request (starts may move within the
   day's rules), started from that match.
3. **Chairs**, per day (chairs.py): coloured greedily (usual chair first, else the tightest
   fit), and when usual chairs are worth anything, assigned by a small exact MIP with the
   fewest usual-chair misses (which also settles whether the starts fit real chairs at all).
   On a day where they do not, the day is re-solved exactly (a flow per group of identical
   stretches, its requests kept, starts free) and coloured within the groups, which always
   succeeds; if even the exact day cannot hold its requests, the day becomes exact in the
   horizon model and the horizon is solved again (another round).

The result is checked by the independent validator; the greedy schedule is returned instead
when the optimiser's breaks a rule (a bug) or costs more on the same objective.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ortools.graph.python import linear_sum_assignment  # type: ignore[import-untyped]

from services.scheduler.domain import chairs
from services.scheduler.domain.capacity import (
    InfusionRequest,
    Placement,
    ScheduleProblem,
    ScheduleResult,
    SolvePhase,
)
from services.scheduler.domain.day_grid import DayGrid, Family, add_day
from services.scheduler.domain.greedy import Board, greedy, series_groups
from services.scheduler.domain.horizon_model import HorizonModel
from services.scheduler.domain.mip import Mip, MipLimits, MipOutcome, Var
from services.scheduler.domain.objective import (
    expected_overtime,
    priority_extra,
    start_cost,
    terms,
)
from services.scheduler.domain.schedule_check import violations
from services.scheduler.domain.schedule_kpis import kpis

MAX_ROUNDS = 3  # horizon solves: the first, and one per round of days made exact
HORIZON_SHARE = 0.45  # of the time limit: the first horizon solve's CPU-time safety net
LATER_SHARE = 0.2 / MAX_ROUNDS  # ... and that of each later round's
# When a limit stopped the first horizon solve short of its gap, the window search
# (large-neighbourhood search) solves the horizon again window by window: SEARCH_DAYS open
# days at a time, one starting every SEARCH_STEP open days (the last one cut at the horizon's
# end). Each window stops after its root node (SEARCH_NODES), which takes a few seconds, so
# its result does not depend on the machine's speed or load; its time limit, SEARCH_SHARE of
# the time limit split over the windows, is only the safety net, and none is started once
# SEARCH_UNTIL of the time limit is spent (CPU seconds since solve began): the day stage after
# it needs the rest (docs/optimiser.md "Window search").
SEARCH_DAYS = 5
SEARCH_STEP = 4
SEARCH_NODES = 1
SEARCH_SHARE = 0.5
SEARCH_UNTIL = 0.8
# Deterministic limits: branch-and-bound nodes per second of the time limit, and the relative
# gap at which a solve counts as done. The benchmark's horizon closes at the root node; these
# only bound the rare instance that branches (docs/optimiser.md "Determinism").
NODES_PER_SECOND = 100
GAP = 1e-4
DAY_NODES = 200  # a day's MIP (starts per request, or its exact chairs)
DAY_SECONDS = 2.0  # a day's MIP: its CPU-time safety net (they take well under a second)


@dataclass(frozen=True)
class _Slot:
    start: int
    group: int  # stretch group of the day's grid, or -1 (the day's one flow)


def solve(problem: ScheduleProblem, time_limit_s: float, seed: int) -> ScheduleResult:
    """The best schedule the deterministic limits reach; ``time_limit_s`` scales them and is
    the wall-clock safety net."""
    began, cpu_began = time.perf_counter(), time.process_time()
    base = greedy(problem)
    base_terms = terms(problem, base.placements)
    notes: list[str] = []
    phases: list[SolvePhase] = []
    if not problem.requests or not problem.days:
        return _finish(problem, base, "OPTIMAL", 0.0, phases, notes, began)
    grids = [DayGrid(problem, i) for i in range(len(problem.days))]
    exact: frozenset[int] = frozenset()
    requests = {r.id: r for r in problem.requests}
    outcome: MipOutcome | None = None
    placements: list[Placement] = []
    left_out: list[str] = []
    for round_ in range(1, MAX_ROUNDS + 1):
        model = HorizonModel(problem, grids, exact)
        model.hint(base.placements, grids)
        share = HORIZON_SHARE if round_ == 1 else LATER_SHARE
        limits = MipLimits(
            seconds=max(1.0, time_limit_s * share),
            nodes=max(1, int(NODES_PER_SECOND * time_limit_s)),
            gap=GAP,
            seed=seed,
        )
        outcome = model.solve(limits)
        phases.append(_phase(f"horizon, round {round_}", outcome))
        if outcome.clock_stopped:
            notes.append(
                f"round {round_}: the time limit (CPU seconds) stopped the solve before its "
                "deterministic limits, so a faster or slower processor may find another schedule"
            )
        if not outcome.found:
            notes.append(f"the horizon model found no schedule ({outcome.status})")
            return _finish(problem, base, "GREEDY_FALLBACK", None, phases, notes, began)
        if round_ == 1 and outcome.status != "OPTIMAL":
            deadline = cpu_began + SEARCH_UNTIL * time_limit_s
            _search(model, seed, SEARCH_SHARE * time_limit_s, deadline, phases, notes)
        chosen = model.chosen()
        board = Board(problem)
        placements, failed = [], []
        for i, grid in enumerate(grids):
            day_requests = [requests[rid] for rid, j in sorted(chosen.items()) if j == i]
            if not day_requests:
                continue
            got = _plan_day(problem, grid, board, day_requests, model.starts(i), i in exact)
            if got is None and i not in exact:
                got = _exact_day(problem, grid, board, day_requests, phases)
                if got is not None:
                    notes.append(f"{grid.cap.day}: colouring failed, chairs re-solved exactly")
            if got is None:
                failed.append(i)
            else:
                placements += got
        left_out = [rid for rid, j in chosen.items() if j in failed]
        if not failed:
            break
        notes.append(
            f"round {round_}: "
            + ", ".join(str(problem.days[i].day) for i in failed)
            + " cannot hold their infusions on real chairs: modelled chair by chair"
        )
        exact = exact | frozenset(failed)
    assert outcome is not None
    placements = _repair(problem, placements, left_out, notes)
    broken = violations(problem, placements)
    if broken:
        notes.append("optimiser schedule broke rules, greedy returned: " + "; ".join(broken[:5]))
        return _finish(problem, base, "GREEDY_FALLBACK", outcome.bound, phases, notes, began)
    mine = terms(problem, placements)
    if sum(t.cost for t in base_terms) < sum(t.cost for t in mine) - 1e-6:
        notes.append("the greedy schedule costs less on the objective: greedy returned")
        return _finish(problem, base, "GREEDY_FALLBACK", outcome.bound, phases, notes, began)
    unplaced = _unplaced(problem, placements)
    return ScheduleResult(
        placements=tuple(sorted(placements, key=lambda p: (p.day, p.start_minute, p.chair_id))),
        unplaced=tuple(unplaced),
        status=outcome.status,
        objective=sum(t.cost for t in mine),
        best_bound=outcome.bound,
        solve_seconds=time.perf_counter() - began,
        kpis=kpis(problem, placements),
        phases=tuple(phases),
        notes=tuple(notes),
        terms=mine,
    )


def _search(
    model: HorizonModel,
    seed: int,
    seconds: float,
    deadline: float,
    phases: list[SolvePhase],
    notes: list[str],
) -> None:
    """The window search: the horizon solved again SEARCH_DAYS open days at a time, the rest
    of the incumbent kept (HorizonModel.resolve_window), each up to the end of its root node
    (``seconds`` of CPU time split evenly over the windows are the safety net). A stopped
    solve of the whole horizon spends its time in the root's cut rounds and in strong
    branching; a window's model is small enough that the heuristics of its root improve it
    within seconds (docs/optimiser.md "Window search")."""
    n = len(model.problem.days)
    if n <= SEARCH_DAYS:
        return
    windows = [range(a, min(a + SEARCH_DAYS, n)) for a in range(0, n - 1, SEARCH_STEP)]
    each = seconds / len(windows)
    before = model.incumbent
    for k, window in enumerate(windows):
        if time.process_time() > deadline:
            notes.append(f"window search stopped after {k} of {len(windows)} windows: no time left")
            break
        outcome = model.resolve_window(window, MipLimits(each, SEARCH_NODES, GAP, seed))
        days = model.problem.days
        phases.append(_phase(f"window {days[window[0]].day}–{days[window[-1]].day}", outcome))
    if before is not None and model.incumbent is not None and model.incumbent < before:
        notes.append(
            f"window search ({SEARCH_DAYS} open days at a time): horizon objective "
            f"{before:,.0f} → {model.incumbent:,.0f}"
        )


def _phase(name: str, outcome: MipOutcome) -> SolvePhase:
    return SolvePhase(
        name, outcome.status, outcome.objective, outcome.bound, outcome.seconds, outcome.nodes
    )


def _finish(
    problem: ScheduleProblem,
    base: ScheduleResult,
    status: str,
    bound: float | None,
    phases: list[SolvePhase],
    notes: list[str],
    began: float,
) -> ScheduleResult:
    mine = terms(problem, base.placements)
    return ScheduleResult(
        placements=base.placements,
        unplaced=base.unplaced,
        status=status,
        objective=sum(t.cost for t in mine),
        best_bound=bound,
        solve_seconds=time.perf_counter() - began,
        kpis=base.kpis,
        phases=tuple(phases),
        notes=tuple(notes),
        terms=mine,
    )


# -- a day: starts per request, then chairs ------------------------------------------------------
def _plan_day(
    problem: ScheduleProblem,
    grid: DayGrid,
    board: Board,
    day_requests: list[InfusionRequest],
    arcs: list[tuple[int, int, int]],
    exact: bool,
) -> list[Placement] | None:
    """The horizon's starts matched to the day's requests (moved for usual start times when
    that is worth anything) and put on chairs; None when no chair assignment exists for them."""
    slots: dict[int, list[_Slot]] = defaultdict(list)
    for duration, t, group in arcs:
        slots[duration].append(_Slot(t, group))
    matched = _match(problem, day_requests, slots)
    if not exact and _wants_starts(problem, day_requests):
        matched = _day_starts(problem, grid, day_requests, matched) or matched
    by_request = {r: (matched[r.id].start, matched[r.id].group) for r in day_requests}
    got = chairs.colour(board, grid, by_request)
    if exact or (got is not None and not _wants_chairs(problem, day_requests)):
        return got
    for p in got or []:
        board.remove(next(r for r in day_requests if r.id == p.request_id), p)
    hint = {p.request_id: p.chair_id for p in got} if got else None
    starts = {r: matched[r.id].start for r in day_requests}
    better = chairs.assign(board, grid, starts, DAY_SECONDS, hint)
    if better is None and got is not None:  # pragma: no cover - the hint is a solution
        return chairs.colour(board, grid, by_request)
    return better


def _wants_chairs(problem: ScheduleProblem, day_requests: list[InfusionRequest]) -> bool:
    return problem.objective.usual_chair > 0 and any(r.usual_chair for r in day_requests)


def _wants_starts(problem: ScheduleProblem, day_requests: list[InfusionRequest]) -> bool:
    return problem.objective.usual_start_per_hour > 0 and any(
        r.usual_start_minute is not None for r in day_requests
    )


def _match(
    problem: ScheduleProblem,
    day_requests: list[InfusionRequest],
    slots: dict[int, list[_Slot]],
) -> dict[str, _Slot]:
    """Each request to one start of its duration, least usual-start cost in all (a linear
    assignment per duration; the costs of the starts themselves are the same either way)."""
    out: dict[str, _Slot] = {}
    by_duration: dict[int, list[InfusionRequest]] = defaultdict(list)
    for r in day_requests:
        by_duration[r.duration_minutes].append(r)
    for duration, reqs in sorted(by_duration.items()):
        free = sorted(slots.get(duration, []), key=lambda s: (s.start, s.group))
        if len(free) != len(reqs):  # pragma: no cover - the model links them one to one
            raise AssertionError(f"{len(reqs)} requests of {duration} min, {len(free)} starts")
        assignment = linear_sum_assignment.SimpleLinearSumAssignment()
        for a, r in enumerate(reqs):
            for b, s in enumerate(free):
                cost = 0 if r.usual_start_minute is None else abs(s.start - r.usual_start_minute)
                assignment.add_arc_with_cost(a, b, cost)
        if assignment.solve() != assignment.OPTIMAL:  # pragma: no cover
            raise AssertionError("assignment failed")
        for a, r in enumerate(reqs):
            out[r.id] = free[assignment.right_mate(a)]
    return out


def _day_starts(
    problem: ScheduleProblem,
    grid: DayGrid,
    day_requests: list[InfusionRequest],
    matched: dict[str, _Slot],
) -> dict[str, _Slot] | None:
    """The day's starts again with one family per request, so a start may move towards the
    patient's usual time; the day's rules, start peak and overtime as in the horizon model."""
    o = problem.objective
    mip = Mip()
    families = {r.id: Family(r.duration_minutes, 1) for r in day_requests}
    arcs = add_day(mip, grid, families, exact=False, peak_weight=o.start_peak)
    hint: dict[Var, float] = {}
    for r in day_requests:
        mip.row(1, 1, [(v, 1.0) for _, _, v in arcs.arcs[r.id]])
        for t, _, v in arcs.arcs[r.id]:
            cost = start_cost(o, r, t)
            cost += o.overtime_per_minute * expected_overtime(o, grid.cap, t, r.duration_minutes)
            mip.cost(v, cost)
            hint[v] = 1.0 if matched[r.id].start == t else 0.0
    mip.hint(hint)
    outcome = mip.solve(MipLimits(DAY_SECONDS, DAY_NODES, GAP))
    if not outcome.found:
        return None
    out = {}
    for r in day_requests:
        for t, _, v in arcs.arcs[r.id]:
            if Mip.value(v) > 0.5:
                out[r.id] = _Slot(t, -1)
    return out if len(out) == len(day_requests) else None


def _exact_day(
    problem: ScheduleProblem,
    grid: DayGrid,
    board: Board,
    day_requests: list[InfusionRequest],
    phases: list[SolvePhase],
) -> list[Placement] | None:
    """The day with one flow per group of identical free stretches (exact chairs), the same
    requests, starts free; coloured within the groups. None: the day cannot hold them."""
    o = problem.objective
    mip = Mip()
    counts: dict[int, int] = defaultdict(int)
    for r in day_requests:
        counts[r.duration_minutes] += 1
    families = {D: Family(D, n) for D, n in sorted(counts.items())}
    arcs = add_day(mip, grid, families, exact=True, peak_weight=o.start_peak)
    for D, n in sorted(counts.items()):
        mip.row(n, n, [(v, 1.0) for _, _, v in arcs.arcs[D]])
        for t, _, v in arcs.arcs[D]:
            mip.cost(v, o.overtime_per_minute * expected_overtime(o, grid.cap, t, D))
    limits = MipLimits(5 * DAY_SECONDS, DAY_NODES * 5, GAP)
    outcome = mip.solve(limits)
    phases.append(_phase(f"{grid.cap.day}: chairs exactly", outcome))
    if not outcome.found:
        return None
    slots: dict[int, list[_Slot]] = defaultdict(list)
    for D in counts:
        for t, group, v in arcs.arcs[D]:
            slots[D] += [_Slot(t, group)] * round(Mip.value(v))
    matched = _match(problem, day_requests, slots)
    return chairs.colour(
        board, grid, {r: (matched[r.id].start, matched[r.id].group) for r in day_requests}
    )


# -- what is left ---------------------------------------------------------------------------
def _repair(
    problem: ScheduleProblem, placements: list[Placement], left_out: Sequence[str], notes: list[str]
) -> list[Placement]:
    """Whatever is not placed — requests of days that stayed unplaceable after the last round
    (with a member's whole series), and any the solve left out when a limit stopped it — is
    offered to the board, clinical priority first, at the feasible spot closest to its due
    day. A placement is worth more than any day it could cost, so this never makes the
    schedule worse."""
    board = Board(problem)
    requests = {r.id: r for r in problem.requests}
    groups = series_groups(problem.requests)
    gone: set[str] = set()
    for rid in left_out:
        r = requests[rid]
        gone |= {m.id for m in groups[r.series_id]} if r.series_id else {rid}
    kept = [p for p in placements if p.request_id not in gone]
    for p in kept:
        board.place(requests[p.request_id], board.index[p.day], p.start_minute, p.chair_id)
    placed = {p.request_id for p in kept}
    units = [
        groups[r.series_id] if r.series_id else [r]
        for r in problem.requests
        if r.id not in placed and (not r.series_id or groups[r.series_id][0] is r)
    ]
    units.sort(key=lambda u: (-priority_extra(problem, u[0]), u[0].due_day, u[0].id))
    added = 0
    for unit in units:
        got = board.closest(unit)
        if got:
            kept += got
            added += len(got)
    if added:
        notes.append(f"{added} placed by the board after the solve, where it found room")
    return kept


def _unplaced(problem: ScheduleProblem, placements: list[Placement]) -> list[tuple[str, str]]:
    """Each request left out, with the board's reason given everything that was placed."""
    board = Board(problem)
    requests = {r.id: r for r in problem.requests}
    for p in placements:
        board.place(requests[p.request_id], board.index[p.day], p.start_minute, p.chair_id)
    placed = {p.request_id for p in placements}
    groups = series_groups(problem.requests)
    out = []
    for r in problem.requests:
        if r.id in placed:
            continue
        if r.series_id:
            out.append((r.id, board.why_not_series(groups[r.series_id])))
        else:
            out.append((r.id, board.why_not(r)))
    return out
