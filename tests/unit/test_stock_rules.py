"""Lot states, ledger balances, receipt validation and GS1 scans."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import FailedPrecondition
from services.common.gs1 import ScanError, read_scan
from services.inventory.domain.stock import (
    TRANSITIONS,
    Balance,
    LotState,
    Receipt,
    check_balance,
    check_transition,
    state_after_quantity_change,
    validate_receipt,
)

TODAY = dt.date(2026, 11, 24)


def receipt(**kw: object) -> Receipt:
    fields: dict[str, object] = dict(
        site_id="site",
        product_id="p",
        presentation_grams=D(10),
        lot_number="L1",
        expiry_date=dt.date(2028, 6, 30),
        vials=12,
        unit_cost=D("950.00"),
        currency="GBP",
    )
    fields.update(kw)
    return Receipt(**fields)  # type: ignore[arg-type]


def test_a_good_receipt_has_no_violations() -> None:
    assert not validate_receipt(receipt(), TODAY, known_expiry=None)
    assert not validate_receipt(receipt(), TODAY, known_expiry=dt.date(2028, 6, 30))


def test_each_bad_field_of_a_receipt_is_reported() -> None:
    bad = receipt(vials=0, expiry_date=dt.date(2026, 11, 23), unit_cost=D(-1), currency="gbp")
    fields = [v.field for v in validate_receipt(bad, TODAY, known_expiry=None).items]
    assert fields == ["vials", "unit_cost", "unit_cost.currency_code", "expiry_date"]


def test_a_known_lot_number_with_another_expiry_is_refused() -> None:
    result = validate_receipt(receipt(), TODAY, known_expiry=dt.date(2028, 1, 31))
    assert [v.field for v in result.items] == ["expiry_date"]


def test_recalled_is_final_and_expired_can_only_be_recalled() -> None:
    assert TRANSITIONS[LotState.RECALLED] == frozenset()
    check_transition("l", LotState.EXPIRED, LotState.RECALLED)
    with pytest.raises(FailedPrecondition) as refused:
        check_transition("l", LotState.EXPIRED, LotState.AVAILABLE)
    assert refused.value.violations[0].type == "LOT_STATE_TRANSITION"


def test_quantity_drives_depleted_and_back() -> None:
    assert state_after_quantity_change(LotState.AVAILABLE, Balance(0, 0)) is LotState.DEPLETED
    assert state_after_quantity_change(LotState.DEPLETED, Balance(3, 0)) is LotState.AVAILABLE
    assert state_after_quantity_change(LotState.QUARANTINED, Balance(0, 0)) is LotState.QUARANTINED


def test_available_only_from_an_available_lot_in_date() -> None:
    b = Balance(on_hand=10, reserved=4)
    assert b.available(LotState.AVAILABLE, dt.date(2027, 1, 1), TODAY) == 6
    assert b.available(LotState.QUARANTINED, dt.date(2027, 1, 1), TODAY) == 0
    assert b.available(LotState.AVAILABLE, dt.date(2026, 11, 23), TODAY) == 0


@given(st.lists(st.tuples(st.integers(-20, 20), st.integers(-20, 20)), max_size=30))
def test_no_accepted_sequence_of_movements_leaves_a_bad_balance(
    moves: list[tuple[int, int]],
) -> None:
    balance = Balance()
    for on_hand, reserved in moves:
        proposed = balance.plus(on_hand, reserved)
        try:
            check_balance("l", proposed)
        except FailedPrecondition:
            continue  # refused: the ledger keeps the previous balance
        balance = proposed
        assert 0 <= balance.reserved <= balance.on_hand


def test_scan_with_fnc1_and_bracketed_forms() -> None:
    # GTIN 05412345678908: check digit 8 (GS1 mod-10); expiry 30 Jun 2028; lot 2RX4471
    raw = read_scan("010541234567890817280630102RX4471\x1d21SER123")
    assert (raw.gtin, raw.expiry_date, raw.lot_number, raw.serial) == (
        "05412345678908",
        dt.date(2028, 6, 30),
        "2RX4471",
        "SER123",
    )
    hri = read_scan("(01)05412345678908(17)280630(10)LOT9")
    assert (hri.gtin, hri.lot_number) == ("05412345678908", "LOT9")


@pytest.mark.parametrize(
    ("text", "why"),
    [("hello", "not a GS1"), ("(10)LOT9", "no GTIN"), ("0105412345678909", "check digit")],
)
def test_bad_scans_say_why(text: str, why: str) -> None:
    with pytest.raises(ScanError, match=why):
        read_scan(text)
