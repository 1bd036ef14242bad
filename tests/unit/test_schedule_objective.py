"""The centre's objective term by term, habits learned from visits, the stock rule's arithmetic
and the simulated overtime KPI, on instances small enough to work by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from services.scheduler.domain.capacity import (
    DayCapacity,
    FixedBooking,
    InfusionRequest,
    Placement,
    ScheduleProblem,
    SiteRules,
)
from services.scheduler.domain.habits import Habits, Visit, learned, validate_habits
from services.scheduler.domain.objective import (
    ScheduleObjective,
    expected_overtime,
    objective_with,
    terms,
    validate_objective,
)
from services.scheduler.domain.schedule_kpis import expected_overtime as simulated
from services.scheduler.domain.schedule_kpis import kpis
from services.scheduler.domain.stock_rule import StockDay, first_short, usage

MON = dt.date(2026, 3, 2)
TUE, WED = MON + dt.timedelta(days=1), MON + dt.timedelta(days=2)
OPEN, CLOSE = 480, 1080
DAY = DayCapacity(MON, OPEN, CLOSE, ("C1", "C2"), (), ((OPEN, CLOSE, 2),))


def problem(*requests: InfusionRequest, **kw: object) -> ScheduleProblem:
    days = (DAY, DayCapacity(TUE, OPEN, CLOSE, ("C1", "C2")))
    return ScheduleProblem(SiteRules(4, 2, 15), days, (), requests, **kw)  # type: ignore[arg-type]


def test_terms_add_up_and_price_each_miss() -> None:
    late = InfusionRequest(
        "late", "p1", 120, MON - dt.timedelta(days=1), MON - dt.timedelta(days=1), TUE,
        usual_weekday=2, usual_start_minute=600, usual_chair="C2",
    )  # fmt: skip
    series = InfusionRequest("s", "p2", 120, MON, MON, TUE, series_id="S")
    p = problem(late, series)
    placed = [Placement("late", TUE, "C1", 480, 600)]
    got = {t.name: t for t in terms(p, placed)}
    # "late": 2 days late, on its usual weekday (Tuesday), 2 hours early, off its usual chair
    assert got["lateness_days"].value == 2 and got["lateness_days"].cost == 60
    assert got["usual_weekday_misses"].value == 0
    assert got["usual_start_hours_off"].cost == pytest.approx(8)
    assert got["usual_chair_misses"].cost == 2
    # the series member is unplaced: 1000 + 1000 for an induction (its due day is not before
    # the first open day, so not overdue)
    assert got["unplaced"].value == 1 and got["unplaced"].cost == 2000
    assert got["start_peaks"].value == 1  # Tuesday's one start; Monday has none
    total = sum(t.cost for t in terms(p, placed))
    assert total == pytest.approx(sum(t.cost for t in got.values()))


def test_an_overdue_request_costs_its_extra_when_left_out() -> None:
    overdue = InfusionRequest("o", "p", 60, MON - dt.timedelta(days=3), MON, TUE)
    got = {t.name: t for t in terms(problem(overdue), [])}
    assert got["unplaced"].cost == 1500


def test_expected_overtime_is_the_normal_tail() -> None:
    o = ScheduleObjective()
    # ending exactly at closing with a 15 % spread on 400 minutes: E[max(0, N(0, 60))] = 60/√2π
    assert expected_overtime(o, DAY, CLOSE - 400, 400) == pytest.approx(60 / 2.5066, rel=1e-3)
    assert expected_overtime(o, DAY, OPEN, 120) == pytest.approx(0, abs=1e-9)
    buffered = ScheduleObjective(end_buffer_minutes=60, duration_cv_percent=0)
    assert expected_overtime(buffered, DAY, CLOSE - 400, 400) == 60


def test_settings_are_checked_and_put_over_the_defaults() -> None:
    assert objective_with({"lateness_per_day": 50}).lateness_per_day == 50
    assert objective_with({}).earliness_per_day == 10
    bad = validate_objective({"lateness_per_day": -1, "nonsense": 1}, "site.schedule_objective")
    assert {v.field for v in bad.items} == {
        "site.schedule_objective.lateness_per_day",
        "site.schedule_objective.nonsense",
    }


def test_habits_are_learned_from_recent_visits_and_a_plan_setting_wins() -> None:
    visits = [
        Visit(dt.date(2026, 2, 24), 600, "C3"),  # Tuesday
        Visit(dt.date(2026, 1, 27), 540, "C1"),  # Tuesday
        Visit(dt.date(2025, 12, 29), 660, "C3"),  # Monday
        Visit(dt.date(2025, 12, 1), 480, "C2"),
        Visit(dt.date(2025, 11, 3), 480, "C3"),  # the fifth: not counted
    ]
    assert learned(visits) == Habits(weekday=2, start_minute=540, chair_id="C3")
    # one visit is a habit; two that disagree are none (weekday), the latest wins a tie (chair)
    assert learned(visits[:1]) == Habits(2, 600, "C3")
    two = [Visit(dt.date(2026, 2, 24), 600, "C3"), Visit(dt.date(2026, 2, 2), 600, "C1")]
    assert learned(two).weekday is None and learned(two).chair_id == ""
    assert Habits(weekday=4).over(learned(visits)) == Habits(4, 540, "C3")
    assert learned([]) == Habits()
    assert [v.field for v in validate_habits(Habits(weekday=8, start_minute=1440), "p.").items] == [
        "p.usual_weekday",
        "p.usual_start",
    ]


def test_the_stock_runs_down_and_expiry_is_used_first() -> None:
    days = [
        StockDay(MON, Decimal(70)),
        StockDay(TUE, Decimal(40), expiring=Decimal(30)),
        StockDay(WED, Decimal(40)),
    ]
    # 60 g on Monday: 30 of it came out of the lot expiring Tuesday, 30 are gone for good
    assert usage(days, {MON: Decimal(60)}) == [Decimal(60), Decimal(30), Decimal(30)]
    assert first_short(days, {MON: Decimal(60)}, TUE, Decimal(10)) is None  # 10 + 30 ≤ 40
    assert first_short(days, {MON: Decimal(60)}, TUE, Decimal(11)) == 1
    assert first_short(days, {}, dt.date(2026, 3, 9), Decimal(1)) == -1  # no figure that day


def test_simulated_overtime_is_seeded_and_counts_knock_on_delays() -> None:
    # two 285-minute infusions back to back on one chair end at 17:45 + 15 min turnover:
    # any overrun of the first delays the second past closing
    fixed = (FixedBooking("f", "q", "C1", MON, OPEN, OPEN + 285),)
    p = ScheduleProblem(SiteRules(4, 2, 15), (DAY,), fixed, ())
    back_to_back = [Placement("x", MON, "C1", OPEN + 300, OPEN + 585)]
    first = simulated(p, back_to_back, seed=3)
    assert first == simulated(p, back_to_back, seed=3)
    assert 0 < first[0] < 120
    alone = ScheduleProblem(SiteRules(4, 2, 15), (DAY,), (), ())
    assert simulated(alone, [Placement("x", MON, "C1", OPEN, OPEN + 120)], seed=3) == [0.0]
    assert kpis(p, []).expected_overtime_minutes == pytest.approx(0, abs=1)
