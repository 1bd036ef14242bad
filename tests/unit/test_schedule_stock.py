"""The stock rule of the schedule (PlanSchedule's skip_without_stock): a dose goes on a day with
stock of its product, and what is placed runs the stock down for every later day. Small
instances worked by hand, for the greedy baseline, the optimiser and the independent validator."""

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
    result = solve(p, time_limit_s=20, seed=3)
    assert violations(p, result.placements) == []
    assert result.status != "GREEDY_FALLBACK", result.notes
    return result


SOLVERS = {"greedy": greedy, "optimiser": optimise}


@pytest.mark.parametrize("method", SOLVERS)
def test_two_doses_move_to_the_days_with_stock(method: str) -> None:
    # a and b: 35 g each, due Monday. Monday has 0 g < 35: no one. Tuesday 40 g: one (35 ≤ 40),
    # not both (70 > 40). Wednesday 80 g, less Tuesday's 35: one more (70 ≤ 80). Both on
    # Wednesday (70 ≤ 80) would fit too, but deviate more (4 days against 3).
    result = SOLVERS[method](prob(req("a"), req("b")))
    assert sorted(days_of(result).values()) == [TUE, WED]
    assert result.unplaced == ()
    assert violations(prob(req("a"), req("b")), result.placements) == []


@pytest.mark.parametrize("method", SOLVERS)
def test_the_stock_runs_down_and_the_third_dose_is_unplaced(method: str) -> None:
    # four of 35 g: Tuesday takes 1 (35 ≤ 40 < 70); Wednesday's 80 g less Tuesday's 35 leave
    # 45: one more (70 ≤ 80 < 105). Two placed; the others have no day left: Mon 0 g, Tue
    # 40 − 35 = 5 g, Wed 80 − 70 = 10 g, each < 35 g.
    p = prob(*(req(f"r{k}") for k in range(4)))
    result = SOLVERS[method](p)
    got = sorted(days_of(result).values())
    assert got == [TUE, WED]
    assert len(result.unplaced) == 2
    (rid, reason) = result.unplaced[0]
    assert rid not in days_of(result)
    assert f"{MON}: Gammagard Liquid: 0 g in date and unreserved left; the dose is 35 g" in reason
    assert f"{TUE}: Gammagard Liquid: 5 g in date and unreserved left (35 g of 40 g" in reason
    assert f"{WED}: Gammagard Liquid: 10 g in date and unreserved left (70 g of 80 g" in reason


@pytest.mark.parametrize("method", SOLVERS)
def test_what_monday_takes_is_gone_on_tuesday(method: str) -> None:
    # 80 g on Monday, 40 g on Tuesday (40 g reserved for Tuesday), no delivery in between.
    # Two doses of 35 g (window Mon..Tue): Monday alone holds both, a per-day budget would
    # place them anyhow; the shelf holds one, or Tuesday's reservations go short.
    stock = (DayStock(GAM, MON, Decimal(80)), DayStock(GAM, TUE, Decimal(40)))
    result = SOLVERS[method](prob(req("a"), req("b"), stock=stock))
    assert list(days_of(result).values()) == [MON]
    (_, reason) = result.unplaced[0]
    # Monday's own 45 g left are not the limit, Tuesday's 5 g are
    assert (
        f"{MON}: Gammagard Liquid: 5 g in date and unreserved left by {TUE} (35 g of 40 g go to "
        "other proposals); the dose is 35 g"
    ) in reason


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

    # Monday: c 35 g > 0 g; Tuesday: a, b 70 g + Monday's 35 g > 40 g; Wednesday: nothing
    # placed, but the 105 g placed before are gone from its 80 g (nothing expired)
    found = violations(p, [at("a", TUE, "C1"), at("b", TUE, "C2"), at("c", MON, "C1")])
    assert found == [
        f"stock of {GAM} on {MON}: 35 g placed that day (c) and 0 g placed before, 0 g available",
        f"stock of {GAM} on {TUE}: 70 g placed that day (a, b) and 35 g placed before, "
        "40 g available",
        f"stock of {GAM} on {WED}: 0 g placed that day and 105 g placed before, 80 g available",
    ]
    # one on Tuesday (35 ≤ 40) and one on Wednesday (70 ≤ 80) hold; a third on Wednesday
    # would not (105 > 80), although Wednesday alone has 80 g
    assert violations(p, [at("a", TUE, "C1"), at("b", WED, "C1")]) == []
    assert violations(p, [at("a", TUE, "C1"), at("b", WED, "C1"), at("c", WED, "C2")]) == [
        f"stock of {GAM} on {WED}: 70 g placed that day (b, c) and 35 g placed before, "
        "80 g available"
    ]
    # a day without a figure for the product has none
    other = prob(req("h", "5", HIZ))
    assert violations(other, [at("h", TUE, "C1")]) == [
        f"stock of {HIZ} on {TUE}: none known, h placed"
    ]
    # without a budget the same overdraw is no violation
    free = prob(req("a"), req("b"), req("c"), stock=None)
    assert violations(free, [at("a", TUE, "C1"), at("b", TUE, "C2"), at("c", MON, "C1")]) == []


@pytest.mark.parametrize("method", SOLVERS)
def test_a_short_dated_lot_is_used_before_it_expires(method: str) -> None:
    # 70 g on Monday in a lot whose last day is Monday: Tuesday has 0 g, the 70 g expiring at
    # its start. A 35 g dose on Monday takes from that lot, so Tuesday loses nothing it would
    # have had: the dose may go on Monday, and a second one as well (70 ≤ 70); a third not.
    stock = (
        DayStock(GAM, MON, Decimal(70)),
        DayStock(GAM, TUE, Decimal(0), expiring=Decimal(70)),
        DayStock(GAM, WED, Decimal(0)),
    )
    p = prob(req("a"), req("b"), req("c"), stock=stock)
    result = SOLVERS[method](p)
    assert sorted(days_of(result).values()) == [MON, MON]
    assert violations(p, result.placements) == []
    # without the expiry the same draws would leave Tuesday 70 g short
    kept = prob(req("a"), req("b"), stock=(*stock[:1], DayStock(GAM, TUE, Decimal(0))))
    assert violations(kept, result.placements[:2]) != []


def test_the_optimiser_shares_the_stock_better_than_earliest_fit() -> None:
    # long: 35 g, 180 min, due Tue, window Tue..Wed; short: 35 g, 120 min, due Tue, Tuesday only.
    # Tuesday's 40 g holds one of them. Earliest fit takes the longer first: long on Tuesday,
    # short has no day (Tue 5 g left). The optimiser places both: short Tue, long Wed (70 ≤ 80).
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
