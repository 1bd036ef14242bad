"""Purchase orders: lines, states and what a delivery may book.

OPEN → PARTIALLY_RECEIVED → RECEIVED as deliveries arrive; OPEN or PARTIALLY_RECEIVED →
CANCELLED. RECEIVED and CANCELLED are final. A delivery may not exceed what a line still
expects: extra vials are a different conversation with the supplier (book them with
ReceiveStock), and refusing keeps "received" equal to what was ordered and paid for.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from services.common.errors import FailedPrecondition, PreconditionViolation, Violations
from services.common.gs1 import Scan


class OrderState(StrEnum):
    OPEN = "OPEN"
    PARTIALLY_RECEIVED = "PARTIALLY_RECEIVED"
    RECEIVED = "RECEIVED"
    CANCELLED = "CANCELLED"


OPEN_STATES = frozenset({OrderState.OPEN, OrderState.PARTIALLY_RECEIVED})


@dataclass(frozen=True)
class OrderLine:
    id: str
    line_number: int
    product_id: str
    presentation_grams: Decimal
    vials_ordered: int
    vials_received: int
    unit_cost: Decimal
    currency: str

    @property
    def remaining(self) -> int:
        return self.vials_ordered - self.vials_received


@dataclass
class PurchaseOrder:
    id: str
    site_id: str
    supplier: str
    state: OrderState
    expected_date: dt.date | None
    reference: str
    cancel_reason: str
    revision: int
    created_at: dt.datetime
    updated_at: dt.datetime
    lines: list[OrderLine]

    def line(self, line_id: str) -> OrderLine:
        return next(x for x in self.lines if x.id == line_id)

    def receive(self, deliveries: Sequence[Delivery]) -> dict[str, int]:
        """Count a delivery against the lines: every receipt names a line of this order, whole
        vials, an expiry (typed or scanned), and no line gets more than it still expects. The
        lines' received vials and the order's state move with it; answers vials per line."""
        check_open(self.id, self.state, "received")
        lines = {line.id: line for line in self.lines}
        v = Violations()
        if not deliveries:
            v.add("receipts", "give at least one receipt")
        delivered: dict[str, int] = defaultdict(int)
        for i, d in enumerate(deliveries):
            if d.line_id not in lines:
                v.add(f"receipts[{i}].line_id", f"no line {d.line_id!r} on this order")
            if d.vials <= 0:
                v.add(f"receipts[{i}].vials", f"must be a whole number above 0, not {d.vials}")
            if d.scan is None and d.expiry_date is None:
                v.add(f"receipts[{i}].expiry_date", "is required (or scan the GS1 string)")
            if d.line_id in lines and d.vials > 0:
                delivered[d.line_id] += d.vials
        v.raise_if_any()
        check_remaining(self.id, {k: x.remaining for k, x in lines.items()}, delivered)
        self.lines = [
            dataclasses.replace(x, vials_received=x.vials_received + delivered.get(x.id, 0))
            for x in self.lines
        ]
        self.state = state_after_receipt([x.remaining for x in self.lines])
        return dict(delivered)

    def cancel(self, reason: str) -> None:
        check_open(self.id, self.state, "cancelled")
        self.cancel_reason = reason
        self.state = OrderState.CANCELLED


@dataclass(frozen=True)
class Delivery:
    """One PurchaseOrderReceipt: vials of one line that arrived as one lot."""

    line_id: str
    lot_number: str
    expiry_date: dt.date | None
    vials: int
    storage_unit_id: str = ""
    scan: Scan | None = None


@dataclass(frozen=True)
class DraftLine:
    product_id: str
    presentation_grams: Decimal | None
    vials: int
    unit_cost: Decimal | None
    currency: str


def valid_currency(code: str) -> bool:
    return len(code) == 3 and code.isalpha() and code.isupper()


def validate_line(
    line: DraftLine, sizes: Collection[Decimal] | None, brand: str, field: str, v: Violations
) -> None:
    """``sizes`` None: the product is unknown (already reported by the caller)."""
    size = line.presentation_grams
    if sizes is not None and size is not None and size not in sizes:
        offered = ", ".join(f"{g.normalize()} g" for g in sorted(sizes))
        v.add(f"{field}.presentation_grams", f"{brand} comes in {offered}, not {size} g")
    if line.vials <= 0:
        v.add(
            f"{field}.vials_ordered", f"must be a whole number of vials above 0, not {line.vials}"
        )
    if line.unit_cost is None:
        v.add(f"{field}.unit_cost", "is required: the cost of one vial, with its currency")
    else:
        if line.unit_cost < 0:
            v.add(f"{field}.unit_cost", "must not be negative")
        if not valid_currency(line.currency):
            v.add(f"{field}.unit_cost.currency_code", "must be an ISO 4217 code such as GBP")


def validate_expected(expected: dt.date | None, today: dt.date, field: str, v: Violations) -> None:
    if expected is not None and expected < today:
        v.add(field, f"{expected} is in the past: give the day the delivery is expected")


def check_open(order_id: str, state: OrderState, verb: str) -> None:
    if state not in OPEN_STATES:
        raise FailedPrecondition(
            [
                PreconditionViolation(
                    "PURCHASE_ORDER_OPEN",
                    f"purchaseOrders/{order_id}",
                    f"the order is {state.value}: only an open or partially received order can"
                    f" be {verb}",
                )
            ]
        )


def check_remaining(
    order_id: str, remaining: Mapping[str, int], delivered: Mapping[str, int]
) -> None:
    """Every line's delivered vials (summed over the request) fit what it still expects."""
    over = [
        PreconditionViolation(
            "PURCHASE_ORDER_LINE_REMAINING",
            f"purchaseOrders/{order_id}/lines/{line_id}",
            f"{vials} vials delivered but the line expects only {remaining[line_id]} more",
        )
        for line_id, vials in delivered.items()
        if vials > remaining[line_id]
    ]
    if over:
        raise FailedPrecondition(over)


def state_after_receipt(remaining_after: Collection[int]) -> OrderState:
    return (
        OrderState.RECEIVED
        if all(r == 0 for r in remaining_after)
        else (OrderState.PARTIALLY_RECEIVED)
    )
