"""The console actions' form reading (services/console/actions.py): the lots at the chair,
scanned or typed."""

from __future__ import annotations

import pytest
from starlette.exceptions import HTTPException

from services.console.actions import scanned_lots


def test_a_scan_goes_as_the_element_string_and_a_typed_lot_as_the_lot_number() -> None:
    lots = scanned_lots(
        {
            "lot_1": "(01)05412345678908(17)280630(10)LOT-7",
            "vials_1": "3",
            "lot_2": " P-123 ",
            "lot_3": "",
            "vials_3": "9",
        },
        "prod-1",
    )
    assert [(x.gs1_element_string, x.lot_number, x.vials, x.product_id) for x in lots] == [
        ("(01)05412345678908(17)280630(10)LOT-7", "", 3, "prod-1"),
        ("", "P-123", 1, "prod-1"),  # vials default to one; an empty row is no lot
    ]


def test_a_scanner_s_raw_string_with_fnc1_is_a_scan() -> None:
    raw = "010541234567890810LOT-7\x1d17280630"  # GTIN, lot, FNC1, expiry
    (lot,) = scanned_lots({"lot_1": raw}, "")
    assert lot.gs1_element_string == raw and not lot.lot_number


def test_unreadable_vials_are_refused() -> None:
    with pytest.raises(HTTPException) as refused:
        scanned_lots({"lot_1": "P-1", "vials_1": "two"}, "")
    assert refused.value.status_code == 400
