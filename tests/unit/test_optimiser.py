"""The schedule optimiser on instances whose optimum is known: worked by hand, or proven by an
independent formulation (bench/independent_schedule_model.py) on generated ones."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from bench.independent_schedule_model import optimum
from bench.schedule_instances import InstanceSpec, generate, small
from services.scheduler.domain.capacity import (
    DayCapacity,
    FixedBooking,
    InfusionRequest,
    ScheduleProblem,
    SiteRules,
)
from services.scheduler.domain.greedy import greedy
from services.scheduler.domain.objective import ScheduleObjective, terms
from services.scheduler.domain.optimiser import solve
from services.scheduler.domain.schedule_check import violations

MON = dt.date(2026, 3, 2)
TUE, WED, THU, FRI = (MON + dt.timedelta(days=k) for k in range(1, 5))
OPEN, CLOSE = 8 * 60, 18 * 60  # 600 minutes


def day(
    d: dt.date,
    chairs: int = 2,
    nurses: int = 10,
    close: int = CLOSE,
    blocks: tuple[tuple[str, int, int], ...] = (),
) -> DayCapacity:
    ids = tuple(f"C{k + 1}" for k in range(chairs))
    return DayCapacity(d, OPEN, close, ids, blocks, ((OPEN, close, nurses),))


def req(
    rid: str, minutes: int, due: dt.date = MON, lo: int = 0, hi: int = 0, **kw: object
) -> InfusionRequest:
    return InfusionRequest(
        id=rid,
        patient_id=str(kw.pop("patient", f"p-{rid}")),
        duration_minutes=minutes,
        due_day=due,
        earliest_day=due - dt.timedelta(days=lo),
        latest_day=due + dt.timedelta(days=hi),
        **kw,  # type: ignore[arg-type]
    )


DEVIATION = ScheduleObjective.deviation_only()


def problem(
    days: tuple[DayCapacity, ...],
    requests: tuple[InfusionRequest, ...],
    fixed: tuple[FixedBooking, ...] = (),
    rules: SiteRules | None = None,
    objective: ScheduleObjective | None = None,
) -> ScheduleProblem:
    return ScheduleProblem(
        rules or SiteRules(4, 2, 15), days, fixed, requests, objective=objective or DEVIATION
    )


def run(p: ScheduleProblem) -> tuple[dict[str, tuple[dt.date, str, int]], dict[str, str]]:
    result = solve(p, time_limit_s=5, seed=7)
    assert violations(p, result.placements) == []
    placed = {x.request_id: (x.day, x.chair_id, x.start_minute) for x in result.placements}
    return placed, dict(result.unplaced)


def test_two_chairs_one_day_three_long_infusions_two_fit() -> None:
    # 300 + 15 turnover + 300 = 615 > 600 open minutes: one infusion per chair, so 2 of 3
    p = problem((day(MON),), (req("a", 300), req("b", 300), req("c", 300)))
    placed, unplaced = run(p)
    assert len(placed) == 2 and len(unplaced) == 1
    (reason,) = unplaced.values()
    assert "no chair free for 300 min" in reason
    assert {chair for _, chair, _ in placed.values()} == {"C1", "C2"}


def test_shorter_ones_share_a_chair() -> None:
    # 1 chair: 285 + 15 + 285 + 15 = 600 -> 08:00-12:45 and 13:00-17:45, both placed
    p = problem((day(MON, chairs=1),), (req("a", 285), req("b", 285)))
    placed, unplaced = run(p)
    assert unplaced == {}
    assert sorted(s for _, _, s in placed.values()) == [480, 780]


def test_series_of_three_on_consecutive_open_days() -> None:
    # open days Mon, Tue, Thu, Fri (Wed closed); Mon's only chair is taken all day by a fixed
    # booking, so the series can only start Tue: Tue, Thu, Fri are consecutive OPEN days
    days = (day(MON, chairs=1), day(TUE, chairs=1), day(THU, chairs=1), day(FRI, chairs=1))
    fixed = (FixedBooking("f", "other", "C1", MON, OPEN, CLOSE),)
    series = tuple(
        req(f"s{k}", 240, due=MON, lo=0, hi=6, series_id="S", series_index=k, patient="p")
        for k in range(3)
    )
    placed, unplaced = run(problem(days, series, fixed))
    assert unplaced == {}
    assert [placed[f"s{k}"][0] for k in range(3)] == [TUE, THU, FRI]


def test_series_all_or_nothing() -> None:
    # two open days only, a series of three: nothing of it is placed, each member says why
    days = (day(MON), day(TUE))
    series = tuple(
        req(f"s{k}", 120, due=MON, hi=3, series_id="S", series_index=k, patient="p")
        for k in range(3)
    )
    placed, unplaced = run(problem(days, series))
    assert placed == {}
    assert set(unplaced) == {"s0", "s1", "s2"}
    assert all("series" in r for r in unplaced.values())


def test_nurse_ratio_bottleneck() -> None:
    # 3 chairs but 1 nurse at 1:2: two 360-minute infusions run 08:00-14:00; a third could
    # start at 14:00 only and would end 20:00 > 18:00: 2 placed
    p = problem(
        (day(MON, chairs=3, nurses=1),),
        (req("a", 360), req("b", 360), req("c", 360)),
        rules=SiteRules(nurse_ratio=2, start_limit=4, turnover_minutes=15),
    )
    placed, unplaced = run(p)
    assert len(placed) == 2 and len(unplaced) == 1


def test_start_limit_bottleneck() -> None:
    # open 08:00-11:00, 120-minute infusions may start 08:00..09:00: 5 quarters, and 1 nurse
    # sets up 1 start per quarter: 5 of 6 placed, one per quarter
    p = problem(
        (day(MON, chairs=6, nurses=1, close=11 * 60),),
        tuple(req(f"r{k}", 120) for k in range(6)),
        rules=SiteRules(nurse_ratio=10, start_limit=1, turnover_minutes=15),
    )
    placed, unplaced = run(p)
    assert len(placed) == 5 and len(unplaced) == 1
    assert sorted(s for _, _, s in placed.values()) == [480, 495, 510, 525, 540]


def test_one_infusion_per_patient_per_day() -> None:
    # a patient's two requests both only on Monday: one placed; a fixed booking of another
    # patient on Monday keeps that patient's request off Monday too
    fixed = (FixedBooking("f", "q", "C2", MON, OPEN, OPEN + 120),)
    p = problem(
        (day(MON),),
        (req("a", 120, patient="p"), req("b", 120, patient="p"), req("c", 120, patient="q")),
        fixed,
    )
    placed, unplaced = run(p)
    assert len(placed) == 1 and set(unplaced) >= {"c"}
    assert "already has an infusion" in unplaced["c"]


def test_least_deviation_from_due_day() -> None:  # the deviation objective
    # due Tuesday, window Mon-Wed; Tuesday's only chair is taken: deviation 1 (Mon or Wed);
    # the second request is due Wednesday and fits there: deviation 0. Optimum total = 1
    days = (day(MON, chairs=1), day(TUE, chairs=1), day(WED, chairs=1))
    fixed = (FixedBooking("f", "x", "C1", TUE, OPEN, CLOSE),)
    p = problem(days, (req("a", 240, due=TUE, lo=1, hi=1), req("b", 240, due=WED)), fixed)
    result = solve(p, time_limit_s=5, seed=1)
    assert violations(p, result.placements) == []
    assert result.kpis.total_deviation_days == 1
    assert result.objective == result.best_bound == 1.0
    assert result.status == "OPTIMAL"


def test_level_loading_spreads_starts() -> None:
    # four 120-minute infusions on 4 chairs: the lowest peak of starts per quarter is 1
    p = problem(
        (day(MON, chairs=4),),
        tuple(req(f"r{k}", 120) for k in range(4)),
        objective=ScheduleObjective(),
    )
    result = solve(p, time_limit_s=5, seed=3)
    assert violations(p, result.placements) == []
    assert result.kpis.peak_starts_per_slot == 1


def test_usual_chair_and_start_when_free() -> None:
    p = problem(
        (day(MON, chairs=3),),
        (req("a", 120, usual_chair="C3", usual_start_minute=600),),
        objective=ScheduleObjective(),
    )
    placed, _ = run(p)
    assert placed["a"] == (MON, "C3", 600)


def test_block_respected_and_no_open_day_reported() -> None:
    # chair C1 is in maintenance 08:00-13:00, C2 all day: the only room is C1 from 13:00
    blocks = (("C1", OPEN, 13 * 60), ("C2", OPEN, CLOSE))
    p = problem(
        (day(MON, blocks=blocks),),
        (req("a", 240), req("late", 60, due=FRI)),
    )
    placed, unplaced = run(p)
    assert placed["a"] == (MON, "C1", 13 * 60)
    assert "no open day in its window" in unplaced["late"]


def test_same_seed_same_schedule() -> None:
    p = generate(5, InstanceSpec(chairs=5, weeks=1, requests=30, blocks=1))
    first = solve(p, time_limit_s=20, seed=11)
    second = solve(p, time_limit_s=20, seed=11)
    assert first.placements == second.placements
    assert first.terms == second.terms


@pytest.mark.parametrize("seed", range(6))
def test_every_proposal_keeps_every_hard_rule(seed: int) -> None:
    spec = InstanceSpec(chairs=4 + seed % 3, weeks=1, requests=25 + 3 * seed, blocks=2)
    p = generate(seed, spec)
    result = solve(p, time_limit_s=20, seed=seed)
    assert violations(p, result.placements) == []
    assert result.kpis.placed + result.kpis.unplaced == len(p.requests)
    assert len(result.unplaced) == result.kpis.unplaced
    assert all(reason for _, reason in result.unplaced)
    # never worse than the greedy schedule on the objective it optimises
    assert result.objective is not None
    assert result.objective <= sum(t.cost for t in terms(p, greedy(p).placements)) + 1e-6


# -- the centre's objective ------------------------------------------------------------------
def test_late_costs_more_than_early() -> None:
    # due Tuesday, window Mon..Wed; Tuesday's only chair is taken all day: Monday (one day
    # early) beats Wednesday (one day late) with the default weights, and either is equal
    # under the deviation objective
    days = (day(MON, chairs=1), day(TUE, chairs=1), day(WED, chairs=1))
    fixed = (FixedBooking("f", "x", "C1", TUE, OPEN, CLOSE),)
    r = req("a", 240, due=TUE, lo=1, hi=1)
    placed, _ = run(problem(days, (r,), fixed, objective=ScheduleObjective()))
    assert placed["a"][0] == MON
    # with lateness cheaper than earliness, Wednesday
    cheap_late = ScheduleObjective(earliness_per_day=30, lateness_per_day=10)
    placed, _ = run(problem(days, (r,), fixed, objective=cheap_late))
    assert placed["a"][0] == WED


def test_usual_weekday_is_worth_a_day_early() -> None:
    # due Wednesday, window Mon..Fri, the patient usually comes on Tuesdays: with the default
    # weights a day early (10) costs as much as missing the weekday (10): both cost 10;
    # once the weekday is worth more (25), Tuesday
    days = tuple(day(d) for d in (MON, TUE, WED, THU, FRI))
    r = req("a", 240, due=WED, lo=2, hi=2, usual_weekday=2)
    keen = ScheduleObjective(usual_weekday=25)
    placed, _ = run(problem(days, (r,), objective=keen))
    assert placed["a"][0] == TUE
    placed, _ = run(problem(days, (r,), objective=ScheduleObjective(usual_weekday=5)))
    assert placed["a"][0] == WED


def test_an_induction_goes_before_a_maintenance_infusion() -> None:
    # one chair, one day: a 2-day induction's first member and a maintenance infusion both due
    # Monday and both 9 hours long: only one fits Monday; the series (Mon+Tue) is placed
    days = (day(MON, chairs=1), day(TUE, chairs=1))
    series = tuple(
        req(
            f"s{k}", 540, due=MON + dt.timedelta(days=k), series_id="S", series_index=k, patient="p"
        )
        for k in range(2)
    )
    single = req("m", 540, due=MON)
    placed, unplaced = run(problem(days, (single, *series), objective=ScheduleObjective()))
    assert set(placed) == {"s0", "s1"} and set(unplaced) == {"m"}


def test_overdue_goes_first() -> None:
    # two requests for Monday's one slot: the overdue one (due last Friday) wins
    days = (day(MON, chairs=1),)
    late = req("late", 540, due=MON - dt.timedelta(days=3), hi=3)
    fresh = req("fresh", 540, due=MON)
    # without the overdue extra, the fresh one (no lateness cost) would win
    placed, _ = run(problem(days, (late, fresh), objective=ScheduleObjective()))
    assert set(placed) == {"late"}
    placed, _ = run(problem(days, (late, fresh), objective=ScheduleObjective(overdue_extra=0)))
    assert set(placed) == {"fresh"}


def test_expected_overtime_keeps_long_infusions_off_the_end_of_the_day() -> None:
    # one 480-minute infusion in a 600-minute day: starting 10:00 ends exactly at closing and
    # runs past it about 1 time in 2 when durations vary; with an overtime penalty it starts
    # at opening
    p = problem(
        (day(MON),),
        (req("a", 480, usual_start_minute=600),),
        objective=ScheduleObjective(usual_start_per_hour=1, overtime_per_minute=5),
    )
    placed, _ = run(p)
    assert placed["a"][2] == OPEN


def test_load_levelling_spreads_days() -> None:
    # four 120-minute infusions due Monday..Tuesday with windows over both days: the deviation
    # alone puts all on their due day; levelling the two days' load moves none when each day
    # has two, and splits four Monday requests 2 + 2 when Tuesday is free
    days = (day(MON, chairs=4), day(TUE, chairs=4))
    rs = tuple(req(f"r{k}", 120, due=MON, hi=1) for k in range(4))
    level = ScheduleObjective(lateness_per_day=1, load_per_chair_hour=5)
    placed, _ = run(problem(days, rs, objective=level))
    assert sorted(d for d, _, _ in placed.values()) == [MON, MON, TUE, TUE]
    result = solve(problem(days, rs, objective=level), time_limit_s=20, seed=1)
    names = {t.name: t for t in result.terms}
    assert names["load_chair_hours_off"].value == 0
    assert result.objective == pytest.approx(sum(t.cost for t in result.terms))


def test_the_objective_reports_each_term() -> None:
    p = problem((day(MON),), (req("a", 120, due=TUE, lo=1),), objective=ScheduleObjective())
    result = solve(p, time_limit_s=20, seed=1)
    names = {t.name: t for t in result.terms}
    assert names["earliness_days"].value == 1 and names["earliness_days"].cost == 10
    assert names["unplaced"].value == 0
    assert result.objective == pytest.approx(sum(t.cost for t in result.terms))
    assert result.best_bound is not None and result.best_bound <= result.objective + 1e-6


# -- chairs: where counting is not enough ------------------------------------------------------
def test_a_day_whose_counted_chairs_do_not_colour_is_solved_chair_by_chair() -> None:
    # Monday: C1 free 08:00-12:00, C2 free 10:00-18:00 (blocks). A (135 min), B (105) and C
    # (390) all due Monday, window Mon..Tue; turnover 15. Counted, they fit Monday: A 08:00,
    # B 10:00, C 10:30 never need more chairs than are free (1, then 2, then 1). On real chairs
    # they do not: C fits only C2 and leaves it no room for B, A and B together overrun C1.
    # The optimiser must find that out (the day solved chair by chair cannot hold them), model
    # Monday chair by chair and move one to Tuesday: optimum 1.
    blocks = (("C1", 12 * 60, CLOSE), ("C2", OPEN, 10 * 60))
    days = (day(MON, chairs=2, blocks=blocks), day(TUE, chairs=2))
    p = problem(days, (req("a", 135, hi=1), req("b", 105, hi=1), req("c", 390, hi=1)))
    result = solve(p, time_limit_s=20, seed=1)
    assert violations(p, result.placements) == []
    assert result.status == "OPTIMAL" and result.objective == result.best_bound == 1
    assert [ph.name for ph in result.phases] == [
        "horizon, round 1",
        f"{MON}: chairs exactly",
        "horizon, round 2",
    ]
    assert result.phases[1].status == "INFEASIBLE"
    assert any("modelled chair by chair" in n for n in result.notes)
    assert sorted(p.day for p in result.placements) == [MON, MON, TUE]


# -- proven optima on generated instances --------------------------------------------------------
@pytest.mark.solver
@pytest.mark.parametrize(("chairs", "seed"), [(5, 1), (5, 3), (10, 2), (10, 3)])
def test_small_instances_are_solved_to_the_proven_optimum(chairs: int, seed: int) -> None:
    # 10 open days, ~2 infusions a chair-day's worth of requests (more than fit), no fixed
    # bookings or blocks (so the independent model's counted chairs are exact), inductions
    # and nurse limits as generated
    spec = small(chairs, (1, 0, 1) if chairs == 5 else (6, 1, 1))
    p = dataclasses.replace(generate(seed, spec), objective=DEVIATION)
    result = solve(p, time_limit_s=60, seed=seed)
    assert violations(p, result.placements) == []
    status, value, bound = optimum(p)
    assert status == "OPTIMAL" and value == pytest.approx(bound)
    assert result.status == "OPTIMAL"
    assert result.objective == pytest.approx(value)
    assert result.best_bound == pytest.approx(value)
    # and the greedy baseline is beaten where the optimum is better
    base = sum(t.cost for t in terms(p, greedy(p).placements))
    assert result.objective <= base
