"""One open day on the time grid, as rows of a MIP: chairs as a flow, nurses as a running
count, starts per clock quarter (docs/optimiser.md "Formulation").

An *arc* is "an infusion of this duration starts at minute t"; arcs of one *family* (all
requests of one duration, or one request) share an integer variable per start. Its chair is
taken over ``[t, t + duration + turnover)``.

Chairs. A chair's *free stretch* is a maximal run of minutes it is not blocked and holds no
fixed booking (turnover included). Each stretch supplies one unit of flow at its first grid
start and takes it back at its end; a unit waits on idle arcs between time nodes or rides an
infusion arc from t to t + duration + turnover. Flow conservation then says that at every
minute the infusions running need no more chairs than are free, which is the chair rule
*counted*; an assignment of infusions to particular chairs exists when the flow decomposes
into paths that each stay inside one stretch. Stretches with the same start and end are
interchangeable, so grouping them keeps that exact; mixing different ones (the ``exact=False``
mode, one flow for the day) is a relaxation: a path may enter on one chair's stretch and leave
on another's. The optimiser colours the chairs afterwards and re-solves a day in the exact mode
(one flow per group of identical stretches) where colouring fails.

Nurses. ``R_e`` is the number of infusions running from event e (a start, an end, or a minute
where the nurses on duty or the fixed bookings change) to the next; R_e = R_prev + starts at e
− ends at e and R_e ≤ nurses on duty × ratio − fixed bookings running, which is the nurse rule
minute by minute. Starts: per clock quarter, starts ≤ the quarter's start room after the fixed
bookings' starts. A day without nurse shifts models neither, as everywhere else.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from services.scheduler.domain.capacity import START_LIMIT_SLOT_MINUTES, ScheduleProblem
from services.scheduler.domain.greedy import DAY_MINUTES, first_start, nurse_curve, quarter_caps
from services.scheduler.domain.mip import Mip, Var

Q = START_LIMIT_SLOT_MINUTES
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Stretch:
    """Identical free stretches of ``chairs``: infusions may start at ``start`` or later
    and must leave the chair, turnover included, by ``end``."""

    start: int
    end: int
    chairs: tuple[str, ...]

    def fits(self, t: int, occupied: int) -> bool:
        return self.start <= t and t + occupied <= self.end


@dataclass(frozen=True)
class Family:
    duration: int
    most: int  # how many of this family the day may take


@dataclass
class DayArcs(Generic[K]):
    """The variables ``add_day`` made: per family, (start, stretch group or -1, variable)."""

    arcs: dict[K, list[tuple[int, int, Var]]] = field(default_factory=dict)
    peak: Var | None = None


class DayGrid:
    """What one open day offers once its fixed bookings and blocks are in place."""

    def __init__(self, problem: ScheduleProblem, i: int) -> None:
        cap = problem.days[i]
        rules = problem.rules
        self.cap = cap
        self.index = i
        self.turn = rules.turnover_minutes
        self.g = rules.granularity_minutes
        self.first = first_start(cap, self.g)
        self.horizon = cap.close_minute + self.turn
        fixed = [f for f in problem.fixed if f.day == cap.day]
        self.fixed_minutes = sum(f.end_minute - f.start_minute for f in fixed)
        self.fixed_starts = np.zeros(DAY_MINUTES // Q + 1, dtype=np.int64)
        for f in fixed:
            self.fixed_starts[f.start_minute // Q] += 1
        free = {c: np.ones(DAY_MINUTES + self.turn + 1, dtype=bool) for c in cap.chairs}
        for chair, s, e in cap.chair_blocks:
            if chair in free:
                free[chair][max(0, s) : max(0, e)] = False
        for f in fixed:
            if f.chair_id in free:
                free[f.chair_id][f.start_minute : f.end_minute + self.turn] = False
        groups: dict[tuple[int, int], list[str]] = defaultdict(list)
        for chair in cap.chairs:
            for a, b in _runs(free[chair], self.horizon):
                start = max(self.first, -(-a // self.g) * self.g)
                if start < b:
                    groups[(start, b)].append(chair)
        self.stretches = [Stretch(a, b, tuple(chairs)) for (a, b), chairs in sorted(groups.items())]
        self.room: np.ndarray | None = None
        self.start_room: np.ndarray | None = None
        if cap.nurse_shifts:
            nurses = nurse_curve(cap)
            room = nurses * rules.nurse_ratio
            caps = quarter_caps(cap, nurses, rules.start_limit)
            for f in fixed:
                room[f.start_minute : f.end_minute] -= 1
                caps[f.start_minute // Q] -= 1
            self.room = np.maximum(room, 0)
            self.start_room = np.maximum(caps, 0)

    def starts(self, duration: int) -> list[int]:
        """Grid starts where an infusion of ``duration`` ends by closing and fits a stretch
        (and, with nurses modelled, finds a nurse and a start at all)."""
        occupied = duration + self.turn
        out = []
        for t in range(self.first, self.cap.close_minute - duration + 1, self.g):
            if not any(s.fits(t, occupied) for s in self.stretches):
                continue
            if (
                self.room is not None
                and self.start_room is not None
                and (int(self.room[t : t + duration].min()) < 1 or int(self.start_room[t // Q]) < 1)
            ):
                continue
            out.append(t)
        return out

    def usable(self, duration: int) -> bool:
        return bool(self.starts(duration))


def _runs(free: np.ndarray, horizon: int) -> list[tuple[int, int]]:
    """Maximal free runs [a, b) of ``free`` within [0, horizon)."""
    out = []
    t = 0
    while t < horizon:
        if free[t]:
            u = t
            while u < horizon and free[u]:
                u += 1
            out.append((t, u))
            t = u
        else:
            t += 1
    return out


def add_day(
    mip: Mip,
    grid: DayGrid,
    families: Mapping[K, Family],
    exact: bool,
    peak_weight: float = 0.0,
) -> DayArcs[K]:
    """Arcs for every family on the day and the rows that keep the day's rules; a peak
    variable (≥ the starts in every quarter, fixed bookings included) when it has a weight."""
    out: DayArcs[K] = DayArcs()
    starts_of = {key: grid.starts(f.duration) for key, f in families.items()}
    # chairs: one flow per group of stretches (exact) or one for the day
    networks = [[k] for k in range(len(grid.stretches))] if exact else [[-1]]
    for key in families:
        out.arcs[key] = []
    for net in networks:
        stretches = grid.stretches if net == [-1] else [grid.stretches[net[0]]]
        group = net[0]
        supply: dict[int, int] = defaultdict(int)
        for s in stretches:
            supply[s.start] += len(s.chairs)
            supply[s.end] -= len(s.chairs)
        arcs: list[tuple[int, int, Var]] = []  # (start, occupied, var)
        for key, f in families.items():
            occupied = f.duration + grid.turn
            room = sum(len(s.chairs) for s in stretches)
            for t in starts_of[key]:
                if not any(s.fits(t, occupied) for s in stretches):
                    continue
                v = mip.var(0, min(f.most, room))
                out.arcs[key].append((t, group, v))
                arcs.append((t, occupied, v))
        if not arcs:
            continue
        nodes = sorted(set(supply) | {t for t, _, _ in arcs} | {t + o for t, o, _ in arcs})
        rows: dict[int, list[tuple[Var, float]]] = {p: [] for p in nodes}
        for t, o, v in arcs:
            rows[t].append((v, -1.0))
            rows[t + o].append((v, 1.0))
        for a, b in zip(nodes, nodes[1:], strict=False):
            idle = mip.var(0, mip.solver.infinity(), integer=False)
            rows[a].append((idle, -1.0))
            rows[b].append((idle, 1.0))
        for p in nodes:  # in − out = −supply
            mip.row(-supply[p], -supply[p], rows[p])
    every = [(t, f.duration, v) for key, f in families.items() for t, _, v in out.arcs[key]]
    if grid.room is not None and grid.start_room is not None:
        _nurses(mip, grid, every)
        by_quarter: dict[int, list[Var]] = defaultdict(list)
        for t, _, v in every:
            by_quarter[t // Q].append(v)
        for q, vs in sorted(by_quarter.items()):
            mip.row(-mip.solver.infinity(), int(grid.start_room[q]), [(v, 1.0) for v in vs])
    if peak_weight > 0 and not every:  # the fixed bookings' peak alone: a constant
        mip.add_offset(peak_weight * int(grid.fixed_starts.max()))
    if peak_weight > 0 and every:
        by_q: dict[int, list[Var]] = defaultdict(list)
        for t, _, v in every:
            by_q[t // Q].append(v)
        fixed_peak = int(grid.fixed_starts.max())
        peak = mip.var(fixed_peak, len(every) + fixed_peak)
        for q, vs in sorted(by_q.items()):
            # peak − Σ starts in q ≥ fixed starts in q
            terms = [(peak, 1.0)] + [(v, -1.0) for v in vs]
            mip.row(int(grid.fixed_starts[q]), mip.solver.infinity(), terms)
        mip.cost(peak, peak_weight)
        out.peak = peak
    return out


def _nurses(mip: Mip, grid: DayGrid, arcs: list[tuple[int, int, Var]]) -> None:
    assert grid.room is not None
    room = grid.room
    lo, hi = grid.cap.open_minute, grid.cap.close_minute
    changes = {m for m in range(lo + 1, hi) if room[m] != room[m - 1]} | {lo}
    begins: dict[int, list[Var]] = defaultdict(list)
    ends: dict[int, list[Var]] = defaultdict(list)
    for t, duration, v in arcs:
        begins[t].append(v)
        ends[t + duration].append(v)
    events = sorted({e for e in set(begins) | set(ends) | changes if lo <= e < hi})
    previous: Var | None = None
    for e in events:
        running = mip.var(0, int(room[e]), integer=False)
        terms: list[tuple[Var, float]] = [(running, 1.0)]
        if previous is not None:
            terms.append((previous, -1.0))
        terms += [(v, -1.0) for v in begins.get(e, [])]
        terms += [(v, 1.0) for v in ends.get(e, [])]
        mip.row(0, 0, terms)
        previous = running
