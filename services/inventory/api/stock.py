"""Lots, movements and receipts: protobuf ↔ the stock domain. No rules live here."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from infusion.inventory.v1 import inventory_pb2 as pb
from services.common.convert import (
    decimal_str,
    from_date,
    from_datetime,
    from_money,
    parse_date,
    parse_decimal,
    to_money,
)
from services.common.errors import Violations
from services.common.etag import etag_for
from services.common.gs1 import Scan, ScanError, read_scan
from services.inventory.domain.stock import Lot, LotState, Movement, MovementKind, Receipt
from services.inventory.usecases.stock import ProductLevel, Reconciliation

LOT_STATE: dict[LotState, Any] = {s: pb.LotState.Value(f"LOT_STATE_{s.value}") for s in LotState}
MOVEMENT_KIND: dict[MovementKind, Any] = {
    k: pb.MovementKind.Value(f"MOVEMENT_KIND_{k.value}") for k in MovementKind
}
LOT_STATE_IN = {v: k for k, v in LOT_STATE.items()}


def lot_out(lot: Lot, today: dt.date) -> pb.Lot:
    """A lot as its site sees it on ``today``: "available" counts only vials in date then."""
    r = lot
    return pb.Lot(
        id=r.id,
        site_id=r.site_id,
        product_id=r.product_id,
        presentation_grams=decimal_str(r.presentation_grams),
        gtin=r.gtin,
        lot_number=r.lot_number,
        expiry_date=from_date(r.expiry_date),
        state=LOT_STATE[r.state],
        unit_cost=to_money(r.unit_cost, r.currency),
        supplier=r.supplier,
        on_hand_vials=lot.balance.on_hand,
        reserved_vials=lot.balance.reserved,
        available_vials=lot.available(today),
        on_hand_grams=decimal_str(lot.balance.on_hand * r.presentation_grams),
        etag=etag_for(r.revision),
        create_time=from_datetime(r.created_at),
        storage_unit_id=r.storage_unit_id,
    )


def movement_out(m: Movement, reversed_by: str = "") -> pb.StockMovement:
    return pb.StockMovement(
        id=m.id,
        lot_id=m.lot_id,
        site_id=m.site_id,
        kind=MOVEMENT_KIND[m.kind],
        on_hand_delta_vials=m.on_hand_delta,
        reserved_delta_vials=m.reserved_delta,
        unit_cost=to_money(m.unit_cost, m.currency),
        reason_code=m.reason_code,
        note=m.note,
        actor=m.actor,
        request_id=m.request_id,
        create_time=from_datetime(m.created_at),
        reverses_movement_id=m.reverses_movement_id,
        reversed_by_movement_id=reversed_by,
    )


def receipt_in(request: pb.ReceiveStockRequest) -> tuple[Receipt, Scan | None]:
    v = Violations()
    grams = parse_decimal(request.presentation_grams, "presentation_grams", v, required=False)
    expiry = parse_date(request.expiry_date, "expiry_date", v, required=False)
    scan = None
    if request.gs1_element_string:
        try:
            scan = read_scan(request.gs1_element_string)
        except ScanError as error:
            v.add("gs1_element_string", str(error))
    else:
        if not request.product_id:
            v.add("product_id", "is required (or scan the GS1 element string)")
        if grams is None:
            v.add("presentation_grams", "is required (or scan the GS1 element string)")
        if expiry is None:
            v.add("expiry_date", "is required (or scan the GS1 element string)")
    if not request.HasField("unit_cost"):
        v.add("unit_cost", "is required: the cost of one vial, with its currency")
    v.raise_if_any()
    return Receipt(
        site_id=request.site_id,
        product_id=request.product_id,
        presentation_grams=grams or Decimal(0),
        lot_number=request.lot_number.strip(),
        expiry_date=expiry or dt.date.min,
        vials=request.vials,
        unit_cost=from_money(request.unit_cost),
        currency=request.unit_cost.currency_code,
        supplier=request.supplier,
        purchase_order_id=request.purchase_order_id,
        storage_unit_id=request.storage_unit_id,
    ), scan


def levels_out(
    levels: list[ProductLevel], lots: list[Lot], day: dt.date
) -> pb.GetStockLevelsResponse:
    return pb.GetStockLevelsResponse(
        products=[
            pb.ProductStock(
                product_id=level.product_id,
                on_hand_vials=level.on_hand_vials,
                reserved_vials=level.reserved_vials,
                available_vials=level.available_vials,
                on_hand_grams=decimal_str(level.on_hand_grams),
                available_grams=decimal_str(level.available_grams),
            )
            for level in levels
        ],
        lots=[lot_out(lot, day) for lot in lots],
    )


def reconciliation_out(report: Reconciliation) -> pb.ReconcileStockResponse:
    return pb.ReconcileStockResponse(
        lots_checked=report.lots_checked,
        movements_checked=report.movements_checked,
        discrepancies=[
            pb.LotDiscrepancy(
                lot_id=lot_id,
                projected_on_hand_vials=projected.on_hand,
                ledger_on_hand_vials=ledger.on_hand,
                projected_reserved_vials=projected.reserved,
                ledger_reserved_vials=ledger.reserved,
            )
            for lot_id, projected, ledger in report.discrepancies
        ],
    )
