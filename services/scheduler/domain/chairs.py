"""Chairs for one day whose starts are decided (the optimiser's last stage).

``colour``: in start order, the usual chair when free, else the tightest fit (the chair whose
next taken minute comes soonest). With ``groups`` (a day solved chair by chair) a start only
takes chairs of its stretch group, where the flow guarantees one.

``assign``: the same starts, chairs by a small MIP — ``x[r, c]`` for each chair free over the
infusion's whole occupation, one chair per infusion, and per chair at every start no two
occupations overlapping (interval cliques, exact) — with as few infusions off their usual
chair as possible. It also tells for certain whether the starts can be coloured at all, which
the greedy colouring cannot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from services.scheduler.domain.capacity import InfusionRequest, Placement
from services.scheduler.domain.day_grid import DayGrid
from services.scheduler.domain.greedy import Board
from services.scheduler.domain.mip import Mip, MipLimits, Var

ASSIGN_NODES = 200


def colour(
    board: Board,
    grid: DayGrid,
    starts: Mapping[InfusionRequest, tuple[int, int]],
) -> list[Placement] | None:
    """``starts``: request → (start, stretch group or -1). None, and the board as before,
    when one finds no chair."""
    i = grid.index
    done: list[tuple[InfusionRequest, Placement]] = []
    for r in sorted(starts, key=lambda r: (starts[r][0], -r.duration_minutes, r.id)):
        start, group = starts[r]
        free = board.chairs_free(i, start, start + r.duration_minutes)
        if group >= 0:
            allowed = grid.stretches[group].chairs
            free = [c for c in free if c in allowed]
        if not free:
            for req, p in done:
                board.remove(req, p)
            return None
        chair = r.usual_chair if r.usual_chair in free else board.tightest(i, free, start, r)
        done.append((r, board.place(r, i, start, chair)))
    return [p for _, p in done]


def assign(
    board: Board,
    grid: DayGrid,
    starts: Mapping[InfusionRequest, int],
    seconds: float,
    hint: Mapping[str, str] | None = None,
) -> list[Placement] | None:
    """Chairs for the fixed ``starts`` with the fewest usual-chair misses; None (board as
    before) when no assignment exists or none was found within the limits."""
    i = grid.index
    turn = board.rules.turnover_minutes
    mip = Mip()
    x: dict[tuple[str, str], Var] = {}
    occupying: dict[str, list[tuple[int, int, Var]]] = defaultdict(list)
    order = sorted(starts, key=lambda r: (starts[r], r.id))
    for r in order:
        s = starts[r]
        free = board.chairs_free(i, s, s + r.duration_minutes)
        if not free:
            return None
        mine = []
        for c in free:
            v = mip.var(0, 1)
            x[(r.id, c)] = v
            occupying[c].append((s, s + r.duration_minutes + turn, v))
            mine.append(v)
            if r.usual_chair and c != r.usual_chair:
                mip.cost(v, 1.0)
        mip.row(1, 1, [(v, 1.0) for v in mine])
    for items in occupying.values():
        for t, _, _ in items:
            here = [(v, 1.0) for a, b, v in items if a <= t < b]
            if len(here) > 1:
                mip.row(0, 1, here)
    if hint:
        mip.hint({v: float(hint.get(rid) == c) for (rid, c), v in x.items()})
    outcome = mip.solve(MipLimits(seconds, ASSIGN_NODES, 0.0))
    if not outcome.found:
        return None
    out = []
    for r in order:
        chair = next(c for c in grid.cap.chairs if (r.id, c) in x and Mip.value(x[(r.id, c)]) > 0.5)
        out.append(board.place(r, i, starts[r], chair))
    return out
