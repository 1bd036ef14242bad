"""Forecasts, reorder policies and purchase orders: protobuf ↔ planning values. No rules
live here."""

from __future__ import annotations

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
from services.common.gs1 import ScanError, read_scan
from services.inventory.domain.forecast import Policy, StockForecast
from services.inventory.domain.purchasing import Delivery, DraftLine, OrderState, PurchaseOrder
from services.inventory.usecases.planning import DemandEntry, StoredPolicy, Suggestion
from services.inventory.usecases.purchase_orders import DraftOrder

ORDER_STATE: dict[OrderState, Any] = {
    s: pb.PurchaseOrderState.Value(f"PURCHASE_ORDER_STATE_{s.value}") for s in OrderState
}
ORDER_STATE_IN = {v: k for k, v in ORDER_STATE.items()}


def policy_out(stored: StoredPolicy) -> pb.ReorderPolicy:
    p = stored.policy
    return pb.ReorderPolicy(
        site_id=stored.site_id,
        product_id=stored.product_id,
        lead_time_days=p.lead_time_days,
        safety_stock_grams=decimal_str(p.safety_stock_grams),
        review_period_days=p.review_period_days,
        order_presentation_grams=decimal_str(p.order_presentation_grams),
        case_vials=p.case_vials,
        maximum_grams=decimal_str(p.maximum_grams),
        etag=etag_for(stored.revision),
    )


def suggestion_out(s: Suggestion) -> pb.ReorderSuggestion:
    msg = pb.ReorderSuggestion(
        site_id=s.site_id,
        product_id=s.product.id,
        presentation_grams=decimal_str(s.policy.order_presentation_grams),
        vials=s.order.vials,
        grams=decimal_str(s.order.grams),
        reason=s.reason,
    )
    if s.cost is not None:
        msg.estimated_cost.CopyFrom(to_money(*s.cost))
    if s.order.stockout_date is not None:
        msg.stockout_date.CopyFrom(from_date(s.order.stockout_date))
    if s.order.order_by_date is not None:
        msg.order_by_date.CopyFrom(from_date(s.order.order_by_date))
    return msg


def order_out(r: PurchaseOrder) -> pb.PurchaseOrder:
    msg = pb.PurchaseOrder(
        id=r.id,
        site_id=r.site_id,
        supplier=r.supplier,
        state=ORDER_STATE[r.state],
        lines=[
            pb.PurchaseOrderLine(
                id=x.id,
                product_id=x.product_id,
                presentation_grams=decimal_str(x.presentation_grams),
                vials_ordered=x.vials_ordered,
                vials_received=x.vials_received,
                unit_cost=to_money(x.unit_cost, x.currency),
            )
            for x in r.lines
        ],
        reference=r.reference,
        cancel_reason=r.cancel_reason,
        etag=etag_for(r.revision),
        create_time=from_datetime(r.created_at),
        update_time=from_datetime(r.updated_at),
    )
    if r.expected_date is not None:
        msg.expected_date.CopyFrom(from_date(r.expected_date))
    return msg


def policy_in(msg: pb.ReorderPolicy, v: Violations) -> Policy:
    f = "policy"
    safety = parse_decimal(msg.safety_stock_grams, f"{f}.safety_stock_grams", v)
    size = parse_decimal(msg.order_presentation_grams, f"{f}.order_presentation_grams", v)
    maximum = parse_decimal(msg.maximum_grams, f"{f}.maximum_grams", v, required=False)
    return Policy(
        lead_time_days=msg.lead_time_days,
        safety_stock_grams=safety if safety is not None else Decimal(0),
        review_period_days=msg.review_period_days,
        order_presentation_grams=size if size is not None else Decimal(0),
        case_vials=msg.case_vials,
        maximum_grams=maximum if maximum is not None else Decimal(0),
    )


def draft_in(msg: pb.PurchaseOrder, v: Violations) -> DraftOrder:
    f = "purchase_order"
    lines = []
    for i, x in enumerate(msg.lines):
        lf = f"{f}.lines[{i}]"
        lines.append(
            DraftLine(
                product_id=x.product_id,
                presentation_grams=parse_decimal(
                    x.presentation_grams, f"{lf}.presentation_grams", v
                ),
                vials=x.vials_ordered,
                unit_cost=from_money(x.unit_cost) if x.HasField("unit_cost") else None,
                currency=x.unit_cost.currency_code,
            )
        )
    return DraftOrder(
        site_id=msg.site_id,
        supplier=msg.supplier,
        expected_date=parse_date(msg.expected_date, f"{f}.expected_date", v, required=False),
        reference=msg.reference,
        lines=lines,
    )


def deliveries_in(request: pb.ReceivePurchaseOrderRequest) -> list[Delivery]:
    v = Violations()
    out = []
    for i, r in enumerate(request.receipts):
        scan = None
        if r.gs1_element_string:
            try:
                scan = read_scan(r.gs1_element_string)
            except ScanError as error:
                v.add(f"receipts[{i}].gs1_element_string", str(error))
        out.append(
            Delivery(
                line_id=r.line_id,
                lot_number=r.lot_number,
                expiry_date=parse_date(
                    r.expiry_date, f"receipts[{i}].expiry_date", v, required=False
                ),
                vials=r.vials,
                storage_unit_id=r.storage_unit_id,
                scan=scan,
            )
        )
    v.raise_if_any()
    return out


def demand_in(request: pb.UpsertDemandForecastRequest, parsed: Violations) -> list[DemandEntry]:
    return [
        DemandEntry(
            site_id=e.site_id,
            product_id=e.product_id,
            day=parse_date(e.day, f"forecasts[{i}].day", parsed),
            grams=parse_decimal(e.grams, f"forecasts[{i}].grams", parsed),
        )
        for i, e in enumerate(request.forecasts)
    ]


def forecast_out(forecast: StockForecast) -> pb.GetStockForecastResponse:
    reply = pb.GetStockForecastResponse(
        days=[
            pb.ForecastDay(
                date=from_date(d.date),
                in_date_on_hand_grams=decimal_str(d.in_date_on_hand),
                reserved_demand_grams=decimal_str(d.reserved_demand),
                forecast_demand_grams=decimal_str(d.forecast_demand),
                arriving_grams=decimal_str(d.arriving),
                expiring_grams=decimal_str(d.expiring),
                projected_available_grams=decimal_str(d.projected_available),
                shortfall_grams=decimal_str(d.shortfall),
            )
            for d in forecast.days
        ]
    )
    stockout = forecast.first_stockout()
    if stockout is not None:
        reply.first_stockout_date.CopyFrom(from_date(stockout))
    return reply
