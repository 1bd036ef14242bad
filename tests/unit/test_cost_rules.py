"""Cost report rules: pricing grams from a lot's own cost per vial, rounding,
reversals, grouping, the site-local period and the valuation, with the arithmetic by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import Violations
from services.inventory.domain.cost import (
    CostKind,
    CostLine,
    CostMovement,
    Grouping,
    Holding,
    ProductValue,
    Recipient,
    cost_lines,
    cost_of,
    period_bounds,
    round_money,
    validate_period,
    valuation,
)

UTC = dt.UTC


def dispense(grams: str, **kw: object) -> CostMovement:
    return _movement(CostKind.DISPENSE, grams, **kw)


def waste(grams: str, **kw: object) -> CostMovement:
    return _movement(CostKind.WASTE, grams, **kw)


def _movement(kind: CostKind, grams: str, **kw: object) -> CostMovement:
    fields: dict[str, object] = dict(
        kind=kind,
        product_id="gammagard",
        grams=D(grams),
        vial_grams=D(10),
        vial_cost=D("340.00"),  # £34/g × 10 g (docs/clinical-rules.md#cost)
        currency="GBP",
        reservation_id="",
    )
    fields.update(kw)
    return CostMovement(**fields)  # type: ignore[arg-type]


# --- pricing ---------------------------------------------------------------------------------


def test_grams_cost_their_share_of_the_vial_and_a_split_vial_adds_up() -> None:
    # 10 g vial at £340: 7.3 g given = 7.3 × 340 / 10 = £248.20; 2.7 g thrown = £91.80;
    # together the whole vial, £340.00.
    given_cost = cost_of(D("7.3"), D(10), D(340), "GBP")
    wasted_cost = cost_of(D("2.7"), D(10), D(340), "GBP")
    assert (given_cost, wasted_cost) == (D("248.20"), D("91.80"))
    assert given_cost + wasted_cost == D("340.00")


def test_costs_round_half_up_to_the_currencys_minor_unit() -> None:
    # 1 g of a 30 g vial at £1000 = 33.333… → £33.33; 2 g = 66.666… → £66.67;
    # 0.5 g of a 2.5 g vial at £85.05 = 17.01 exactly; 0.25 g = 8.505 → £8.51 (half up)
    assert cost_of(D(1), D(30), D(1000), "GBP") == D("33.33")
    assert cost_of(D(2), D(30), D(1000), "GBP") == D("66.67")
    assert cost_of(D("0.5"), D("2.5"), D("85.05"), "GBP") == D("17.01")
    assert cost_of(D("0.25"), D("2.5"), D("85.05"), "GBP") == D("8.51")
    # yen has no minor unit: 1 g of a 30 g vial at ¥100,000 = 3333.3 → ¥3333
    assert cost_of(D(1), D(30), D(100000), "JPY") == D(3333)
    assert round_money(D("1.0005"), "KWD") == D("1.001")  # three decimals


# --- lines, totals, reversals ----------------------------------------------------------------


def test_by_product_dispensed_and_wasted_grams_and_their_cost() -> None:
    movements = [
        # patient A: 27.3 g from 10 g vials (3 opened), 2.7 g of the last one wasted
        dispense("27.3", reservation_id="r1"),  # 27.3 × 34 = £928.20
        waste("2.7", reservation_id="r1"),  # 2.7 × 34 = £91.80
        # a whole 5 g vial of another product dropped: 5 × 180 / 5 = £180.00
        waste("5", product_id="privigen", vial_grams=D(5), vial_cost=D(180)),
    ]
    lines, totals = cost_lines(movements, Grouping.PRODUCT, {})
    assert lines == [
        CostLine("gammagard", "GBP", D("27.3"), D("928.20"), D("2.7"), D("91.80")),
        CostLine("privigen", "GBP", D(0), D(0), D(5), D("180.00")),
    ]
    # totals: 27.3 g / £928.20 given; 2.7 + 5 = 7.7 g / 91.80 + 180 = £271.80 wasted
    assert totals == [CostLine("", "GBP", D("27.3"), D("928.20"), D("7.7"), D("271.80"))]


def test_a_reversed_movement_counts_for_nothing() -> None:
    movements = [
        dispense("20", reservation_id="r1"),  # £680
        waste("10", reversed=True),  # a vial written off by mistake, then reversed: £0
        dispense("10", reservation_id="r2", reversed=True),  # dispense undone: £0
    ]
    lines, totals = cost_lines(movements, Grouping.PRODUCT, {})
    assert lines == [CostLine("gammagard", "GBP", D(20), D("680.00"), D(0), D(0))]
    assert totals[0].wasted_grams == 0 and totals[0].dispensed_cost == D("680.00")
    # everything reversed: no line at all (not a line of zeros)
    assert cost_lines([waste("10", reversed=True)], Grouping.PRODUCT, {}) == ([], [])


def test_by_patient_and_appointment_with_unattributed_whole_vial_waste() -> None:
    who = {
        "r1": Recipient("patient-a", "appt-1"),
        "r2": Recipient("patient-a", "appt-2"),
        "r3": Recipient("patient-b", "appt-3"),
    }
    movements = [
        dispense("30", reservation_id="r1"),  # A/appt-1: £1020
        dispense("25", reservation_id="r2"),  # A/appt-2: 25 × 34 = £850
        waste("5", reservation_id="r2"),  # A/appt-2: £170 wasted of an opened vial
        dispense("40", reservation_id="r3"),  # B/appt-3: £1360
        waste("10"),  # RecordWaste of a whole vial: nobody's, £340
    ]
    by_patient, totals = cost_lines(movements, Grouping.PATIENT, who)
    assert by_patient == [
        CostLine("", "GBP", D(0), D(0), D(10), D("340.00")),
        # A: 30 + 25 = 55 g, 1020 + 850 = £1870; wasted 5 g, £170
        CostLine("patient-a", "GBP", D(55), D("1870.00"), D(5), D("170.00")),
        CostLine("patient-b", "GBP", D(40), D("1360.00"), D(0), D(0)),
    ]
    by_appointment, same_totals = cost_lines(movements, Grouping.APPOINTMENT, who)
    assert [x.key for x in by_appointment] == ["", "appt-1", "appt-2", "appt-3"]
    assert by_appointment[2] == CostLine("appt-2", "GBP", D(25), D("850.00"), D(5), D("170.00"))
    # the same grams and money whichever way they are grouped: 95 g / £3230; 15 g / £510
    by_product, product_totals = cost_lines(movements, Grouping.PRODUCT, who)
    assert totals == same_totals == product_totals
    assert totals == [CostLine("", "GBP", D(95), D("3230.00"), D(15), D("510.00"))]


def test_currencies_are_never_added_together() -> None:
    movements = [
        dispense("10"),  # £340
        dispense("10", vial_cost=D(700), currency="USD"),  # $700
        dispense("5", vial_cost=D(700), currency="USD"),  # $350
    ]
    lines, totals = cost_lines(movements, Grouping.PRODUCT, {})
    assert [(x.key, x.currency, x.dispensed_cost) for x in lines] == [
        ("gammagard", "GBP", D("340.00")),
        ("gammagard", "USD", D("1050.00")),
    ]
    assert [(x.currency, x.dispensed_grams, x.dispensed_cost) for x in totals] == [
        ("GBP", D(10), D("340.00")),
        ("USD", D(15), D("1050.00")),
    ]


_amounts = st.decimals(min_value=D("0.1"), max_value=D(60), places=1)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(CostKind)),
            _amounts,
            st.sampled_from(["", "r1", "r2", "r3"]),
            st.sampled_from(["p1", "p2"]),
            st.sampled_from([D(5), D(10), D(30)]),
            st.booleans(),
        ),
        max_size=30,
    )
)
def test_totals_are_the_sum_of_lines_and_the_same_for_every_grouping(
    rows: list[tuple[CostKind, D, str, str, D, bool]],
) -> None:
    who = {"r1": Recipient("a", "1"), "r2": Recipient("a", "2"), "r3": Recipient("b", "3")}
    movements = [
        _movement(kind, str(g), reservation_id=r, product_id=p, vial_grams=size, reversed=rev)
        for kind, g, r, p, size, rev in rows
    ]
    results = {g: cost_lines(movements, g, who) for g in Grouping}
    for lines, totals in results.values():
        for total in totals:
            mine = [x for x in lines if x.currency == total.currency]
            assert total.dispensed_cost == sum((x.dispensed_cost for x in mine), D(0))
            assert total.wasted_grams == sum((x.wasted_grams for x in mine), D(0))
    assert len({tuple(totals) for _, totals in results.values()}) == 1
    kept = [m for m in movements if not m.reversed]
    expected = sum((m.grams for m in kept if m.kind is CostKind.WASTE), D(0))
    assert sum((t.wasted_grams for t in results[Grouping.PRODUCT][1]), D(0)) == expected


# --- the period ------------------------------------------------------------------------------


def _period(start: dt.date | None, end: dt.date | None) -> list[str]:
    v = Violations()
    validate_period(start, end, v)
    return [f"{x.field}: {x.description}" for x in v.items]


def test_period_must_run_forwards_and_cover_at_most_366_days() -> None:
    assert _period(dt.date(2026, 11, 1), dt.date(2026, 11, 1)) == []  # one day
    assert _period(dt.date(2026, 11, 2), dt.date(2026, 11, 1)) == [
        "end_date: 2026-11-01 is before start_date 2026-11-02"
    ]
    # 2028 is a leap year: 1 Jan–31 Dec is 366 days, allowed; one more day is not
    assert _period(dt.date(2028, 1, 1), dt.date(2028, 12, 31)) == []
    assert _period(dt.date(2028, 1, 1), dt.date(2029, 1, 1)) == [
        "end_date: the period is 367 days; at most 366 are allowed"
    ]
    assert _period(None, dt.date(2026, 1, 1)) == []  # the missing field is the parser's report


D_ = dt.date
T_ = dt.datetime


@pytest.mark.parametrize(
    ("zone", "day", "since", "until"),
    [
        # London in winter is UTC: the day is 00:00Z–24:00Z
        ("Europe/London", D_(2026, 11, 24), T_(2026, 11, 24), T_(2026, 11, 25)),
        # clocks go forward at 01:00 GMT on 29 March 2026: a 23-hour day ending 23:00Z
        ("Europe/London", D_(2026, 3, 29), T_(2026, 3, 29), T_(2026, 3, 29, 23)),
        # clocks go back on 25 October 2026: midnight BST is 23:00Z the day before; 25 hours
        ("Europe/London", D_(2026, 10, 25), T_(2026, 10, 24, 23), T_(2026, 10, 26)),
        # Santiago springs forward at local midnight on 6 Sept 2026 (00:00 → 01:00): the day
        # opens at the change, 04:00Z, and closes at midnight -03, 03:00Z next day
        ("America/Santiago", D_(2026, 9, 6), T_(2026, 9, 6, 4), T_(2026, 9, 7, 3)),
    ],
)
def test_local_days_become_utc_instants(
    zone: str, day: dt.date, since: dt.datetime, until: dt.datetime
) -> None:
    assert period_bounds(day, day, ZoneInfo(zone)) == (
        since.replace(tzinfo=UTC),
        until.replace(tzinfo=UTC),
    )


# --- valuation -------------------------------------------------------------------------------


def test_valuation_uses_each_lots_own_cost() -> None:
    values, totals = valuation(
        [
            Holding("gammagard", 3, D(10), D("340.00"), "GBP"),  # 3 × 340 = £1020
            Holding("gammagard", 2, D(5), D("175.50"), "GBP"),  # 2 × 175.50 = £351
            Holding("privigen", 0, D(10), D("999"), "GBP"),  # nothing left: not listed
            Holding("privigen", 4, D(20), D("700"), "USD"),  # 4 × 700 = $2800
        ]
    )
    assert values == [
        # 5 vials, 3 × 10 + 2 × 5 = 40 g, 1020 + 351 = £1371
        ProductValue("gammagard", "GBP", 5, D(40), D("1371.00")),
        ProductValue("privigen", "USD", 4, D(80), D("2800.00")),
    ]
    assert totals == {"GBP": D("1371.00"), "USD": D("2800.00")}
