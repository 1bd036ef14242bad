"""Stock use cases: receiving, lot state changes, counts, reversals, levels. One transaction
each; the ledger is only ever appended to."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from services.common.gs1 import Scan
from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.inventory.domain.stock import (
    Actor,
    Balance,
    Entry,
    Lot,
    LotState,
    Movement,
    MovementKind,
    Receipt,
    validate_receipt,
)
from services.inventory.store import stock as store
from services.inventory.store.models import LotRow, MovementRow
from services.inventory.usecases.catalogue import Catalogue
from services.inventory.usecases.sites import Sites


@dataclass(frozen=True)
class ProductLevel:
    product_id: str
    on_hand_vials: int
    reserved_vials: int
    available_vials: int
    on_hand_grams: Decimal
    available_grams: Decimal


@dataclass(frozen=True)
class Reconciliation:
    lots_checked: int
    movements_checked: int
    discrepancies: list[tuple[str, Balance, Balance]]  # lot id, projection, ledger sums


class LotRepository(Protocol):
    """The lots of one transaction as domain objects (store.stock.Lots; a fake in tests)."""

    def get(self, lot_id: str) -> Lot:
        """The lot, locked for the transaction; NOT_FOUND when unknown or not the caller's."""
        ...

    def record(
        self, lot: Lot, entry: Entry, now: dt.datetime, actor: Actor
    ) -> tuple[Lot, Movement]:
        """Store the state ``lot`` reached and append the entry it raised, then apply the
        quantity-driven state; the lot and the movement as stored."""
        ...


