"""Reservations per appointment, dispensing, waste, transfers, returns, recalls and expiry.

Every use case runs in one write transaction. A new reservation chooses from an unlocked read
and takes its vials with UPDATEs that succeed only while the lots still hold them (see
Reservations.reserve). Every other change locks the lots it may draw on (SELECT ... FOR
UPDATE, in id order) before their availability is read. Either way two reservations for the
same product at the same site can never promise the same vial twice; on SQLite the database
write lock does the same.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Violations,
)
from services.common.etag import check_etag
from services.common.ids import new_id
from services.common.outbox import Outbox
from services.common.pagination import PageRequest
from services.inventory.domain.allocation import Allocation, Candidate, Shortfall, allocate
from services.inventory.domain.reservations import (
    OPEN_STATES,
    Administration,
    DispenseInput,
    HeldLine,
    Reservation,
    ReservationRequest,
    ReservationState,
    from_mg,
    to_mg,
    validate_request,
)
from services.inventory.domain.stock import (
    Actor,
    Balance,
    Lot,
    LotState,
    Movement,
    MovementKind,
    check_balance,
)
from services.inventory.store import reservations as store
from services.inventory.store import stock as lots_store
from services.inventory.store.models import (
    AdministrationRow,
    LotRow,
    MovementRow,
    ReservationLineRow,
    ReservationRow,
)
from services.inventory.store.site_scope import organisation_of
from services.inventory.usecases.catalogue import Catalogue
from services.inventory.usecases.sites import Sites
from services.inventory.usecases.stock import Stock


@dataclass(frozen=True)
class Dispensed:
    reservation: Reservation
    movements: list[Movement]
    administrations: list[Administration]


@dataclass(frozen=True)
class Repaired:
    """Reservations moved to other lots, and those left at risk."""

    reallocated: list[Reservation]
    at_risk: list[Reservation]


RACE_ATTEMPTS = 3
"""Unlocked attempts at a reservation before it locks every candidate lot (Reservations.reserve)."""


class _ChosenLotsChanged(Exception):
    """The lots an unlocked read chose were taken meanwhile (see Reservations.reserve)."""


class _ReservedAlready(Exception):
    """The appointment has a reservation: answer from it (outside the failed transaction)."""


def _fingerprint(r: ReservationRequest) -> str:
    text = "|".join(
        [r.site_id, r.patient_id, ",".join(r.products), str(to_mg(r.grams))]
        + [str(r.band_percent.normalize()), r.needed_on.isoformat()]
    )
    return hashlib.sha256(text.encode()).hexdigest()


class Reservations:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        catalogue: Catalogue,
        sites: Sites,
        stock: Stock,
        outbox: Outbox,
    ) -> None:
        self.db = db
        self.clock = clock
        self.catalogue = catalogue
        self.sites = sites
        self.stock = stock
        self.outbox = outbox

    # --- reserve, amend, release ---------------------------------------------------------------

    def reserve(self, request: ReservationRequest, actor: Actor) -> Reservation:
        """Idempotent by appointment: the same request again returns the reservation.

        Choose from an unlocked read, then write the reservation and take the chosen vials in
        one statement of conditional UPDATEs that fails as a whole when a lot no longer has
        them (see _reserve): the lot rows are locked for that statement only, and on
        PostgreSQL it needs no transaction around it (two round trips a reservation). A lot
        taken meanwhile fails that statement, and the allocation runs again on what is left;
        after RACE_ATTEMPTS lost races the reservation is made with every candidate lot locked
        first, in a transaction, which cannot lose one."""
        request = self._checked(request)
        digest = _fingerprint(request)
        try:
            for _ in range(RACE_ATTEMPTS):
                try:
                    with self.db.statementwise() as session:
                        return self._reserve(session, request, digest, actor)
                except _ChosenLotsChanged:
                    continue
            with self.db.write() as session:
                return self._reserve_locked(session, request, digest, actor)
        except (IntegrityError, _ReservedAlready):  # reserved already (a retry, or a race)
            with self.db.read() as session:
                existing = store.by_appointment(session, request.appointment_id)
                if existing is None:
                    raise
                return self._repeat(session, existing, digest)

    def _checked(self, r: ReservationRequest) -> ReservationRequest:
        v = Violations()
        today = None
        if r.site_id:
            try:
                today = self.sites.today(r.site_id)
            except NotFound:
                v.add("site_id", f"no stock site {r.site_id!r}")
        v.extend(validate_request(r, today).items)
        ids = []
        for i, product in enumerate(r.products):
            if not product:
                continue
            try:
                ids.append(self.catalogue.get(product).id)
            except NotFound:
                name = "product_id" if i == 0 else f"alternative_product_ids[{i - 1}]"
                v.add(name, f"no product {product!r}")
        v.raise_if_any()
        return dataclasses.replace(r, products=tuple(ids))

    def _repeat(self, session: Session, row: ReservationRow, digest: str) -> Reservation:
        if row.request_hash != digest:
            raise AlreadyExists(
                "reservation",
                row.id,
                f"appointment {row.appointment_id} already has reservation {row.id} for "
                "other figures: change it with AmendReservation",
                reason="APPOINTMENT_RESERVED",
            )
        return self._view(session, row)

    def _reserve(
        self, session: Session, r: ReservationRequest, digest: str, actor: Actor
    ) -> Reservation:
        """One SELECT of the promisable lots, the allocation, then one statement writing the
        reservation and taking its vials (store.open_and_take)."""
        reservation = Reservation.open(new_id(), r, self.clock.now())
        dose = from_mg(reservation.grams_mg)
        seen = store.promisable(session, r.site_id, r.products, r.needed_on, dose)
        result = allocate(dose, r.band_percent, r.products, [Candidate(*c[:5]) for c in seen])
        if not isinstance(result, Allocation):
            if store.by_appointment(session, r.appointment_id) is not None:
                raise _ReservedAlready  # a retry: answer it, whatever the stock is now
            raise self._short(store.new_row(reservation, digest), result)
        reservation.hold(result)
        lots = {lot.lot_id: lot for lot in seen}
        reservation.lines = _held_lines(result, lots)
        if not store.open_and_take(session, reservation, digest, lots, actor):
            raise _ChosenLotsChanged
        return reservation

    def _reserve_locked(
        self, session: Session, r: ReservationRequest, digest: str, actor: Actor
    ) -> Reservation:
        """Every candidate lot locked (in id order) before the allocation: slower, but it
        cannot lose a race."""
        reservation = Reservation.open(new_id(), r, self.clock.now())
        row = store.new_row(reservation, digest)
        locked = self._lock(session, row, ())
        result = self._choose(row, locked)
        if not isinstance(result, Allocation):
            if store.by_appointment(session, r.appointment_id) is not None:
                raise _ReservedAlready  # a retry: answer it, whatever the stock is now
            raise self._short(row, result)
        reservation.hold(result)
        row.allocated_product_id = reservation.allocated_product_id
        row.allocated_mg = reservation.allocated_mg
        session.add(row)
        session.flush()  # the appointment's unique key: a repeat or a concurrent twin fails here
        held = self._hold(session, row, result, locked, reservation.created_at, actor)
        return store.to_reservation(row, [(line, locked[line.lot_id]) for line in held])

    def amend(
        self,
        session: Session,
        reservation_id: str,
        grams: Decimal | None,
        needed_on: dt.date | None,
        etag: str,
        actor: Actor,
    ) -> Reservation:
        """New figures, and the vials chosen again for them, as a new reservation's would be
        chosen, with what it holds counted as free.

        One unlocked read of what the reservation holds and one of the promisable lots, the
        allocation, then the chosen and held lots locked (in id order) and checked, and one
        write (store.rechoose). Lots taken meanwhile send it down the slower way that locks
        every candidate lot first (``_amend_locked``), in the same transaction."""
        row = store.reservation_row(session, reservation_id, for_update=True)
        if etag:
            check_etag(etag, row.revision, field="etag", resource=f"reservation {row.id}")
        # the figures only: the vials held are released and chosen again below, in the ledger
        reservation = store.to_reservation(row, [])
        request = reservation.amend(grams, needed_on, self.sites.today(row.site_id, session))
        digest = _fingerprint(request)
        held = store.held_lots(session, row.id)
        dose = from_mg(reservation.grams_mg)
        seen = store.promisable(
            session, row.site_id, request.products, request.needed_on, dose, giving_back=row.id
        )
        band = reservation.rounding_band_percent
        result = allocate(dose, band, request.products, [Candidate(*c[:5]) for c in seen])
        if not isinstance(result, Allocation):
            raise self._short(store.new_row(reservation, digest), result)  # nothing changes
        given_back = {h.lot_id: h.vials for h in held}
        free = store.lock_free(session, {*given_back, *(lot_id for lot_id, _ in result.lines)})
        if any(k not in free or free[k] + given_back.get(k, 0) < n for k, n in result.lines):
            return self._amend_locked(session, row, request, digest, actor)
        lots = {lot.lot_id: lot for lot in seen}
        reservation.hold(result)
        reservation.lines = _held_lines(result, lots)
        reservation.revise(self.clock.now(), ReservationState.ACTIVE)
        store.rechoose(session, reservation, digest, held, lots, actor)
        return reservation

    def _amend_locked(
        self,
        session: Session,
        row: ReservationRow,
        request: ReservationRequest,
        digest: str,
        actor: Actor,
    ) -> Reservation:
        """Every candidate lot locked (in id order) before the vials are chosen again: slower,
        but nothing can be taken from under it."""
        now = self.clock.now()
        row.grams_mg = to_mg(request.grams)
        row.needed_on = request.needed_on
        row.request_hash = digest
        held = store.lines(session, [row.id])[row.id]
        locked = self._lock(session, row, [line.lot_id for line in held])
        self._release_lines(session, row, held, locked, now, actor, "AMENDED")
        result = self._choose(row, locked)
        if not isinstance(result, Allocation):
            raise self._short(row, result)  # the transaction rolls back: nothing changes
        self._hold(session, row, result, locked, now, actor)
        self._touch(row, ReservationState.ACTIVE, now)
        return self._view(session, row)

    def release(self, session: Session, reservation_id: str, actor: Actor) -> Reservation:
        row = store.reservation_row(session, reservation_id, for_update=True)
        held = store.lines(session, [row.id])[row.id]
        locked = store.lots(session, [line.lot_id for line in held], for_update=True)
        reservation = store.to_reservation(row, [(line, locked[line.lot_id]) for line in held])
        if not reservation.release():
            return reservation
        now = self.clock.now()
        self._release_lines(session, row, held, locked, now, actor, "RELEASED")
        reservation.revise(now)  # RELEASED, by release()
        store.save_revision(row, reservation)
        return self._view(session, row)

    # --- dispensing, waste, transfers, returns -------------------------------------------------

    def dispense(self, session: Session, d: DispenseInput, actor: Actor) -> Dispensed:
        """Load the reservation and, in one locked read, the lots it holds or names; let the
        reservation check and book the dispense; then write the ledger rows, each lot's new
        counts and state, the administration traces and the reservation (store.dispensed:
        on PostgreSQL two statements, the second with the audit record)."""
        row = store.reservation_row(session, d.reservation_id, for_update=True)
        held, lots = store.dispensing_lots(session, row.id, {lot for lot, _ in d.lines})
        reservation = store.to_reservation(row, [])
        store.holding_lines(reservation, held, lots)
        when = d.administered_at or self.clock.now()
        day = self.sites.get(row.site_id, session).local_date(when)
        done = reservation.dispense(d, lots, day)
        now = self.clock.now()
        reservation.revise(now)  # DISPENSED, by dispense()
        movements: list[dict[str, object]] = []
        moved: dict[str, Balance] = {}  # each lot's change over the ledger rows

        def book(lot: Lot, kind: MovementKind, code: str, **change: Any) -> None:
            movements.append(store.movement(reservation, lot.id, lot, kind, code, actor, **change))
            was = moved.get(lot.id, Balance())
            moved[lot.id] = was.plus(change.get("on_hand", 0), change.get("reserved", 0))

        traces: list[AdministrationRow] = []
        note = actor.reason if done.override_reason is None else done.override_reason
        for opened in done.opened:
            lot = lots[opened.lot.id]
            book(
                lot,
                MovementKind.DISPENSE,
                "DISPENSED",
                on_hand=-opened.vials,
                reserved=-opened.from_reserved,
                grams=opened.grams_given,
                note=note,
            )
            if opened.grams_wasted:
                book(lot, MovementKind.WASTE, "OPENED_UNUSED", grams=opened.grams_wasted)
            traces.append(
                AdministrationRow(
                    id=new_id(),
                    reservation_id=row.id,
                    patient_id=row.patient_id or d.patient_id,
                    appointment_id=row.appointment_id,
                    site_id=row.site_id,
                    lot_id=lot.id,
                    product_id=lot.product_id,
                    lot_number=lot.lot_number,
                    vials=opened.vials,
                    grams_administered=opened.grams_given,
                    grams_wasted=opened.grams_wasted,
                    unit_cost=lot.unit_cost,
                    currency=lot.currency,
                    presentation_grams=lot.presentation_grams,
                    administered_at=when,
                )
            )
        for lot_id, unused in done.unused.items():  # held, not opened: back to their lots
            if unused > 0:
                book(lots[lot_id], MovementKind.RELEASE, "NOT_USED", reserved=-unused)
        changed: list[tuple[Lot, bool]] = []
        for lot_id, change in moved.items():
            lot = lots[lot_id]
            lot.balance = lot.balance.plus(change.on_hand, change.reserved)
            check_balance(lot.id, lot.balance)
            changed.append((lot, lot.settle()))  # a new state is a new revision (Lot.settle)
        recorded = store.dispensed(
            session, reservation, row.request_hash, movements, traces, changed
        )
        return Dispensed(reservation, recorded, [store.to_administration(a) for a in traces])

    def lot_for_scan(
        self, session: Session, reservation_id: str, gtin: str, lot_number: str, field: str
    ) -> str:
        """The lot a scanned vial belongs to, at the reservation's site."""
        row = store.reservation_row(session, reservation_id)
        match = self.catalogue.find_presentation(gtin)
        lot = None
        if match is not None:
            stored, presentation = match
            lot = lots_store.find_lot(
                session, row.site_id, stored.id, presentation.grams, lot_number
            )
        if lot is None:
            raise InvalidArgument(
                [
                    FieldViolation(
                        f"{field}.gs1_element_string",
                        f"no lot {lot_number!r} of GTIN {gtin} at site {row.site_id}",
                    )
                ]
            )
        return lot.id

    def record_waste(
        self, session: Session, lot_id: str, vials: int, reason: str, actor: Actor
    ) -> tuple[Lot, Movement, list[Reservation]]:
        """Whole vials lost (damaged, expired, a temperature excursion...). Vials are physical:
        if some were reserved, those reservations move to other lots or become at risk."""
        if vials <= 0:
            raise InvalidArgument([FieldViolation("vials", "must be at least 1")])
        lot = lots_store.lot_row(session, lot_id, for_update=True)
        entry = lots_store.to_lot(lot).waste(vials, reason)
        now = self.clock.now()
        movement = self.stock.book(session, lot, entry, now, actor)
        repaired = self._displace(session, lot, now, actor)
        view = self.stock.settle(session, lot, now)
        return view, lots_store.recorded(session, [movement])[0], repaired

    def transfer(
        self,
        session: Session,
        lot_id: str,
        to_site_id: str,
        to_unit_id: str,
        vials: int,
        actor: Actor,
    ) -> tuple[Lot, Lot, list[Movement]]:
        v = Violations()
        if vials <= 0:
            v.add("vials", "must be at least 1")
        if not to_site_id:
            v.add("to_site_id", "is required")
        v.raise_if_any()
        source = lots_store.lot_row(session, lot_id, for_update=True)
        if to_site_id == source.site_id:
            raise InvalidArgument([FieldViolation("to_site_id", "is the lot's own site")])
        self.sites.known(session, to_site_id, "to_site_id")
        if to_unit_id:
            self.sites.unit(session, to_unit_id, to_site_id, "to_storage_unit_id")
        sent = lots_store.to_lot(source).send(vials)
        target = lots_store.find_lot(
            session,
            to_site_id,
            source.product_id,
            source.presentation_grams,
            source.lot_number,
        )
        now = self.clock.now()
        if target is None:
            target = lots_store.insert_lot(
                session,
                LotRow(
                    id=new_id(),
                    site_id=to_site_id,
                    product_id=source.product_id,
                    presentation_grams=source.presentation_grams,
                    gtin=source.gtin,
                    lot_number=source.lot_number,
                    expiry_date=source.expiry_date,
                    state=LotState.AVAILABLE.value,
                    unit_cost=source.unit_cost,
                    currency=source.currency,
                    supplier=source.supplier,
                    purchase_order_id=source.purchase_order_id,
                    storage_unit_id=to_unit_id,
                    on_hand_vials=0,
                    reserved_vials=0,
                    revision=1,
                    created_at=now,
                    updated_at=now,
                ),
            )
        else:
            target = lots_store.lot_row(session, target.id, for_update=True)
        received = lots_store.to_lot(target).take_in(vials)
        reference = f"transfer:{new_id()}"
        out = self.stock.book(session, source, sent, now, actor, reference=reference)
        into = self.stock.book(session, target, received, now, actor, reference=reference)
        return (
            self.stock.settle(session, source, now),
            self.stock.settle(session, target, now),
            lots_store.recorded(session, [out, into]),
        )

    def return_to_supplier(
        self, session: Session, lot_id: str, vials: int, actor: Actor
    ) -> tuple[Lot, Movement]:
        if vials <= 0:
            raise InvalidArgument([FieldViolation("vials", "must be at least 1")])
        lot = lots_store.lot_row(session, lot_id, for_update=True)
        entry = lots_store.to_lot(lot).give_back(vials)
        now = self.clock.now()
        movement = self.stock.book(session, lot, entry, now, actor)
        return self.stock.settle(session, lot, now), lots_store.recorded(session, [movement])[0]

    # --- recall and expiry ---------------------------------------------------------------------

    def recall(
        self, session: Session, product_id: str, lot_number: str, actor: Actor
    ) -> tuple[list[Lot], Repaired, int]:
        v = Violations()
        if not product_id:
            v.add("product_id", "is required")
        if not lot_number.strip():
            v.add("lot_number", "is required")
        if not actor.reason.strip():
            v.add("reason", "is required: it goes to every site and patient notified")
        v.raise_if_any()
        product = self.catalogue.get(product_id)
        rows = lots_store.list_lots(
            session, "", product.id, None, lot_number, PageRequest(10_000, None)
        )
        if not rows:
            raise NotFound("lot", f"{product.product.code}/{lot_number}")
        locked = store.lots(session, [r.id for r in rows], for_update=True)
        now = self.clock.now()
        views = []
        for row in locked.values():
            current = lots_store.to_lot(row)
            entry = current.recall()
            if entry is not None:
                self.stock.lots(session).record(current, entry, now, actor)
            views.append(lots_store.view(session, row))
        repaired = self._repair(
            session, store.holding(session, list(locked), OPEN_STATES), now, actor, "RECALLED"
        )
        count = store.recipient_count(session, product.id, lot_number)
        recipients = store.recipients(session, product.id, lot_number, PageRequest(10_000, None))
        self.outbox.emit(
            session,
            "LOT_RECALLED",
            {
                "product_id": product.id,
                "brand": product.product.brand,
                "lot_number": lot_number,
                "reason": actor.reason,
                # the sites holding the lot and the sites that treated patients with it
                "sites": sorted(
                    {lot.site_id for lot in locked.values()} | {a.site_id for a in recipients}
                ),
                "recipients": [
                    {
                        "patient_id": a.patient_id,
                        "appointment_id": a.appointment_id,
                        "site_id": a.site_id,
                        "administered_time": a.administered_at.isoformat(),
                        "grams": str(a.grams_administered),
                    }
                    for a in recipients
                ],
            },
            now,
            # one recall per organisation: another organisation's recall of the same lot
            # number is its own event, not a duplicate of this one
            dedupe_key=_recall_key(session, product.id, lot_number, locked.values()),
        )
        return views, repaired, count

    def expiry_check(
        self, site_id: str, as_of: dt.date | None = None
    ) -> tuple[list[Lot], Repaired, list[tuple[Lot, int, int]]]:
        """The daily job: expired lots become EXPIRED; reservations on lots that will not be
        usable on their day move to other lots; LOT_EXPIRING once per lot and threshold."""
        with self.db.write() as session:
            site = self.sites.known(session, site_id, "site_id")
            today = as_of or site.local_date(self.clock.now())
            now = self.clock.now()
            actor = Actor("expiry-check", f"daily expiry check for {today}")
            rows = lots_store.list_lots(session, site_id, "", None, "", PageRequest(10_000, None))
            locked = store.lots(session, [r.id for r in rows], for_update=True)
            expired = []
            for row in locked.values():
                current = lots_store.to_lot(row)
                entry = current.expire(today)
                if entry is not None:
                    self.stock.lots(session).record(current, entry, now, actor)
                    expired.append(lots_store.view(session, row))
            held = store.holding(session, list(locked), OPEN_STATES)
            held_lines = store.lines(session, [r.id for r in held])  # one read, not one each
            unusable = [r for r in held if _needs_repair(r, held_lines[r.id], locked)]
            repaired = self._repair(session, unusable, now, actor, "EXPIRY")
            warnings = []
            for row in locked.values():
                warning = lots_store.to_lot(row).expiry_warning(today, site.expiry_warning_days)
                if warning is None:
                    continue
                raised = self.outbox.emit(
                    session, warning.topic, warning.payload(), now, dedupe_key=warning.dedupe_key
                )
                if raised:
                    warnings.append(
                        (lots_store.view(session, row), warning.days_left, warning.threshold_days)
                    )
            return expired, repaired, warnings

    # --- reads ---------------------------------------------------------------------------------

    def get(self, reservation_id: str, appointment_id: str) -> Reservation:
        with self.db.read() as session:
            if reservation_id:
                return self._view(session, store.reservation_row(session, reservation_id))
            row = store.by_appointment(session, appointment_id)
            if row is None:
                raise NotFound("reservation", f"appointment {appointment_id}")
            return self._view(session, row)

    def list_reservations(
        self,
        site_id: str,
        product_id: str,
        patient_id: str,
        state: ReservationState | None,
        needed_from: dt.date | None,
        needed_to: dt.date | None,
        page: PageRequest,
    ) -> list[Reservation]:
        product_id = self.stock.product_filter(product_id)
        with self.db.read() as session:
            rows = store.list_reservations(
                session, site_id, product_id, patient_id, state, needed_from, needed_to, page
            )
            return self._views(session, rows)

    def recipients(
        self, product_id: str, lot_number: str, page: PageRequest
    ) -> list[Administration]:
        with self.db.read() as session:
            product = self.catalogue.get(product_id)
            rows = store.recipients(session, product.id, lot_number, page)
            return [store.to_administration(a) for a in rows]

    # --- the machinery -------------------------------------------------------------------------

    def _lock(
        self, session: Session, row: ReservationRow, also: Sequence[str]
    ) -> dict[str, LotRow]:
        """Lock the lots the reservation may draw on, and ``also`` (lots it will release)."""
        products = (row.product_id, *row.alternative_product_ids)
        rows = store.candidate_lots(session, row.site_id, products, row.needed_on, also)
        return {lot.id: lot for lot in rows}

    def _choose(
        self, row: ReservationRow, locked: dict[str, LotRow], avoid: str = ""
    ) -> Allocation | list[Shortfall]:
        """The rules of domain/allocation.py over the locked lots' current projections; a lot
        to ``avoid`` (just damaged) is left out if the dose can be covered without it."""
        products = (row.product_id, *row.alternative_product_ids)
        candidates = [
            Candidate(
                lot.id,
                lot.product_id,
                lot.presentation_grams,
                lot.expiry_date,
                lot.on_hand_vials - lot.reserved_vials,
            )
            for lot in locked.values()
            if lot.state == LotState.AVAILABLE.value
            and lot.expiry_date >= row.needed_on
            and lot.site_id == row.site_id
            and lot.product_id in products
        ]
        dose, band = from_mg(row.grams_mg), row.rounding_band_percent
        if avoid:
            without = allocate(dose, band, products, [c for c in candidates if c.lot_id != avoid])
            if isinstance(without, Allocation):
                return without
        return allocate(dose, band, products, candidates)

    def _hold(
        self,
        session: Session,
        row: ReservationRow,
        chosen: Allocation,
        locked: dict[str, LotRow],
        now: dt.datetime,
        actor: Actor,
    ) -> list[ReservationLineRow]:
        held = []
        for lot_id, vials in chosen.lines:
            lot = locked[lot_id]
            self._move(
                session, lot, MovementKind.RESERVATION, 0, vials, now, actor, "RESERVED", row.id
            )
            check_balance(lot.id, lots_store.view(session, lot).balance)
            held.append(ReservationLineRow(reservation_id=row.id, lot_id=lot_id, vials=vials))
        session.add_all(held)
        row.allocated_product_id = chosen.product_id
        row.allocated_mg = to_mg(chosen.total_grams)
        row.at_risk_reason = ""
        return held

    def _release_lines(
        self,
        session: Session,
        row: ReservationRow,
        held: Collection[ReservationLineRow],
        locked: dict[str, LotRow],
        now: dt.datetime,
        actor: Actor,
        code: str,
    ) -> None:
        for line in held:
            if line.vials:
                self._move(
                    session,
                    locked[line.lot_id],
                    MovementKind.RELEASE,
                    0,
                    -line.vials,
                    now,
                    actor,
                    code,
                    row.id,
                )
        store.clear_lines(session, row.id)
        row.allocated_mg = 0
        row.allocated_product_id = ""

    def _displace(
        self, session: Session, lot: LotRow, now: dt.datetime, actor: Actor
    ) -> list[Reservation]:
        """After a loss, move reservations off the lot (latest needed-on day first) until
        what it holds covers what is reserved on it."""
        moved: list[ReservationRow] = []
        for row in store.holding(session, [lot.id], OPEN_STATES):
            if lot.reserved_vials <= lot.on_hand_vials:
                break
            moved.append(row)
            self._repair(session, [row], now, actor, "LOST", exclude_lot=lot.id)
        check_balance(lot.id, lots_store.view(session, lot).balance)
        return self._views(session, moved)

    def _repair(
        self,
        session: Session,
        rows: Sequence[ReservationRow],
        now: dt.datetime,
        actor: Actor,
        code: str,
        exclude_lot: str = "",
    ) -> Repaired:
        """Release each reservation's vials and choose again from what is usable; one that
        cannot be covered becomes AT_RISK and raises STOCK_AT_RISK."""
        moved: list[ReservationRow] = []
        risky: list[ReservationRow] = []
        for row in rows:
            held = store.lines(session, [row.id])[row.id]
            locked = self._lock(session, row, [line.lot_id for line in held])
            self._release_lines(session, row, held, locked, now, actor, code)
            result = self._choose(row, locked, avoid=exclude_lot)
            if isinstance(result, Allocation):
                self._hold(session, row, result, locked, now, actor)
                self._touch(row, ReservationState.ACTIVE, now)
                moved.append(row)
            else:
                reservation = store.to_reservation(row, [])  # released above: no lines
                event = reservation.put_at_risk(self._short(row, result).message, code)
                reservation.revise(now)  # AT_RISK, by put_at_risk()
                store.save_revision(row, reservation)
                risky.append(row)
                self.outbox.emit(
                    session,
                    event.topic,
                    event.payload(),
                    now,
                    dedupe_key=f"{event.topic}:{row.id}:{row.revision}",
                )
        return Repaired(self._views(session, moved), self._views(session, risky))

    def _move(
        self,
        session: Session,
        lot: LotRow,
        kind: MovementKind,
        on_hand: int,
        reserved: int,
        now: dt.datetime,
        actor: Actor,
        code: str,
        reservation_id: str | None = None,
        *,
        grams: Decimal | None = None,
        note: str | None = None,
        reference: str = "",
    ) -> MovementRow:
        if grams is None:
            grams = abs(on_hand or reserved) * lot.presentation_grams
        return lots_store.add_movement(
            session,
            lot,
            kind,
            on_hand,
            reserved,
            now,
            reason_code=code,
            note=actor.reason if note is None else note,
            actor=actor.name,
            request_id=actor.request_id,
            grams=grams,
            reservation_id=reservation_id,
            reference=reference or (f"reservation:{reservation_id}" if reservation_id else ""),
        )

    def _short(self, row: ReservationRow, shortfalls: object) -> FailedPrecondition:
        dose = from_mg(row.grams_mg)
        band = row.rounding_band_percent
        items = []
        for s in shortfalls if isinstance(shortfalls, list) else []:
            vials = ", ".join(f"{n} × {g.normalize():f} g" for g, n in s.by_size) or "none"
            brand = self.catalogue.get(s.product_id).product.brand
            floor = f" (at least {dose * (1 - band / 100):.1f} g within the band)" if band else ""
            items.append(
                PreconditionViolation(
                    "STOCK_SHORT",
                    f"products/{s.product_id}",
                    f"{dose:f} g{floor} of {brand} needed at {row.site_id} on {row.needed_on}; "
                    f"in date and unreserved: {s.promisable_grams.normalize():f} g ({vials})",
                )
            )
        return FailedPrecondition(items, reason="STOCK_SHORT")

    def _touch(self, row: ReservationRow, state: ReservationState, now: dt.datetime) -> None:
        """A change made through the row (vials held again by the ORM's flush): revised by the
        domain's rule (Reservation.revise) and stored on the row."""
        reservation = store.to_reservation(row, [])
        reservation.revise(now, state)
        store.save_revision(row, reservation)

    def _view(self, session: Session, row: ReservationRow) -> Reservation:
        return self._views(session, [row])[0]

    def _views(self, session: Session, rows: Sequence[ReservationRow]) -> list[Reservation]:
        session.flush()
        held = store.lines(session, [r.id for r in rows])
        lots = store.lots(
            session, {line.lot_id for lines in held.values() for line in lines}, for_update=False
        )
        return [
            store.to_reservation(r, [(line, lots[line.lot_id]) for line in held[r.id]])
            for r in rows
        ]


