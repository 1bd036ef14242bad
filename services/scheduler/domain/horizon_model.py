"""Stage 1 of the optimiser: the horizon as one exact MIP (docs/optimiser.md "Formulation").

``y[r, i]`` = request r on open day i (one literal per series start day, shared by its
members, so a series is all or nothing on consecutive open days by construction). Per day, the
requests' durations are the *families* of ``day_grid.add_day``: ``z[i, D, t]`` = how many
infusions of D minutes start at t, and Σ_t z[i, D, t] = Σ_{r of D} y[r, i] links the two. The
rows are every hard rule: at most one day per request and one infusion per patient and day,
chairs (a flow; exact on the days in ``exact_days``), nurses, starts, and with a stock budget
the stock running down within a product. The objective is domain/objective.py's, less the
usual start time and chair (stage 2 and the chair colouring handle those): it is a lower bound
of the whole objective, so its proven bound is a valid bound of the final schedule.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

from services.scheduler.domain.capacity import InfusionRequest, Placement, ScheduleProblem
from services.scheduler.domain.day_grid import DayArcs, DayGrid, Family, add_day
from services.scheduler.domain.greedy import series_groups, stock_days
from services.scheduler.domain.mip import Mip, MipLimits, MipOutcome, Var
from services.scheduler.domain.objective import (
    day_cost,
    expected_overtime,
    load_targets,
    priority_extra,
    strict_placement,
)
from services.scheduler.domain.stock_rule import StockDay, first_short

MG_PER_GRAM = 1000  # stock rows in whole milligrams: doses rounded up, budgets down


def mg(grams: Decimal, up: bool) -> int:
    scaled = grams * MG_PER_GRAM
    return int(math.ceil(scaled) if up else math.floor(scaled))


def stock_allows(
    entries: dict[str, list[StockDay]] | None, r: InfusionRequest, day: dt.date
) -> bool:
    """The dose alone keeps the stock rule on ``day``."""
    if entries is None or r.grams <= 0:
        return True
    return first_short(entries.get(r.product_id, []), {}, day, r.grams) is None


class HorizonModel:
    def __init__(
        self, problem: ScheduleProblem, grids: Sequence[DayGrid], exact_days: frozenset[int]
    ) -> None:
        self.problem = problem
        self._by_id = {r.id: r for r in problem.requests}
        self.mip = mip = Mip()
        o = problem.objective
        index = {d.day: i for i, d in enumerate(problem.days)}
        busy = {(f.patient_id, index[f.day]) for f in problem.fixed if f.day in index}
        entries = stock_days(problem)
        allowed: dict[str, list[int]] = {}
        for r in problem.requests:
            allowed[r.id] = [
                i
                for i, d in enumerate(problem.days)
                if r.earliest_day <= d.day <= r.latest_day
                and (r.patient_id, i) not in busy
                and grids[i].usable(r.duration_minutes)
                and stock_allows(entries, r, d.day)
            ]
        self.y: dict[tuple[str, int], Var] = {}
        for members in series_groups(problem.requests).values():
            firsts = [
                f
                for f in range(len(problem.days))
                if all(f + k in allowed[m.id] for k, m in enumerate(members))
            ]
            for f in firsts:
                v = mip.var(0, 1)
                for k, m in enumerate(members):
                    self.y[(m.id, f + k)] = v
            for k, m in enumerate(members):
                allowed[m.id] = [f + k for f in firsts]
            if len(firsts) > 1:
                mip.row(0, 1, [(self.y[(members[0].id, f)], 1.0) for f in firsts])
        for r in problem.requests:
            for i in allowed[r.id]:
                if (r.id, i) not in self.y:
                    self.y[(r.id, i)] = mip.var(0, 1)
        self.allowed = allowed

        # objective: what an unplaced request costs, less what placing it saves
        worst = (
            max((day_cost(o, r, problem.days[i].day) for i in allowed[r.id]), default=0)
            for r in problem.requests
        )
        self.weight = o.placement or strict_placement(problem, worst)
        for r in problem.requests:
            value = self.weight + priority_extra(problem, r)
            mip.add_offset(value)
            for i in allowed[r.id]:
                mip.cost(self.y[(r.id, i)], day_cost(o, r, problem.days[i].day) - value)

        for r in problem.requests:
            if not r.series_id and len(allowed[r.id]) > 1:
                mip.row(0, 1, [(self.y[(r.id, i)], 1.0) for i in allowed[r.id]])
        per_patient_day: dict[tuple[str, int], set[Var]] = defaultdict(set)
        for (rid, i), v in self.y.items():
            per_patient_day[(self._request(rid).patient_id, i)].add(v)
        for vs in per_patient_day.values():
            if len(vs) > 1:
                mip.row(0, 1, [(v, 1.0) for v in sorted(vs, key=lambda v: v.index())])
        if entries is not None:
            self._stock(entries)

        # per day: the families, their arcs and the link to y
        self.days: list[DayArcs[int]] = []
        self.durations: list[list[int]] = []
        by_day_duration: dict[tuple[int, int], list[Var]] = defaultdict(list)
        for (rid, i), v in sorted(self.y.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            by_day_duration[(i, self._request(rid).duration_minutes)].append(v)
        targets = load_targets(problem)
        for i, grid in enumerate(grids):
            durations = sorted(D for (j, D) in by_day_duration if j == i)
            families = {D: Family(D, len(by_day_duration[(i, D)])) for D in durations}
            arcs = add_day(mip, grid, families, i in exact_days, o.start_peak)
            self.days.append(arcs)
            self.durations.append(durations)
            for D in durations:
                terms = [(v, 1.0) for _, _, v in arcs.arcs[D]]
                terms += [(v, -1.0) for v in by_day_duration[(i, D)]]
                mip.row(0, 0, terms)
                if o.overtime_per_minute:
                    for t, _, v in arcs.arcs[D]:
                        mip.cost(v, o.overtime_per_minute * expected_overtime(o, grid.cap, t, D))
            if o.load_per_chair_hour and (durations or grid.fixed_minutes):
                # |fixed + Σ D·y − target| as a variable above both signs of the difference
                off = mip.var(0, mip.solver.infinity(), integer=False)
                placed = [(v, float(D)) for D in durations for v in by_day_duration[(i, D)]]
                base = grid.fixed_minutes - targets[i]
                mip.row(base, mip.solver.infinity(), [(off, 1.0)] + [(v, -c) for v, c in placed])
                mip.row(-base, mip.solver.infinity(), [(off, 1.0)] + placed)
                mip.cost(off, o.load_per_chair_hour / 60)

        self.values: list[float] = []  # the incumbent, per variable index (``keep``)
        self.incumbent: float | None = None

    def _request(self, rid: str) -> InfusionRequest:
        return self._by_id[rid]

    def _stock(self, entries: dict[str, list[StockDay]]) -> None:
        """stock_rule.py's rows in whole milligrams: per product and entry day a variable
        ``carried`` ≥ the previous day's carried + placed − expiring (and ≥ 0), and placed +
        carried ≤ the day's grams. Minimising nothing on ``carried``, the solver may keep it
        at its least value, which is the rule's max(0, …)."""
        mip = self.mip
        index = {d.day: i for i, d in enumerate(self.problem.days)}
        for product, days in sorted(entries.items()):
            draws: dict[int, list[tuple[Var, float]]] = defaultdict(list)
            for (rid, i), v in self.y.items():
                r = self._request(rid)
                if r.product_id == product and r.grams > 0:
                    draws[i].append((v, float(mg(r.grams, up=True))))
            if not draws:
                continue
            previous: tuple[Var, list[tuple[Var, float]]] | None = None
            for k, d in enumerate(days):
                placed = draws.get(index[d.day], []) if d.day in index else []
                carried = mip.var(0, mip.solver.infinity(), integer=False)
                if k and previous is not None:
                    before, placed_before = previous
                    terms = [(carried, 1.0), (before, -1.0)] + [(v, -c) for v, c in placed_before]
                    mip.row(-mg(d.expiring, up=False), mip.solver.infinity(), terms)
                mip.row(-mip.solver.infinity(), mg(d.grams, up=False), [(carried, 1.0), *placed])
                previous = (carried, placed)

    def hint(self, placements: Sequence[Placement], grids: Sequence[DayGrid]) -> None:
        """Start from a known schedule (the greedy one): its days and its starts."""
        index = {d.day: i for i, d in enumerate(self.problem.days)}
        at = {p.request_id: p for p in placements}
        values: dict[Var, float] = {}
        for (rid, i), v in self.y.items():
            p = at.get(rid)
            on = p is not None and index[p.day] == i
            if on or v not in values:
                values[v] = 1.0 if on else 0.0
        counts: dict[tuple[int, int, int, int], int] = defaultdict(int)
        for p in placements:
            i = index[p.day]
            duration = p.end_minute - p.start_minute
            counts[(i, duration, p.start_minute, -1)] += 1  # the day's one flow
            for k, s in enumerate(grids[i].stretches):  # or its stretch's
                if p.chair_id in s.chairs and s.fits(p.start_minute, duration + grids[i].turn):
                    counts[(i, duration, p.start_minute, k)] += 1
        for i, durations in enumerate(self.durations):
            for D in durations:
                for t, group, v in self.days[i].arcs[D]:
                    values[v] = float(counts.get((i, D, t, group), 0))
        self.mip.hint(values)

    def solve(self, limits: MipLimits) -> MipOutcome:
        outcome = self.mip.solve(limits)
        if outcome.found:
            self.values, self.incumbent = self.mip.values(), outcome.objective
        return outcome

    def resolve_window(self, window: range, limits: MipLimits) -> MipOutcome:
        """Large-neighbourhood search: the incumbent kept outside the open days ``window``
        and the window solved again. Free are the requests placed in the window or not at
        all (a series only when all of its days are in it) and the starts of the window's
        days; every other day and start stays as it is. The incumbent is the hint, so the
        result is never worse; it becomes the incumbent when it is better. The model's rows
        are unchanged, so whatever it finds keeps every rule."""
        assert self.incumbent is not None, "solve first"
        chosen = self.chosen()
        pairs: dict[int, list[tuple[str, int]]] = defaultdict(list)
        by_index: dict[int, Var] = {}
        for (rid, i), v in self.y.items():
            pairs[v.index()].append((rid, i))
            by_index[v.index()] = v
        fixed: list[Var] = []
        for k, members in pairs.items():
            free = all(i in window and chosen.get(rid, i) in window for rid, i in members)
            if not free:
                fixed.append(by_index[k])
        for i, arcs in enumerate(self.days):
            if i not in window:
                fixed += [v for family in arcs.arcs.values() for _, _, v in family]
        bounds = [(v, v.lb(), v.ub()) for v in fixed]
        for v in fixed:
            x = float(round(self.values[v.index()]))
            v.SetBounds(x, x)
        variables = self.mip.variables()
        self.mip.hint({v: self.values[v.index()] for v in variables})
        outcome = self.mip.solve(limits)
        if (
            outcome.found
            and outcome.objective is not None
            and outcome.objective < self.incumbent - 1e-6
        ):  # read before the bounds change: that discards the solver's solution
            self.values, self.incumbent = self.mip.values(), outcome.objective
        for v, lb, ub in bounds:
            v.SetBounds(lb, ub)
        return outcome

    def chosen(self) -> dict[str, int]:
        """Request → open day index of the incumbent."""
        out = {}
        for (rid, i), v in self.y.items():
            if self.values[v.index()] > 0.5:
                out[rid] = i
        return out

    def starts(self, i: int) -> list[tuple[int, int, int]]:
        """The solution's arcs on day i: (duration, start, stretch group or -1), one per
        infusion, in start order."""
        out = []
        for D in self.durations[i]:
            for t, group, v in self.days[i].arcs[D]:
                out += [(D, t, group)] * round(self.values[v.index()])
        return sorted(out, key=lambda a: (a[1], -a[0], a[2]))