class Stock:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        catalogue: Catalogue,
        sites: Sites,
        lots: Callable[[Session], LotRepository] = store.Lots,
    ) -> None:
        self.db = db
        self.clock = clock
        self.catalogue = catalogue
        self.sites = sites
        self.lots = lots

    def today(self, site_id: str) -> dt.date:
        """The site's local day: what "in date" is judged on there."""
        return self.sites.today(site_id)

    # --- receiving -----------------------------------------------------------------------------

    def resolve_scan(self, receipt: Receipt, scan: Scan | None) -> Receipt:
        """Fill a receipt from a scan; typed fields that disagree with it are refused."""
        if scan is None:
            return receipt
        problems: list[FieldViolation] = []
        product_id, grams = receipt.product_id, receipt.presentation_grams
        match = self.catalogue.find_presentation(scan.gtin)
        if match is None:
            problems.append(
                FieldViolation("gs1_element_string", f"GTIN {scan.gtin} matches no presentation")
            )
        else:
            stored, presentation = match
            if product_id and product_id not in (stored.id, stored.product.code):
                problems.append(
                    FieldViolation("product_id", f"the scanned GTIN is {stored.product.brand}")
                )
            if grams and grams != presentation.grams:
                problems.append(
                    FieldViolation(
                        "presentation_grams", f"the scan is a {presentation.grams} g vial"
                    )
                )
            product_id, grams = stored.id, presentation.grams
        lot_number = receipt.lot_number or scan.lot_number
        if receipt.lot_number and scan.lot_number and receipt.lot_number != scan.lot_number:
            problems.append(FieldViolation("lot_number", f"the scan says lot {scan.lot_number}"))
        expiry = receipt.expiry_date
        if scan.expiry_date is not None:
            if expiry != dt.date.min and expiry != scan.expiry_date:
                problems.append(
                    FieldViolation("expiry_date", f"the scan says expiry {scan.expiry_date}")
                )
            expiry = scan.expiry_date
        if problems:
            raise InvalidArgument(problems)
        return dataclasses.replace(
            receipt,
            product_id=product_id,
            presentation_grams=grams,
            lot_number=lot_number,
            expiry_date=expiry,
            gtin=scan.gtin,
        )

    def receive(self, session: Session, receipt: Receipt, actor: Actor) -> tuple[Lot, Movement]:
        try:
            product = self.catalogue.get(receipt.product_id)
        except NotFound as missing:
            raise InvalidArgument(
                [FieldViolation("product_id", f"no product {receipt.product_id!r}")]
            ) from missing
        receipt = dataclasses.replace(receipt, product_id=product.id)
        sizes = {p.grams: p for p in product.product.presentations}
        known = store.known_expiry(session, product.id, receipt.lot_number)
        site = None
        if receipt.site_id:
            with contextlib.suppress(NotFound):
                site = self.sites.get(receipt.site_id, session)
        now = self.clock.now()
        violations = validate_receipt(receipt, site.local_date(now) if site else now.date(), known)
        if receipt.site_id and site is None:
            violations.add("site_id", f"no stock site {receipt.site_id!r}: create it first")
        if receipt.storage_unit_id and receipt.site_id:
            try:
                self.sites.unit(session, receipt.storage_unit_id, receipt.site_id, "")
            except InvalidArgument:
                violations.add(
                    "storage_unit_id", f"no storage unit {receipt.storage_unit_id!r} at the site"
                )
        if receipt.presentation_grams not in sizes:
            offered = ", ".join(f"{g.normalize()} g" for g in sizes)
            violations.add(
                "presentation_grams",
                f"{product.product.brand} comes in {offered}, not {receipt.presentation_grams} g",
            )
        violations.raise_if_any()
        now = self.clock.now()
        lot = store.find_lot(
            session,
            receipt.site_id,
            product.id,
            receipt.presentation_grams,
            receipt.lot_number,
        )
        if lot is None:
            lot = store.insert_lot(
                session,
                LotRow(
                    id=new_id(),
                    site_id=receipt.site_id,
                    product_id=product.id,
                    presentation_grams=receipt.presentation_grams,
                    gtin=receipt.gtin or (sizes[receipt.presentation_grams].gtin or ""),
                    lot_number=receipt.lot_number,
                    expiry_date=receipt.expiry_date,
                    state=LotState.AVAILABLE.value,
                    unit_cost=receipt.unit_cost,
                    currency=receipt.currency,
                    supplier=receipt.supplier,
                    purchase_order_id=receipt.purchase_order_id,
                    storage_unit_id=receipt.storage_unit_id,
                    on_hand_vials=0,
                    reserved_vials=0,
                    revision=1,
                    created_at=now,
                    updated_at=now,
                ),
            )
        else:
            lot = store.lot_row(session, lot.id, for_update=True)
            store.to_lot(lot).check_receipt(receipt.currency)
        movement = store.add_movement(
            session,
            lot,
            MovementKind.RECEIPT,
            receipt.vials,
            0,
            now,
            unit_cost=receipt.unit_cost,
            reason_code="RECEIVED",
            reference=(
                f"purchase_order:{receipt.purchase_order_id}" if receipt.purchase_order_id else ""
            ),
            note=actor.reason,
            actor=actor.name,
            request_id=actor.request_id,
        )
        return self.settle(session, lot, now), store.recorded(session, [movement])[0]

    # --- state changes and counts: the lot decides, this stores what it decided -----------

    def quarantine(self, session: Session, lot_id: str, actor: Actor) -> Lot:
        lots = self.lots(session)
        lot = lots.get(lot_id)
        entry = lot.quarantine()
        return lots.record(lot, entry, self.clock.now(), actor)[0]

    def release(self, session: Session, lot_id: str, actor: Actor) -> Lot:
        lots = self.lots(session)
        lot = lots.get(lot_id)
        entry = lot.release(self.today(lot.site_id))
        return lots.record(lot, entry, self.clock.now(), actor)[0]

    def record_count(
        self, session: Session, lot_id: str, counted: int, actor: Actor
    ) -> tuple[Lot, Movement | None]:
        if counted < 0:  # before the lot is looked up, as the field is wrong whatever the lot
            raise InvalidArgument([FieldViolation("counted_vials", "must not be negative")])
        lots = self.lots(session)
        lot = lots.get(lot_id)
        entry = lot.count(counted)
        if entry is None:
            return lot, None
        return lots.record(lot, entry, self.clock.now(), actor)

    def book(
        self,
        session: Session,
        row: LotRow,
        entry: Entry,
        now: dt.datetime,
        actor: Actor,
        *,
        unit_cost: Decimal | None = None,
        reverses: str | None = None,
        reference: str = "",
    ) -> MovementRow:
        """Append the ledger entry a lot raised, with who did it and why."""
        return store.add_movement(
            session,
            row,
            entry.kind,
            entry.on_hand,
            entry.reserved,
            now,
            unit_cost=unit_cost,
            reason_code=entry.code,
            note=actor.reason,
            actor=actor.name,
            request_id=actor.request_id,
            reverses=reverses,
            reference=reference,
        )

    # --- corrections ---------------------------------------------------------------------------

    def reverse(self, session: Session, movement_id: str, actor: Actor) -> tuple[Movement, Lot]:
        original = store.movement_row(session, movement_id)
        undone = bool(store.reversal_of(session, [original.id]))
        lot = store.lot_row(session, original.lot_id, for_update=True)
        entry = store.to_lot(lot).undo(store.to_movement(original), undone)
        now = self.clock.now()
        reversal = self.book(
            session, lot, entry, now, actor, unit_cost=original.unit_cost, reverses=original.id
        )
        return store.recorded(session, [reversal])[0], self.settle(session, lot, now)

    def settle(self, session: Session, row: LotRow, now: dt.datetime) -> Lot:
        """Apply the quantity-driven state (DEPLETED ↔ AVAILABLE) after a movement."""
        lot = store.to_lot(row)
        lot.settle()
        store.save_state(row, lot, now)
        return store.to_lot(row)

    # --- reads ---------------------------------------------------------------------------------

    def reconcile(self, site_id: str) -> Reconciliation:
        """ReconcileStock: the projections kept for speed must equal the ledger sums, lot by lot."""
        with self.db.read() as session:
            rows = store.projections_and_ledger(session, site_id)
        wrong = [(lot_id, kept, summed) for lot_id, kept, summed, _ in rows if kept != summed]
        return Reconciliation(len(rows), sum(n for *_, n in rows), wrong)

    def get_lot(self, lot_id: str) -> Lot:
        with self.db.read() as session:
            return store.view(session, store.lot_row(session, lot_id))

    def product_filter(self, key: str) -> str:
        """A list filter's product, given by id or by catalogue code (as every other call
        accepts it): the id, or "" for no filter; NOT_FOUND for an unknown product."""
        return self.catalogue.get(key).id if key else ""

    def list_lots(
        self,
        site_id: str,
        product_id: str,
        state: LotState | None,
        lot_number: str,
        page: PageRequest,
    ) -> list[Lot]:
        product_id = self.product_filter(product_id)
        with self.db.read() as session:
            rows = store.list_lots(session, site_id, product_id, state, lot_number, page)
            sums = store.balances(session, [r.id for r in rows])
            return [store.to_lot(r, sums[r.id]) for r in rows]

    def list_movements(
        self, lot_id: str, site_id: str, page: PageRequest
    ) -> list[tuple[Movement, str]]:
        """Movements with the id of the reversal that undid each ('' when none)."""
        with self.db.read() as session:
            rows = store.list_movements(session, lot_id, site_id, page)
            undone = store.reversal_of(session, [r.id for r in rows])
            return [(store.to_movement(r), undone.get(r.id, "")) for r in rows]

    def stock_levels(
        self, site_id: str, product_id: str, as_of: dt.date | None
    ) -> tuple[list[ProductLevel], list[Lot]]:
        day = as_of or self.today(site_id)
        product_id = self.product_filter(product_id)
        with self.db.read() as session:
            rows: list[LotRow] = []
            page = PageRequest(size=500, after=None)
            while True:
                batch = store.list_lots(session, site_id, product_id, None, "", page)
                rows.extend(batch[: page.size])
                if len(batch) <= page.size:
                    break
                last = batch[page.size - 1]
                page = PageRequest(page.size, [last.expiry_date.isoformat(), last.id])
            sums = store.balances(session, [r.id for r in rows])
        lots = [store.to_lot(r, sums[r.id]) for r in rows if sums[r.id].on_hand > 0]
        totals: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 5)
        for lot in lots:
            grams = lot.presentation_grams
            available = lot.available(day)
            t = totals[lot.product_id]
            t[0] += lot.balance.on_hand
            t[1] += lot.balance.reserved
            t[2] += available
            t[3] += lot.balance.on_hand * grams
            t[4] += available * grams
        levels = [
            ProductLevel(pid, int(t[0]), int(t[1]), int(t[2]), t[3], t[4])
            for pid, t in sorted(totals.items())
        ]
        return levels, lots
