"""The window search (large-neighbourhood search) of the horizon model: what it frees, what it
keeps, and that it never makes the incumbent worse (docs/optimiser.md "Window search")."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from bench.schedule_instances import generate, small
from services.scheduler.domain import optimiser
from services.scheduler.domain.capacity import (
    DayCapacity,
    InfusionRequest,
    ScheduleProblem,
    SiteRules,
)
from services.scheduler.domain.day_grid import DayGrid
from services.scheduler.domain.horizon_model import HorizonModel
from services.scheduler.domain.mip import MipLimits
from services.scheduler.domain.objective import ScheduleObjective
from services.scheduler.domain.schedule_check import violations

MON = dt.date(2026, 3, 2)
DAYS = tuple(MON + dt.timedelta(days=k) for k in range(5))  # Monday to Friday
OPEN, CLOSE = 8 * 60, 18 * 60
LIMITS = MipLimits(seconds=10, nodes=1000, gap=0.0, seed=1)


def _problem() -> ScheduleProblem:
    days = tuple(DayCapacity(d, OPEN, CLOSE, ("C1", "C2"), (), ((OPEN, CLOSE, 4),)) for d in DAYS)
    wed = DAYS[2]
    requests = (
        # due Wednesday, window Monday..Friday
        InfusionRequest("a", "pa", 240, wed, DAYS[0], DAYS[4]),
        # due Friday, window Thursday..Friday
        InfusionRequest("b", "pb", 240, DAYS[4], DAYS[3], DAYS[4]),
    )
    return ScheduleProblem(
        SiteRules(4, 2, 15), days, (), requests, objective=ScheduleObjective.deviation_only()
    )


def _forced(first: tuple[str, int], second: tuple[str, int]) -> HorizonModel:
    """A feasible but poor incumbent: both requests held on a day by their bounds, solved,
    and the bounds given back (as a limit-stopped solve would leave things)."""
    p = _problem()
    model = HorizonModel(p, [DayGrid(p, i) for i in range(len(p.days))], frozenset())
    held = [model.y[first], model.y[second]]
    for v in held:
        v.SetBounds(1, 1)
    assert model.solve(LIMITS).found
    for v in held:
        v.SetBounds(0, 1)
    return model


def test_a_window_moves_only_what_lies_in_it() -> None:
    model = _forced(("a", 0), ("b", 3))  # a on Monday (2 days early), b on Thursday (1 early)
    assert model.incumbent == 3
    outcome = model.resolve_window(range(0, 2), LIMITS)  # Monday and Tuesday
    assert outcome.found
    # a may move within the window only (Tuesday, 1 day early); b stays where it was
    assert model.chosen() == {"a": 1, "b": 3}
    assert model.incumbent == 2


def test_a_window_with_everything_reaches_the_optimum() -> None:
    model = _forced(("a", 0), ("b", 3))
    model.resolve_window(range(0, 5), LIMITS)
    assert model.chosen() == {"a": 2, "b": 4}
    assert model.incumbent == 0


def test_a_window_without_a_gain_keeps_the_incumbent_and_the_bounds() -> None:
    model = _forced(("a", 0), ("b", 3))
    before = model.chosen()
    bounds = [(v.lb(), v.ub()) for v in model.mip.variables()]
    model.resolve_window(range(4, 5), LIMITS)  # Friday: b is on Thursday, so nothing is free
    assert model.chosen() == before
    assert model.incumbent == 3
    assert [(v.lb(), v.ub()) for v in model.mip.variables()] == bounds
    # the whole model is as it was: solved again, it finds the optimum
    assert model.solve(LIMITS).objective == 0


@pytest.mark.solver
def test_the_optimiser_searches_windows_when_a_limit_stops_the_first_solve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 5 chairs × 10 open days, seed 2: the first solve needs 2 nodes to prove its optimum, so
    # a limit of 1 node stops it short and the window search runs: 5 windows of up to 5 days
    monkeypatch.setattr(optimiser, "NODES_PER_SECOND", 0)  # node limit max(1, 0) = 1
    spec = small(5, (1, 0, 1))
    p = dataclasses.replace(generate(2, spec), objective=ScheduleObjective.deviation_only())
    result = optimiser.solve(p, time_limit_s=60, seed=2)
    first, *windows = [ph for ph in result.phases if ph.name.startswith(("horizon", "window"))]
    assert first.status == "FEASIBLE" and first.nodes == 1
    assert [w.name.split()[0] for w in windows] == ["window"] * 3  # days 1-5, 5-9, 9-10
    assert all(w.nodes <= 1 and w.objective is not None for w in windows)
    # never worse than the incumbent before it, and every rule kept
    assert first.objective is not None
    assert windows[-1].objective is not None and windows[-1].objective <= first.objective + 1e-6
    assert violations(p, result.placements) == []
    assert result.best_bound == first.best_bound
