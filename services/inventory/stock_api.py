"""The stock RPCs of InventoryService: protobuf ↔ stock use cases. No rules live here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

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
from services.common.errors import FieldViolation, InvalidArgument, Violations, required
from services.common.etag import etag_for
from services.common.pagination import page_request, split_page
from services.inventory.domain.gs1 import Scan, ScanError, read_scan
from services.inventory.domain.stock import LotState, MovementKind, Receipt
from services.inventory.stock_service import Actor, StockService
from services.inventory.store.models import MovementRow
from services.inventory.store.stock import LotView

R = TypeVar("R", bound=Message)

LOT_STATE: dict[LotState, Any] = {s: pb.LotState.Value(f"LOT_STATE_{s.value}") for s in LotState}
MOVEMENT_KIND: dict[MovementKind, Any] = {
    k: pb.MovementKind.Value(f"MOVEMENT_KIND_{k.value}") for k in MovementKind
}
_LOT_STATE_IN = {v: k for k, v in LOT_STATE.items()}


def lot_out(lot: LotView, today: dt.date) -> pb.Lot:
    r = lot.row
    return pb.Lot(
        id=r.id,
        site_id=r.site_id,
        product_id=r.product_id,
        presentation_grams=decimal_str(r.presentation_grams),
        gtin=r.gtin,
        lot_number=r.lot_number,
        expiry_date=from_date(r.expiry_date),
        state=LOT_STATE[lot.state],
        unit_cost=to_money(r.unit_cost, r.currency),
        supplier=r.supplier,
        on_hand_vials=lot.balance.on_hand,
        reserved_vials=lot.balance.reserved,
        available_vials=lot.balance.available(lot.state, r.expiry_date, today),
        on_hand_grams=decimal_str(lot.balance.on_hand * r.presentation_grams),
        etag=etag_for(r.revision),
        create_time=from_datetime(r.created_at),
        storage_unit_id=r.storage_unit_id,
    )


def movement_out(m: MovementRow, reversed_by: str = "") -> pb.StockMovement:
    return pb.StockMovement(
        id=m.id,
        lot_id=m.lot_id,
        site_id=m.site_id,
        kind=MOVEMENT_KIND[MovementKind(m.kind)],
        on_hand_delta_vials=m.on_hand_delta,
        reserved_delta_vials=m.reserved_delta,
        unit_cost=to_money(m.unit_cost, m.currency),
        reason_code=m.reason_code,
        note=m.note,
        actor=m.actor,
        request_id=m.request_id,
        create_time=from_datetime(m.created_at),
        reverses_movement_id=m.reverses_movement_id or "",
        reversed_by_movement_id=reversed_by,
    )


def _receipt_in(request: pb.ReceiveStockRequest) -> tuple[Receipt, Scan | None]:
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


class StockApi:
    """Mixed into InventoryApi; ``stock`` and ``_mutate`` come from it."""

    stock: StockService
    _mutate: Callable[..., Any]

    def _lot_out(self, lot: LotView) -> pb.Lot:
        """A lot as its site sees it: "available" counts only vials in date there today."""
        return lot_out(lot, self.stock.today(lot.row.site_id))

    def ReceiveStock(self, request: pb.ReceiveStockRequest, context: grpc.ServicerContext) -> Any:
        typed, scan = _receipt_in(request)
        receipt = self.stock.resolve_scan(typed, scan)
        actor = Actor(request.actor, "", request.request_id)

        def receive(session: Any) -> pb.ReceiveStockResponse:
            lot, movement = self.stock.receive(session, receipt, actor)
            return pb.ReceiveStockResponse(lot=self._lot_out(lot), movement=movement_out(movement))

        return self._mutate("ReceiveStock", request, pb.ReceiveStockResponse, receive)

    def GetLot(self, request: pb.GetLotRequest, context: grpc.ServicerContext) -> Any:
        lot = self.stock.get_lot(required(request.id, "id"))
        return pb.GetLotResponse(lot=self._lot_out(lot))

    def ListLots(self, request: pb.ListLotsRequest, context: grpc.ServicerContext) -> Any:
        state = _LOT_STATE_IN.get(request.state)
        scope = f"lots:{request.site_id}:{request.product_id}:{request.state}:{request.lot_number}"
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.stock.list_lots(
                request.site_id, request.product_id, state, request.lot_number, page
            ),
            page,
            lambda lot: [lot.row.expiry_date.isoformat(), lot.row.id],
            scope=scope,
        )
        return pb.ListLotsResponse(lots=[self._lot_out(r) for r in rows], next_page_token=token)

    def QuarantineLot(self, request: pb.QuarantineLotRequest, context: grpc.ServicerContext) -> Any:
        lot_id = required(request.lot_id, "lot_id")
        actor = Actor(request.actor, required(request.reason, "reason"), request.request_id)
        return self._mutate(
            "QuarantineLot",
            request,
            pb.QuarantineLotResponse,
            lambda s: pb.QuarantineLotResponse(
                lot=self._lot_out(self.stock.quarantine(s, lot_id, actor))
            ),
        )

    def ReleaseLot(self, request: pb.ReleaseLotRequest, context: grpc.ServicerContext) -> Any:
        lot_id = required(request.lot_id, "lot_id")
        actor = Actor(request.actor, required(request.reason, "reason"), request.request_id)
        return self._mutate(
            "ReleaseLot",
            request,
            pb.ReleaseLotResponse,
            lambda s: pb.ReleaseLotResponse(
                lot=self._lot_out(self.stock.release(s, lot_id, actor))
            ),
        )

    def RecordCount(self, request: pb.RecordCountRequest, context: grpc.ServicerContext) -> Any:
        lot_id = required(request.lot_id, "lot_id")
        actor = Actor(request.actor, request.reason, request.request_id)

        def count(session: Any) -> pb.RecordCountResponse:
            lot, movement = self.stock.record_count(session, lot_id, request.counted_vials, actor)
            reply = pb.RecordCountResponse(lot=self._lot_out(lot))
            if movement is not None:
                reply.movement.CopyFrom(movement_out(movement))
            return reply

        return self._mutate("RecordCount", request, pb.RecordCountResponse, count)

    def ReverseMovement(
        self, request: pb.ReverseMovementRequest, context: grpc.ServicerContext
    ) -> Any:
        movement_id = required(request.movement_id, "movement_id")
        actor = Actor(request.actor, required(request.reason, "reason"), request.request_id)

        def reverse(session: Any) -> pb.ReverseMovementResponse:
            reversal, lot = self.stock.reverse(session, movement_id, actor)
            return pb.ReverseMovementResponse(
                reversal=movement_out(reversal), lot=self._lot_out(lot)
            )

        return self._mutate("ReverseMovement", request, pb.ReverseMovementResponse, reverse)

    def ListMovements(self, request: pb.ListMovementsRequest, context: grpc.ServicerContext) -> Any:
        if not request.lot_id and not request.site_id:
            raise InvalidArgument([FieldViolation("lot_id", "give a lot_id or a site_id")])
        scope = f"movements:{request.lot_id}:{request.site_id}"
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.stock.list_movements(request.lot_id, request.site_id, page),
            page,
            lambda pair: [str(pair[0].seq)],
            scope=scope,
        )
        return pb.ListMovementsResponse(
            movements=[movement_out(m, by) for m, by in rows], next_page_token=token
        )

    def GetStockLevels(
        self, request: pb.GetStockLevelsRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        site_id = request.site_id
        if not site_id:
            v.add("site_id", "is required")
        as_of = parse_date(request.as_of, "as_of", v, required=False)
        v.raise_if_any()
        levels, lots = self.stock.stock_levels(site_id, request.product_id, as_of)
        day = as_of or self.stock.today(site_id)
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

    def ReconcileStock(
        self, request: pb.ReconcileStockRequest, context: grpc.ServicerContext
    ) -> Any:
        report = self.stock.reconcile(request.site_id)
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
