"""Purchase-order use cases: create, read, receive deliveries as lots, cancel. Part of
Planning (``planning.orders``); each mutation runs in the caller's one transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import FieldViolation, InvalidArgument, NotFound, Violations
from services.common.etag import check_etag
from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.inventory.domain.purchasing import (
    Delivery,
    DraftLine,
    OrderState,
    PurchaseOrder,
    validate_expected,
    validate_line,
)
from services.inventory.domain.stock import Actor, Lot, Receipt
from services.inventory.store import planning as store
from services.inventory.store.models import PurchaseOrderLineRow, PurchaseOrderRow
from services.inventory.usecases.catalogue import Catalogue
from services.inventory.usecases.sites import Sites
from services.inventory.usecases.stock import Stock


@dataclass(frozen=True)
class DraftOrder:
    site_id: str
    supplier: str
    expected_date: dt.date | None
    reference: str
    lines: list[DraftLine]


# Where a stock.receive complaint belongs in a ReceivePurchaseOrder request.
_RECEIPT_FIELDS = {"lot_number", "expiry_date", "vials", "storage_unit_id", "gs1_element_string"}
_SCAN_CLASH = {"product_id", "presentation_grams"}


def _relocate(error: InvalidArgument, field: str, has_scan: bool) -> list[FieldViolation]:
    moved = []
    for item in error.violations:
        if item.field in _RECEIPT_FIELDS:
            moved.append(FieldViolation(f"{field}.{item.field}", item.description))
        elif item.field in _SCAN_CLASH and has_scan:
            text = f"the scan does not match the order line: {item.description}"
            moved.append(FieldViolation(f"{field}.gs1_element_string", text))
        else:  # the line's own product, size or cost clashes with the existing lot
            moved.append(FieldViolation(f"{field}.line_id", f"{item.field}: {item.description}"))
    return moved


class PurchaseOrders:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        catalogue: Catalogue,
        sites: Sites,
        stock: Stock,
    ) -> None:
        self.db = db
        self.clock = clock
        self.catalogue = catalogue
        self.sites = sites
        self.stock = stock

    def create(self, session: Session, draft: DraftOrder, v: Violations) -> PurchaseOrder:
        """``v`` carries what the API could not parse, so one reply lists every mistake."""
        f = "purchase_order"
        today = None
        if not draft.site_id:
            v.add(f"{f}.site_id", "is required")
        else:
            try:
                today = self.sites.known(session, draft.site_id, f"{f}.site_id").local_date(
                    self.clock.now()
                )
            except InvalidArgument as bad:
                v.extend(bad.violations)
        if not draft.supplier.strip():
            v.add(f"{f}.supplier", "is required")
        if today is not None:
            validate_expected(draft.expected_date, today, f"{f}.expected_date", v)
        if not draft.lines:
            v.add(f"{f}.lines", "give at least one line")
        lines = []
        for i, line in enumerate(draft.lines):
            field = f"{f}.lines[{i}]"
            sizes, brand = None, ""
            try:
                product = self.catalogue.get(line.product_id) if line.product_id else None
            except NotFound:
                product = None
            if product is None:
                v.add(f"{field}.product_id", f"no product {line.product_id!r}")
            else:
                sizes = {p.grams for p in product.product.presentations}
                brand = product.product.brand
                line = dataclasses.replace(line, product_id=product.id)
            validate_line(line, sizes, brand, field, v)
            lines.append(line)
        v.raise_if_any()
        now = self.clock.now()
        order = PurchaseOrderRow(
            id=new_id(),
            site_id=draft.site_id,
            supplier=draft.supplier.strip(),
            state=OrderState.OPEN.value,
            expected_date=draft.expected_date,
            reference=draft.reference,
            cancel_reason="",
            revision=1,
            created_at=now,
            updated_at=now,
        )
        rows = [
            PurchaseOrderLineRow(
                id=new_id(),
                purchase_order_id=order.id,
                line_number=n,
                product_id=line.product_id,
                presentation_grams=line.presentation_grams,
                vials_ordered=line.vials,
                vials_received=0,
                unit_cost=line.unit_cost,
                currency=line.currency,
            )
            for n, line in enumerate(lines, start=1)
        ]
        store.insert_order(session, order, rows)
        return store.to_order(order, rows)

    def get(self, order_id: str) -> PurchaseOrder:
        with self.db.read() as session:
            row = store.order_row(session, order_id)
            return store.to_order(row, store.order_lines(session, [row.id])[row.id])

    def list_orders(
        self, site_id: str, state: OrderState | None, page: PageRequest
    ) -> list[PurchaseOrder]:
        with self.db.read() as session:
            rows = store.list_orders(session, site_id, state.value if state else "", page)
            lines = store.order_lines(session, [r.id for r in rows])
            return [store.to_order(r, lines[r.id]) for r in rows]

    def receive(
        self, session: Session, order_id: str, deliveries: list[Delivery], actor: Actor
    ) -> tuple[PurchaseOrder, list[Lot]]:
        """Each delivery becomes (or tops up) a lot through the stock ledger, in this one
        transaction with the order's line counts: a refused delivery books nothing."""
        row = store.order_row(session, order_id, for_update=True)
        line_rows = store.order_lines(session, [row.id])[row.id]
        order = store.to_order(row, line_rows)
        order.receive(deliveries)
        v = Violations()
        lots = []
        for i, d in enumerate(deliveries):
            line = order.line(d.line_id)
            receipt = Receipt(
                site_id=order.site_id,
                product_id=line.product_id,
                presentation_grams=line.presentation_grams,
                lot_number=d.lot_number.strip(),
                expiry_date=d.expiry_date or dt.date.min,
                vials=d.vials,
                unit_cost=line.unit_cost,
                currency=line.currency,
                supplier=order.supplier,
                purchase_order_id=order.id,
                storage_unit_id=d.storage_unit_id,
            )
            try:
                lot, _ = self.stock.receive(
                    session, self.stock.resolve_scan(receipt, d.scan), actor
                )
                lots.append(lot)
            except InvalidArgument as bad:
                v.extend(_relocate(bad, f"receipts[{i}]", d.scan is not None))
        v.raise_if_any()
        store.save_order(row, line_rows, order, self.clock.now())
        session.flush()
        return store.to_order(row, line_rows), lots

    def cancel(self, session: Session, order_id: str, reason: str, etag: str) -> PurchaseOrder:
        row = store.order_row(session, order_id, for_update=True)
        if etag:
            check_etag(etag, row.revision, field="etag", resource="purchase order")
        line_rows = store.order_lines(session, [row.id])[row.id]
        order = store.to_order(row, line_rows)
        order.cancel(reason)
        store.save_order(row, line_rows, order, self.clock.now())
        session.flush()
        return store.to_order(row, line_rows)
