"""Greedy earliest-fit baseline and the resource board it books on.

``Board`` keeps, per open day, which minutes each chair is taken (turnover included), the nurse
room left per minute, the start room left per clock quarter and which patients already have an
infusion that day, and (when the problem has a stock budget) the grams of each product left
on each day with an entry, a placement taking its grams off its day and every later one (the
stock runs down); fixed bookings and blocks are on it from the start. ``greedy`` sorts the
requests by (earliest day, due day, longer first) and gives each the earliest (day, start) of
its window where every hard rule holds, on the first free chair; an induction series is placed
whole at the earliest first day where all its members fit on consecutive open days. The
optimiser uses the same board to colour chairs, to explain why a request could not be placed
and to place what its rounds left over.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from services.scheduler.domain.capacity import (
    START_LIMIT_SLOT_MINUTES,
    DayCapacity,
    InfusionRequest,
    Placement,
    ScheduleProblem,
    ScheduleResult,
)
from services.scheduler.domain.schedule_kpis import kpis
from services.scheduler.domain.stock_rule import StockDay, first_short, usage

DAY_MINUTES = 24 * 60
UNLIMITED = 10**6


def nurse_curve(day: DayCapacity) -> np.ndarray:
    """Nurses on duty per minute of the day (shifts add up where they overlap)."""
    nurses = np.zeros(DAY_MINUTES, dtype=np.int64)
    for start, end, n in day.nurse_shifts:
        nurses[max(0, start) : min(DAY_MINUTES, end)] += n
    return nurses


def quarter_caps(day: DayCapacity, nurses: np.ndarray, start_limit: int) -> np.ndarray:
    """Starts allowed per clock quarter: the fewest nurses on duty in it (within opening hours)."""
    caps = np.full(DAY_MINUTES // START_LIMIT_SLOT_MINUTES, UNLIMITED, dtype=np.int64)
    if not day.nurse_shifts:
        return caps
    for q in range(len(caps)):
        first = q * START_LIMIT_SLOT_MINUTES
        lo, hi = (
            max(first, day.open_minute),
            min(first + START_LIMIT_SLOT_MINUTES, day.close_minute),
        )
        if lo < hi:
            caps[q] = int(nurses[lo:hi].min()) * start_limit
        else:
            caps[q] = int(nurses[first]) * start_limit
    return caps


def series_groups(requests: Iterable[InfusionRequest]) -> dict[str, list[InfusionRequest]]:
    groups: dict[str, list[InfusionRequest]] = defaultdict(list)
    for r in requests:
        if r.series_id:
            groups[r.series_id].append(r)
    for members in groups.values():
        members.sort(key=lambda r: r.series_index)
    return dict(groups)


def first_start(day: DayCapacity, granularity: int) -> int:
    return -(-day.open_minute // granularity) * granularity


def stock_days(problem: ScheduleProblem) -> dict[str, list[StockDay]] | None:
    """Per product, its entry days in date order; None when stock is not a rule."""
    if problem.stock is None:
        return None
    merged: dict[tuple[str, dt.date], tuple[Decimal, Decimal]] = {}
    for s in problem.stock:
        grams, expiring = merged.get((s.product_id, s.day), (Decimal(0), Decimal(0)))
        merged[(s.product_id, s.day)] = (grams + s.grams, expiring + s.expiring)
    out: dict[str, list[StockDay]] = defaultdict(list)
    for (product, day), (grams, expiring) in sorted(merged.items()):
        out[product].append(StockDay(day, grams, expiring))
    return dict(out)


def grams_text(grams: Decimal) -> str:
    return f"{grams.normalize():f}"


@dataclass
class _Day:
    cap: DayCapacity
    free: np.ndarray  # chairs × minutes, True where the chair is free (length DAY + turnover)
    chair_free: dict[str, np.ndarray]  # the rows of ``free``, by chair id
    nurse_room: np.ndarray  # per minute
    start_room: np.ndarray  # per clock quarter
    patients: set[str]


class Board:
    def __init__(self, problem: ScheduleProblem) -> None:
        self.problem = problem
        self.rules = problem.rules
        self.index = {d.day: i for i, d in enumerate(problem.days)}
        self.days: list[_Day] = []
        self.stock = stock_days(problem)  # per product, its days' grams and expiry
        # grams the placements on the board take, per product and day
        self.drawn: dict[str, dict[dt.date, Decimal]] = defaultdict(dict)
        turn = self.rules.turnover_minutes
        for cap in problem.days:
            grid = np.ones((len(cap.chairs), DAY_MINUTES + turn + 1), dtype=bool)
            free = {c: grid[k] for k, c in enumerate(cap.chairs)}  # views: one array
            for chair, s, e in cap.chair_blocks:
                if chair in free:
                    free[chair][max(0, s) : max(0, e)] = False
            if cap.nurse_shifts:
                nurses = nurse_curve(cap)
                room = nurses * self.rules.nurse_ratio
                starts = quarter_caps(cap, nurses, self.rules.start_limit)
            else:
                room = np.full(DAY_MINUTES, UNLIMITED, dtype=np.int64)
                starts = np.full(DAY_MINUTES // START_LIMIT_SLOT_MINUTES, UNLIMITED, np.int64)
            self.days.append(_Day(cap, grid, free, room, starts, set()))
        for f in problem.fixed:
            i = self.index.get(f.day)
            if i is None:
                continue
            d = self.days[i]
            if f.chair_id in d.chair_free:
                d.chair_free[f.chair_id][f.start_minute : f.end_minute + turn] = False
            d.nurse_room[f.start_minute : f.end_minute] -= 1
            d.start_room[f.start_minute // START_LIMIT_SLOT_MINUTES] -= 1
            d.patients.add(f.patient_id)

    # -- checks -------------------------------------------------------------------------------
    def chairs_free(self, i: int, start: int, end: int) -> list[str]:
        d = self.days[i]
        stop = end + self.rules.turnover_minutes
        return [d.cap.chairs[k] for k in np.flatnonzero(d.free[:, start:stop].all(axis=1))]

    def stock_ok(self, req: InfusionRequest, i: int) -> bool:
        """The stock rule still holds with the request's dose placed on day ``i``."""
        if self.stock is None or req.grams <= 0:
            return True
        days = self.stock.get(req.product_id, [])
        drawn = self.drawn[req.product_id]
        return first_short(days, drawn, self.days[i].cap.day, req.grams) is None

    def resources_ok(self, req: InfusionRequest, i: int, start: int) -> bool:
        """Everything but the chair: hours, grid, nurses, starts, patient, stock."""
        d = self.days[i]
        end = start + req.duration_minutes
        return (
            self.stock_ok(req, i)
            and start >= d.cap.open_minute
            and end <= d.cap.close_minute
            and start % self.rules.granularity_minutes == 0
            and req.patient_id not in d.patients
            and int(d.start_room[start // START_LIMIT_SLOT_MINUTES]) >= 1
            and int(d.nurse_room[start:end].min()) >= 1
        )

    def fit_chair(self, req: InfusionRequest, i: int, start: int) -> str | None:
        if not self.resources_ok(req, i, start):
            return None
        chairs = self.chairs_free(i, start, start + req.duration_minutes)
        return chairs[0] if chairs else None

    def starts(self, req: InfusionRequest, i: int) -> range:
        d = self.days[i].cap
        g = self.rules.granularity_minutes
        return range(first_start(d, g), d.close_minute - req.duration_minutes + 1, g)

    def earliest(self, req: InfusionRequest, i: int) -> tuple[int, str] | None:
        if not self.stock_ok(req, i):
            return None
        for start in self.starts(req, i):
            chair = self.fit_chair(req, i, start)
            if chair is not None:
                return start, chair
        return None

    def window_days(self, req: InfusionRequest) -> list[int]:
        return [
            i
            for i, d in enumerate(self.problem.days)
            if req.earliest_day <= d.day <= req.latest_day
        ]

    def tightest(self, i: int, free: Sequence[str], start: int, req: InfusionRequest) -> str:
        """Of the ``free`` chairs, the one whose next taken minute after the infusion comes
        soonest, then the one freed most recently before it (keeps long gaps whole)."""
        day = self.days[i]
        end = start + req.duration_minutes + self.rules.turnover_minutes

        def fit(c: str) -> tuple[int, int, int]:
            arr = day.chair_free[c]
            after = np.flatnonzero(~arr[end:])
            before = np.flatnonzero(~arr[:start])
            return (
                int(after[0]) if len(after) else DAY_MINUTES,
                -(int(before[-1]) if len(before) else -1),
                day.cap.chairs.index(c),
            )

        return min(free, key=fit)

    def closest(self, unit: Sequence[InfusionRequest]) -> list[Placement] | None:
        """Place a request (or a whole series) at the feasible spot closest to its due day."""
        head = unit[0]
        if len(unit) == 1 and not head.series_id:
            days = sorted(
                self.window_days(head),
                key=lambda i: (abs((self.problem.days[i].day - head.due_day).days), i),
            )
            for i in days:
                spot = self.earliest(head, i)
                if spot is not None:
                    return [self.place(head, i, *spot)]
            return None
        firsts = sorted(
            self.series_first_days(unit),
            key=lambda f: (abs((self.problem.days[f].day - head.due_day).days), f),
        )
        return self.try_series(unit, firsts)

    # -- changes ------------------------------------------------------------------------------
    def place(self, req: InfusionRequest, i: int, start: int, chair: str) -> Placement:
        d = self.days[i]
        end = start + req.duration_minutes
        d.chair_free[chair][start : end + self.rules.turnover_minutes] = False
        d.nurse_room[start:end] -= 1
        d.start_room[start // START_LIMIT_SLOT_MINUTES] -= 1
        d.patients.add(req.patient_id)
        self._take_stock(req, d.cap.day, req.grams)
        return Placement(req.id, d.cap.day, chair, start, end)

    def _take_stock(self, req: InfusionRequest, day: dt.date, grams: Decimal) -> None:
        if self.stock is not None and req.grams > 0:
            drawn = self.drawn[req.product_id]
            drawn[day] = drawn.get(day, Decimal(0)) + grams

    def remove(self, req: InfusionRequest, p: Placement) -> None:
        d = self.days[self.index[p.day]]
        d.chair_free[p.chair_id][p.start_minute : p.end_minute + self.rules.turnover_minutes] = True
        d.nurse_room[p.start_minute : p.end_minute] += 1
        d.start_room[p.start_minute // START_LIMIT_SLOT_MINUTES] += 1
        d.patients.discard(req.patient_id)
        self._take_stock(req, p.day, -req.grams)

    # -- explanations -------------------------------------------------------------------------
    def why_not(self, req: InfusionRequest) -> str:
        """Why ``req`` fits on no day of its window, given what the board holds."""
        days = self.window_days(req)
        if not days:
            return f"no open day in its window {req.earliest_day}..{req.latest_day}"
        parts = [f"{self.problem.days[i].day}: {self._why_not_day(req, i)}" for i in days]
        return "no room in its window: " + "; ".join(parts)

    def _why_not_day(self, req: InfusionRequest, i: int) -> str:
        d = self.days[i]
        if req.patient_id in d.patients:
            return "the patient already has an infusion that day"
        if not self.stock_ok(req, i):
            return self.why_no_stock(req, i)
        starts = list(self.starts(req, i))
        if not starts:
            hours = d.cap.close_minute - d.cap.open_minute
            return f"{req.duration_minutes} chair minutes do not fit {hours} opening minutes"
        chair_ok = nurse_ok = start_ok = 0
        for s in starts:
            e = s + req.duration_minutes
            c = bool(self.chairs_free(i, s, e))
            n = int(d.nurse_room[s:e].min()) >= 1
            q = int(d.start_room[s // START_LIMIT_SLOT_MINUTES]) >= 1
            chair_ok += c
            nurse_ok += c and n
            start_ok += c and n and q
        if not chair_ok:
            return f"no chair free for {req.duration_minutes} min"
        if not nurse_ok:
            return "chairs free only when the nurse ratio is full"
        return "chairs and nurses free only in quarters where the start limit is reached"

    def why_no_stock(self, req: InfusionRequest, i: int) -> str:
        """E.g. "Gammagard Liquid: 20 g in date and unreserved left (50 g of 70 g go to other
        proposals); the dose is 35 g", naming the later day whose stock is the limit when it
        is not this one."""
        name = req.product_name or req.product_id
        day = self.days[i].cap.day
        days = (self.stock or {}).get(req.product_id, [])
        drawn = self.drawn[req.product_id]
        k = first_short(days, drawn, day, req.grams)
        if k is None or k < 0:  # no figure for the day: nothing known to be there
            return f"{name}: 0 g in date and unreserved left; the dose is {grams_text(req.grams)} g"
        given = days[k].grams
        taken = usage(days, drawn)[k]
        left = given - taken
        others = f" ({grams_text(taken)} g of {grams_text(given)} g go to other proposals)"
        by = "" if days[k].day == day else f" by {days[k].day}"
        return (
            f"{name}: {grams_text(max(left, Decimal(0)))} g in date and unreserved left{by}"
            f"{others if taken > 0 else ''}; the dose is {grams_text(req.grams)} g"
        )

    def why_not_series(self, members: Sequence[InfusionRequest]) -> str:
        return (
            f"induction series of {len(members)} needs {len(members)} consecutive open days "
            f"inside the members' windows with room on each; none has: "
            + " | ".join(f"{m.id}: {self.why_not(m)}" for m in members)
        )

    def try_series(
        self, members: Sequence[InfusionRequest], first_days: Iterable[int]
    ) -> list[Placement] | None:
        """Place the series at the first of ``first_days`` where every member fits."""
        n_days = len(self.problem.days)
        for first in first_days:
            if first + len(members) > n_days:
                continue
            done: list[tuple[InfusionRequest, Placement]] = []
            for k, m in enumerate(members):
                i = first + k
                d = self.problem.days[i].day
                spot = self.earliest(m, i) if m.earliest_day <= d <= m.latest_day else None
                if spot is None:
                    break
                done.append((m, self.place(m, i, spot[0], spot[1])))
            if len(done) == len(members):
                return [p for _, p in done]
            for m, p in done:
                self.remove(m, p)
        return None

    def series_first_days(self, members: Sequence[InfusionRequest]) -> list[int]:
        days = self.problem.days
        out = []
        for first in range(len(days)):
            if first + len(members) > len(days):
                break
            if all(
                m.earliest_day <= days[first + k].day <= m.latest_day for k, m in enumerate(members)
            ):
                out.append(first)
        return out


def greedy(problem: ScheduleProblem) -> ScheduleResult:
    began = time.perf_counter()
    board = Board(problem)
    groups = series_groups(problem.requests)
    units: list[tuple[tuple[dt.date, dt.date, int, str], list[InfusionRequest]]] = []
    for r in problem.requests:
        if r.series_id and groups[r.series_id][0] is not r:
            continue
        members = groups[r.series_id] if r.series_id else [r]
        head = members[0]
        total = sum(m.duration_minutes for m in members)
        units.append(((head.earliest_day, head.due_day, -total, head.id), members))
    units.sort(key=lambda u: u[0])
    placements: list[Placement] = []
    unplaced: list[tuple[str, str]] = []
    for _, members in units:
        if len(members) == 1 and not members[0].series_id:
            r = members[0]
            for i in board.window_days(r):
                spot = board.earliest(r, i)
                if spot is not None:
                    placements.append(board.place(r, i, *spot))
                    break
            else:
                unplaced.append((r.id, board.why_not(r)))
            continue
        got = board.try_series(members, board.series_first_days(members))
        if got is None:
            reason = board.why_not_series(members)
            unplaced += [(m.id, reason) for m in members]
        else:
            placements += got
    order = {r.id: k for k, r in enumerate(problem.requests)}
    placements.sort(key=lambda p: (p.day, p.start_minute, p.chair_id))
    unplaced.sort(key=lambda u: order[u[0]])
    return ScheduleResult(
        placements=tuple(placements),
        unplaced=tuple(unplaced),
        status="GREEDY",
        objective=None,
        best_bound=None,
        solve_seconds=time.perf_counter() - began,
        kpis=kpis(problem, placements),
    )
