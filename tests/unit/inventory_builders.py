"""Inventory domain objects for the fast tests: a lot of 10 g vials at "site", in date until
mid-2027, with whatever fields a test changes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D
from typing import Any

from services.inventory.domain.stock import Balance, Lot, LotState

CREATED = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)


def lot(lot_id: str = "lot-a", **changes: Any) -> Lot:
    fields: dict[str, Any] = dict(
        id=lot_id,
        site_id="site",
        product_id="privigen",
        presentation_grams=D(10),
        gtin="",
        lot_number=f"L-{lot_id}",
        expiry_date=dt.date(2027, 6, 30),
        state=LotState.AVAILABLE,
        unit_cost=D(500),
        currency="GBP",
        supplier="",
        purchase_order_id="",
        storage_unit_id="",
        balance=Balance(10, 3),
        revision=1,
        created_at=CREATED,
    )
    fields.update(changes)
    return Lot(**fields)