def _held_lines(chosen: Allocation, lots: dict[str, store.Promisable]) -> list[HeldLine]:
    """The allocation's lines, in expiry order (the order the vials should leave the shelf)."""
    held = [(lots[lot_id], vials) for lot_id, vials in chosen.lines]
    return [
        HeldLine(c.lot_id, c.product_id, c.lot_number, c.presentation_grams, c.expiry_date, n)
        for c, n in sorted(held, key=lambda x: (x[0].expiry_date, x[0].lot_id))
    ]


def _needs_repair(
    row: ReservationRow, lines: Sequence[ReservationLineRow], lots: dict[str, LotRow]
) -> bool:
    """Whether the daily check must move a reservation: at risk already, or holding vials of a
    lot that is gone, not available, or expiring before the reservation's day."""
    if row.state == ReservationState.AT_RISK.value:
        return True
    for line in lines:
        lot = lots.get(line.lot_id)
        if lot is None or lot.state != LotState.AVAILABLE.value:
            return True
        if lot.expiry_date < row.needed_on:
            return True
    return False


def _recall_key(session: Session, product_id: str, lot_number: str, lots: Iterable[LotRow]) -> str:
    """``LOT_RECALLED:<product>:<lot number>``, with ``:<organisation>`` of the recalled lots'
    sites where they have one."""
    owners = sorted({organisation_of(session, lot.site_id) or "" for lot in lots} - {""})
    key = f"LOT_RECALLED:{product_id}:{lot_number}"
    return f"{key}:{','.join(owners)}" if owners else key
