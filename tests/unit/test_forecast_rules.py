"""Stock forecast simulation, reorder arithmetic and purchase-order rules, with
the hand-worked examples of docs/forecast-and-reorder.md: the arithmetic is in the comments."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import FailedPrecondition
from services.inventory.domain.forecast import (
    Bucket,
    ForecastInputs,
    Policy,
    explain,
    low_stock,
    reorder,
    simulate,
    validate_policy,
)
from services.inventory.domain.purchasing import (
    OrderState,
    check_open,
    check_remaining,
    state_after_receipt,
)

TODAY = dt.date(2026, 11, 24)


def day(n: int) -> dt.date:
    return TODAY + dt.timedelta(days=n)


def test_simulation_expires_then_arrives_then_consumes_first_expiry_first() -> None:
    inputs = ForecastInputs(
        start=TODAY,
        days=5,
        stock=(Bucket(D(40), day(1)), Bucket(D(100), dt.date(2027, 6, 30))),  # A and B
        arrivals={dt.date(2026, 11, 20): D(20), day(2): D(50)},  # the first is overdue
        reserved={TODAY: D(30), day(2): D(20)},
        forecast={day(1): D(5), day(3): D(200)},
    )
    f = simulate(inputs)
    rows = [
        (d.in_date_on_hand, d.arriving, d.expiring, d.projected_available, d.shortfall)
        for d in f.days
    ]
    assert rows == [
        # 11-24: hold A 40 + B 100 = 140; the overdue 20 g lands today; 30 g reserved comes
        # from A (first expiry): A 10, B 100, delivery 20 → 130
        (D(140), D(20), D(0), D(130), D(0)),
        # 11-25: A's last usable day: 5 g forecast from A → A 5, B 100, delivery 20 → 125
        (D(130), D(0), D(0), D(125), D(0)),
        # 11-26: A's 5 g expires (on hand 125 − 5 = 120); 50 g arrive; 20 g reserved comes
        # from B (2027 expires before a delivery of unknown expiry): B 80 + 70 → 150
        (D(120), D(50), D(5), D(150), D(0)),
        # 11-27: 200 g forecast, only 150 g held: shortfall 50, nothing left
        (D(150), D(0), D(0), D(0), D(50)),
        # 11-28: nothing held, nothing wanted: a shortfall is not carried over
        (D(0), D(0), D(0), D(0), D(0)),
    ]
    assert f.first_stockout() == day(3)
    assert f.days[0].reserved_demand == D(30) and f.days[3].forecast_demand == D(200)


def test_stock_out_of_date_on_the_start_day_is_not_counted() -> None:
    f = simulate(
        ForecastInputs(TODAY, 2, (Bucket(D(10), day(-1)), Bucket(D(5), TODAY)), {}, {}, {})
    )
    # yesterday's 10 g is not in date today (the expiry job's business, not "expiring");
    # today's 5 g is usable today and expires into day 2
    assert [(d.in_date_on_hand, d.expiring) for d in f.days] == [(D(5), D(0)), (D(0), D(5))]


@given(
    stock=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 40)), max_size=6),
    demand=st.lists(st.integers(0, 200), min_size=30, max_size=30),
    arrivals=st.dictionaries(st.integers(0, 29), st.integers(1, 300), max_size=4),
)
def test_grams_are_conserved(
    stock: list[tuple[int, int]], demand: list[int], arrivals: dict[int, int]
) -> None:
    """Whatever the inputs: start + arrivals = consumed + expired + end, and demand =
    consumed + shortfall, every day."""
    f = simulate(
        ForecastInputs(
            TODAY,
            30,
            tuple(Bucket(D(g), day(n)) for g, n in stock),
            {day(n): D(g) for n, g in arrivals.items()},
            {day(n): D(g) for n, g in enumerate(demand)},
            {},
        )
    )
    for d in f.days:
        consumed = d.in_date_on_hand + d.arriving - d.projected_available
        assert consumed + d.shortfall == d.reserved_demand + d.forecast_demand
        assert consumed >= 0 and d.shortfall >= 0
    for before, after in zip(f.days, f.days[1:], strict=False):
        assert after.in_date_on_hand == before.projected_available - after.expiring


# --- reorder: the worked example of docs/forecast-and-reorder.md ------------------------------

POLICY = Policy(
    lead_time_days=7,
    safety_stock_grams=D(20),
    review_period_days=7,
    order_presentation_grams=D(10),
    case_vials=4,
    maximum_grams=D(0),
)
EXAMPLE = ForecastInputs(
    start=TODAY,
    days=14,
    # lot A: 3 × 10 g usable to 11-26; lot B: 5 × 10 g usable to 2027-03-31
    stock=(Bucket(D(30), day(2)), Bucket(D(50), dt.date(2027, 3, 31))),
    arrivals={day(7): D(40)},  # an open order: 4 × 10 g expected 12-01
    reserved={day(1): D(25), day(8): D(25)},  # booked infusions 11-25 and 12-02
    forecast={day(3): D(20), day(6): D(20), day(10): D(20), day(13): D(20)},
)


def test_worked_reorder_example() -> None:
    f = simulate(EXAMPLE)
    # 11-24 80 | 11-25 25 g from A → A 5, B 50 = 55 | 11-26 55 | 11-27 A's 5 g expires, 20 g
    # from B → 30 | 11-30 20 g → B 10 | 12-01 +40 g → 50 | 12-02 25 g: B 10 + 15 of the
    # delivery → 25 | 12-04 20 g → 5 | 12-07 20 g wanted, 5 g held: shortfall 15
    assert [d.projected_available for d in f.days] == [
        D(x) for x in (80, 55, 55, 30, 30, 30, 10, 50, 25, 25, 5, 5, 5, 0)
    ]
    assert f.first_stockout() == day(13) and f.days[13].shortfall == D(15)
    order = reorder(POLICY, EXAMPLE, f, TODAY)
    assert order is not None
    # cover 7 + 7 = 14 days: 11-24 .. 12-07
    assert order.cover_until == day(13)
    # demand = reserved 25 + 25 + forecast 4 × 20 = 130 g
    assert order.demand == D(130)
    # position = on hand 80 + on order 40 − expiring unused 5 = 115 g
    assert (order.on_hand, order.on_order, order.expiring, order.position) == (80, 40, 5, 115)
    # need = 130 + safety 20 − 115 = 35 g → 3.5 vials → whole cases of 4 × 10 g: 1 case
    assert order.need == D(35)
    assert (order.vials, order.grams, order.capped) == (4, D(40), False)
    # the first stockout it prevents: 12-07; order by 12-07 − 7 days lead time = 11-30
    assert (order.stockout_date, order.order_by_date) == (day(13), day(6))
    text = explain(order, POLICY)
    assert text.startswith("Order 4 × 10 g vials (40 g, 1 case of 4).")
    assert "5 g will expire unused" in text and "order by 2026-11-30" in text


def test_maximum_caps_to_whole_cases_and_never_above() -> None:
    f = simulate(EXAMPLE)
    more_safety = dataclasses.replace(POLICY, safety_stock_grams=D(60), maximum_grams=D(160))
    # need = 130 + 60 − 115 = 75 g → 2 cases (80 g); room = 160 − 80 on hand − 40 on order
    # = 40 g → 1 case fits
    order = reorder(more_safety, EXAMPLE, f, TODAY)
    assert order is not None and (order.vials, order.capped) == (4, True)
    assert "maximum" in explain(order, more_safety)
    # room 140 − 120 = 20 g: not one case of 40 g fits, so no suggestion
    assert (
        reorder(dataclasses.replace(more_safety, maximum_grams=D(140)), EXAMPLE, f, TODAY) is None
    )


def test_no_order_when_the_position_covers_the_interval() -> None:
    rich = dataclasses.replace(EXAMPLE, undated_arrivals=D(35))
    # position 115 + 35 undated on order = 150 = demand 130 + safety 20: need 0
    assert reorder(POLICY, rich, simulate(rich), TODAY) is None


def test_an_order_that_only_restores_safety_stock_has_no_stockout() -> None:
    calm = dataclasses.replace(EXAMPLE, forecast={day(3): D(20)})
    # demand 50 + safety 20 − position (80 + 40 − 5 = 115) < 0 → nothing; a 100 g safety
    # stock: 50 + 100 − 115 = 35 → 1 case, and the forecast shows no stockout
    policy = dataclasses.replace(POLICY, safety_stock_grams=D(100))
    order = reorder(policy, calm, simulate(calm), TODAY)
    assert order is not None and order.stockout_date is None and order.order_by_date is None
    assert "restores the safety stock" in explain(order, policy)


def test_a_stockout_inside_the_lead_time_says_expedite() -> None:
    thin = ForecastInputs(TODAY, 14, (Bucket(D(10), day(300)),), {}, {}, {day(1): D(20)})
    order = reorder(
        dataclasses.replace(POLICY, safety_stock_grams=D(0)), thin, simulate(thin), TODAY
    )
    # need 20 − 10 = 10 g → 1 case; stockout 11-25, order by 11-18: already late
    assert order is not None and order.stockout_date == day(1) and order.order_by_date == day(-6)
    assert "expedite" in explain(order, POLICY)


def test_a_later_review_day_counts_the_stock_it_will_have() -> None:
    f = simulate(dataclasses.replace(EXAMPLE, days=20))
    order = reorder(POLICY, EXAMPLE, f, day(6))
    # from 11-30: on hand at its start 30 g (80 − 25 − 5 expired − 20); on order 40 g (lands
    # 12-01); window 11-30 .. 12-13 demand 20 + 25 + 20 + 20 = 85 g; nothing else expires
    # need = 85 + 20 − 70 = 35 → 1 case
    assert order is not None
    assert (order.on_hand, order.on_order, order.demand, order.need) == (30, 40, 85, 35)


def test_the_forecast_must_cover_the_interval() -> None:
    short = dataclasses.replace(EXAMPLE, days=10)
    with pytest.raises(ValueError):
        reorder(POLICY, short, simulate(short), TODAY)


def test_policy_validation_names_each_field() -> None:
    bad = Policy(-1, D(-5), 0, D(7), 0, D(-1))
    fields = [x.field for x in validate_policy(bad, {D(5), D(10)}, "policy").items]
    assert fields == [
        "policy.lead_time_days",
        "policy.review_period_days",
        "policy.safety_stock_grams",
        "policy.order_presentation_grams",
        "policy.case_vials",
        "policy.maximum_grams",
    ]
    below = dataclasses.replace(POLICY, maximum_grams=D(10))  # under the 20 g safety stock
    assert [x.field for x in validate_policy(below, {D(10)}, "p").items] == ["p.maximum_grams"]
    assert not validate_policy(POLICY, {D(10)}, "p")
    assert low_stock(D(19), POLICY) and not low_stock(D(20), POLICY)


def test_purchase_order_rules() -> None:
    assert state_after_receipt([0, 0]) is OrderState.RECEIVED
    assert state_after_receipt([0, 3]) is OrderState.PARTIALLY_RECEIVED
    check_remaining("po", {"a": 5}, {"a": 5})
    with pytest.raises(FailedPrecondition) as over:
        check_remaining("po", {"a": 5, "b": 1}, {"a": 6, "b": 1})
    assert [v.subject for v in over.value.violations] == ["purchaseOrders/po/lines/a"]
    check_open("po", OrderState.PARTIALLY_RECEIVED, "received")
    for final in (OrderState.RECEIVED, OrderState.CANCELLED):
        with pytest.raises(FailedPrecondition):
            check_open("po", final, "cancelled")
