"""Receiving a delivery against the purchase order it answers: the order lines at the site that
still wait for vials of the scanned product and vial size, and ReceivePurchaseOrder for one of
them (the lot from the scan; the cost is the order line's), so the order shows what arrived and
closes when all has. Free of HTTP, like reads.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from infusion.inventory.v1 import inventory_pb2 as inv
from services.common.convert import to_date
from services.console import reads
from services.console.backend import UserCalls, pages

WAITING = (inv.PURCHASE_ORDER_STATE_OPEN, inv.PURCHASE_ORDER_STATE_PARTIALLY_RECEIVED)


@dataclass(frozen=True)
class OrderLine:
    purchase_order_id: str
    line_id: str
    reference: str
    supplier: str
    expected: dt.date | None
    outstanding: int  # vials ordered and not received yet

    @property
    def choice(self) -> str:
        """The form's value for this line."""
        return f"{self.purchase_order_id}/{self.line_id}"


def open_lines(
    calls: UserCalls, site_id: str, product_id: str, presentation_grams: str
) -> list[OrderLine]:
    """The site's order lines still waiting for vials of this product and vial size, the
    soonest expected first."""

    def orders(state: inv.PurchaseOrderState) -> Iterator[inv.PurchaseOrder]:
        return pages(
            lambda token: calls.inventory.ListPurchaseOrders(
                inv.ListPurchaseOrdersRequest(
                    site_id=site_id, state=state, page_size=reads.MAX_PAGE, page_token=token
                )
            ),
            "purchase_orders",
        )

    found = []
    for state in WAITING:
        for order in orders(state):
            for line in order.lines:
                outstanding = line.vials_ordered - line.vials_received
                same_size = Decimal(line.presentation_grams or "0") == Decimal(
                    presentation_grams or "0"
                )
                if line.product_id == product_id and same_size and outstanding > 0:
                    found.append(
                        OrderLine(
                            order.id,
                            line.id,
                            order.reference,
                            order.supplier,
                            to_date(order.expected_date) if order.expected_date.year else None,
                            outstanding,
                        )
                    )
    return sorted(found, key=lambda x: (x.expected or dt.date.max, x.reference))


def receive_against(
    calls: UserCalls,
    purchase_order_id: str,
    line_id: str,
    element_string: str,
    vials: int,
    request_id: str,
) -> reads.Received:
    """ReceivePurchaseOrder of ``vials`` of the scanned lot on one line; ``request_id`` makes
    a repeated submit one receipt."""
    answer = calls.inventory.ReceivePurchaseOrder(
        inv.ReceivePurchaseOrderRequest(
            purchase_order_id=purchase_order_id,
            receipts=[
                inv.PurchaseOrderReceipt(
                    line_id=line_id, gs1_element_string=element_string, vials=vials
                )
            ],
            request_id=request_id,
        )
    )
    lot = answer.lots[0]
    return reads.Received(
        lot.id,
        lot.site_id,
        lot.product_id,
        reads.product_names(calls).get(lot.product_id, lot.product_id),
        lot.lot_number,
        to_date(lot.expiry_date),
        lot.presentation_grams,
        vials,
        lot.on_hand_vials,
    )
