"""The stock rule of the schedule (PlanSchedule's skip_without_stock, issue 6): per product and
day, the doses placed fit the grams in date and unreserved that day. Small instances worked by
hand, for the greedy baseline, CP-SAT and the independent validator."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from services.scheduler.domain.capacity import (
    DayCapacity,
    DayStock,
    InfusionRequest,
    Placement,
    ScheduleProblem,
    ScheduleResult,
    SiteRules,
)
from services.scheduler.domain.greedy import greedy
from services.scheduler.domain.optimiser import solve
from services.scheduler.domain.schedule_check import violations

MON = dt.date(2026, 3, 2)
TUE, WED = MON + dt.timedelta(days=1), MON + dt.timedelta(days=2)
OPEN, CLOSE = 8 * 60, 18 * 60
GAM = "gammagard-liquid"
HIZ = "hizentra"

# plenty of chairs and nurses: only the stock limits these instances
DAYS = tuple(
    DayCapacity(d, OPEN, CLOSE, ("C1", "C2", "C3", "C4"), (), ((OPEN, CLOSE, 10),))
    for d in (MON, TUE, WED)
)
RULES = SiteRules(nurse_ratio=4, start_limit=2, turnover_minutes=15)
# Mon 0 g, Tue 40 g, Wed 80 g of Gammagard; Hizentra only on Monday
STOCK = (
    DayStock(GAM, MON, Decimal(0)),
    DayStock(GAM, TUE, Decimal(40)),
    DayStock(GAM, WED, Decimal(80)),
    DayStock(HIZ, MON, Decimal("12.5")),
)


def req(rid: str, grams: str = "35", product: str = GAM) -> InfusionRequest:
    # due Monday, window Mon..Wed, 2 hours in the chair
    return InfusionRequest(
        rid,
        f"p-{rid}",
        120,
        MON,
        MON,
        WED,
        product_id=product,
        grams=Decimal(grams),
        product_name="Gammagard Liquid" if product == GAM else "Hizentra",
    )


def prob(*requests: InfusionRequest, stock: tuple[DayStock, ...] | None = STOCK) -> ScheduleProblem:
    return ScheduleProblem(RULES, DAYS, (), requests, stock)


def days_of(result: ScheduleResult) -> dict[str, dt.date]:
    return {p.request_id: p.day for p in result.placements}


def optimise(p: ScheduleProblem) -> ScheduleResult:
    result = solve(p, time_limit_s=5, seed=3)
    assert violations(p, result.placements) == []
    assert result.status != "GREEDY_FALLBACK", result.notes
    return result


SOLVERS = {"greedy": greedy, "cp-sat": optimise}


@pytest.mark.parametrize("method", SOLVERS)
def test_two_doses_move_to_the_days_with_stock(method: str) -> None:
    # a and b: 35 g each, due Monday. Monday has 0 g < 35: no one. Tuesday 40 g: one (35 ≤ 40),
    # not both (70 > 40). Wednesday 80 g: both would fit (70 ≤ 80), but one on Tuesday
    # (1 day off) and one on Wednesday (2 days off) deviate 3 days in all, both on Wednesday 4.
    result = SOLVERS[method](prob(req("a"), req("b")))
    assert sorted(days_of(result).values()) == [TUE, WED]
    assert result.unplaced == ()
    assert violations(prob(req("a"), req("b")), result.placements) == []


@pytest.mark.parametrize("method", SOLVERS)
def test_the_day_budget_is_shared_and_the_fifth_dose_is_unplaced(method: str) -> None:
    # four of 35 g: Tuesday takes 1 (35 ≤ 40 < 70), Wednesday 2 (70 ≤ 80 < 105): three placed,
    # 105 g of the 120 g. The fourth has no day left: Mon 0 g, Tue 40 − 35 = 5 g,
    # Wed 80 − 70 = 10 g, each < 35 g.
    p = prob(*(req(f"r{k}") for k in range(4)))
    result = SOLVERS[method](p)
    got = sorted(days_of(result).values())
    assert got == [TUE, WED, WED]
    ((rid, reason),) = result.unplaced
    assert rid not in days_of(result)
    assert f"{MON}: Gammagard Liquid: 0 g in date and unreserved left; the dose is 35 g" in reason
    assert f"{TUE}: Gammagard Liquid: 5 g in date and unreserved left (35 g of 40 g" in reason
    assert f"{WED}: Gammagard Liquid: 10 g in date and unreserved left (70 g of 80 g" in reason


@pytest.mark.parametrize("method", SOLVERS)
def test_each_product_has_its_own_budget(method: str) -> None:
    # Hizentra 12.5 g on Monday holds one 10 g dose (10 ≤ 12.5 < 20), Gammagard none;
    # a request without grams is not limited by stock
    p = prob(req("h1", "10", HIZ), req("h2", "10", HIZ), req("g"), req("free", "0"))
    result = SOLVERS[method](p)
    got = days_of(result)
    assert got["free"] == MON and got["g"] == TUE
    assert sorted([got.get("h1"), got.get("h2")], key=str) == [MON, None]
    ((_, reason),) = result.unplaced
    assert "Hizentra: 2.5 g in date and unreserved left (10 g of 12.5 g" in reason
    assert f"{TUE}: Hizentra: 0 g in date and unreserved left; the dose is 10 g" in reason


@pytest.mark.parametrize("method", SOLVERS)
def test_without_a_stock_budget_nothing_changes(method: str) -> None:
    # the same two doses with stock=None: both on their due Monday
    result = SOLVERS[method](prob(req("a"), req("b"), stock=None))
    assert days_of(result) == {"a": MON, "b": MON}


@pytest.mark.parametrize("method", SOLVERS)
def test_a_series_starts_where_every_member_has_stock(method: str) -> None:
    # a 2-day induction series of 35 g a day due Monday: Mon has no stock, so Tue+Wed
    members = tuple(
        InfusionRequest(
            f"s{k}",
            "p-s",
            120,
            MON,
            MON,
            WED,
            series_id="S",
            series_index=k,
            product_id=GAM,
            grams=Decimal(35),
        )
        for k in range(2)
    )
    result = SOLVERS[method](prob(*members))
    assert days_of(result) == {"s0": TUE, "s1": WED}


def test_validator_rejects_a_schedule_that_overdraws_the_stock() -> None:
    p = prob(req("a"), req("b"), req("c"))

    def at(rid: str, day: dt.date, chair: str) -> Placement:
        return Placement(rid, day, chair, OPEN, OPEN + 120)

    # Tuesday: a + b = 70 g > 40 g; Monday: c 35 g > 0 g
    found = violations(p, [at("a", TUE, "C1"), at("b", TUE, "C2"), at("c", MON, "C1")])
    assert f"stock of {GAM} on {TUE}: a, b take 70 g, 40 g available" in found
    assert f"stock of {GAM} on {MON}: c takes 35 g, 0 g available" in found
    assert len(found) == 2
    # one on Tuesday (35 ≤ 40) and two on Wednesday (70 ≤ 80) hold
    assert violations(p, [at("a", TUE, "C1"), at("b", WED, "C1"), at("c", WED, "C2")]) == []
    # without a budget the same overdraw is no violation
    free = prob(req("a"), req("b"), req("c"), stock=None)
    assert violations(free, [at("a", TUE, "C1"), at("b", TUE, "C2"), at("c", MON, "C1")]) == []


def test_cp_sat_shares_the_stock_better_than_earliest_fit() -> None:
    # long: 35 g, 180 min, due Tue, window Tue..Wed; short: 35 g, 120 min, due Tue, Tuesday only.
    # Tuesday's 40 g holds one of them. Earliest fit takes the longer first: long on Tuesday,
    # short has no day (Tue 5 g left). CP-SAT places both: short Tue (0 days off), long Wed (1).
    long = InfusionRequest("long", "p-l", 180, TUE, TUE, WED, product_id=GAM, grams=Decimal(35))
    short = InfusionRequest("short", "p-s", 120, TUE, TUE, TUE, product_id=GAM, grams=Decimal(35))
    p = prob(long, short)
    base = greedy(p)
    assert days_of(base) == {"long": TUE} and [u for u, _ in base.unplaced] == ["short"]
    assert (
        "5 g in date and unreserved left (35 g of 40 g go to other proposals)"
        in (base.unplaced[0][1])
    )
    assert days_of(optimise(p)) == {"short": TUE, "long": WED}
