"""Lots and the stock ledger.

Every change to stock is an immutable movement; on-hand and reserved vials of a lot are sums
over its movements, never stored counters, so they cannot drift from the ledger. Mistakes are
corrected by a reversing movement, never by editing one. Stock counts are whole vials.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from services.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PreconditionViolation,
    Violations,
)
from services.common.reasons import Rule


class LotState(StrEnum):
    AVAILABLE = "AVAILABLE"
    QUARANTINED = "QUARANTINED"
    RECALLED = "RECALLED"
    EXPIRED = "EXPIRED"
    DEPLETED = "DEPLETED"


# Which state may follow which. RECALLED is final: a recalled lot is never used again, and its
# trace must stay. An EXPIRED lot can still be recalled (the recall reaches its recipients).
TRANSITIONS: dict[LotState, frozenset[LotState]] = {
    LotState.AVAILABLE: frozenset(
        {LotState.QUARANTINED, LotState.RECALLED, LotState.EXPIRED, LotState.DEPLETED}
    ),
    LotState.QUARANTINED: frozenset({LotState.AVAILABLE, LotState.RECALLED, LotState.EXPIRED}),
    LotState.DEPLETED: frozenset({LotState.AVAILABLE, LotState.RECALLED, LotState.EXPIRED}),
    LotState.EXPIRED: frozenset({LotState.RECALLED}),
    LotState.RECALLED: frozenset(),
}


class MovementKind(StrEnum):
    RECEIPT = "RECEIPT"
    RESERVATION = "RESERVATION"
    RELEASE = "RELEASE"
    DISPENSE = "DISPENSE"
    WASTE = "WASTE"
    TRANSFER_OUT = "TRANSFER_OUT"
    TRANSFER_IN = "TRANSFER_IN"
    COUNT_ADJUSTMENT = "COUNT_ADJUSTMENT"
    RETURN_TO_SUPPLIER = "RETURN_TO_SUPPLIER"
    QUARANTINE = "QUARANTINE"
    RELEASE_FROM_QUARANTINE = "RELEASE_FROM_QUARANTINE"
    RECALL = "RECALL"
    REVERSAL = "REVERSAL"
    EXPIRY = "EXPIRY"


# Movements that only record a change of state carry no vials and are undone by the opposite
# verb (release a quarantine), not by a reversal.
STATE_MOVEMENTS = frozenset(
    {
        MovementKind.QUARANTINE,
        MovementKind.RELEASE_FROM_QUARANTINE,
        MovementKind.RECALL,
        MovementKind.EXPIRY,
    }
)


# The vial-less movement, and its reason code, that records each change of state by a verb.
STATE_MOVEMENT = {
    LotState.QUARANTINED: (MovementKind.QUARANTINE, "QUARANTINED"),
    LotState.AVAILABLE: (MovementKind.RELEASE_FROM_QUARANTINE, "RELEASED"),
    LotState.RECALLED: (MovementKind.RECALL, "RECALLED"),
    LotState.EXPIRED: (MovementKind.EXPIRY, "EXPIRED"),
}


@dataclass(frozen=True)
class Balance:
    on_hand: int = 0
    reserved: int = 0

    def plus(self, on_hand: int, reserved: int) -> Balance:
        return Balance(self.on_hand + on_hand, self.reserved + reserved)

    def available(self, state: LotState, expiry: dt.date, on: dt.date) -> int:
        """Vials that can still be promised: only from an AVAILABLE lot still in date."""
        if state is not LotState.AVAILABLE or expiry < on:
            return 0
        return max(self.on_hand - self.reserved, 0)


@dataclass
class Lot:
    """One manufacturer lot of one presentation at one site, with its balance (the ledger's
    sums). The use cases load it, ask it what a change means, and store what it answers."""

    id: str
    site_id: str
    product_id: str
    presentation_grams: Decimal
    gtin: str
    lot_number: str
    expiry_date: dt.date
    state: LotState
    unit_cost: Decimal
    currency: str
    supplier: str
    purchase_order_id: str
    storage_unit_id: str
    balance: Balance
    revision: int
    created_at: dt.datetime

    def available(self, on: dt.date) -> int:
        """Vials that can still be promised for a day at the lot's site."""
        return self.balance.available(self.state, self.expiry_date, on)

    @property
    def free(self) -> int:
        """On hand and not reserved for any appointment, whatever the lot's state."""
        return self.balance.on_hand - self.balance.reserved

    # --- lifecycle: each method checks, changes the lot, and returns the ledger entries ------

    def quarantine(self) -> Entry:
        return self._become(LotState.QUARANTINED)

    def release(self, today: dt.date) -> Entry:
        """Out of quarantine, only while still in date at the lot's site."""
        if self.state is not LotState.QUARANTINED:
            raise precondition(
                "LOT_QUARANTINED", self.id, f"only a quarantined lot can be released ({self.state})"
            )
        if self.expiry_date < today:
            raise precondition(
                "LOT_IN_DATE", self.id, f"lot expired on {self.expiry_date}: it cannot be released"
            )
        return self._become(LotState.AVAILABLE, checked=False)

    def recall(self) -> Entry | None:
        """A recall reaches a lot in any state; a lot recalled already records nothing."""
        if self.state is LotState.RECALLED:
            return None
        return self._become(LotState.RECALLED, checked=False)

    def expire(self, today: dt.date) -> Entry | None:
        """The daily check: a lot past its expiry that could still be used becomes EXPIRED."""
        usable = (LotState.AVAILABLE, LotState.QUARANTINED, LotState.DEPLETED)
        if self.expiry_date < today and self.state in usable:
            return self._become(LotState.EXPIRED, checked=False)
        return None

    def count(self, counted: int) -> Entry | None:
        """A stock count: the difference to the vials on hand, booked as an adjustment."""
        if counted < 0:
            raise InvalidArgument([FieldViolation("counted_vials", "must not be negative")])
        delta = counted - self.balance.on_hand
        if delta == 0:
            return None
        check_balance(self.id, self.balance.plus(delta, 0))
        return Entry(MovementKind.COUNT_ADJUSTMENT, "COUNT", on_hand=delta)

    def expiry_warning(self, today: dt.date, thresholds: Iterable[int]) -> LotExpiring | None:
        """LOT_EXPIRING for a lot with vials still on hand and usable (or in quarantine, which
        may end) when its days left reach one of its site's thresholds: the smallest threshold
        reached, so each threshold warns once."""
        if self.state not in (LotState.AVAILABLE, LotState.QUARANTINED):
            return None
        if self.balance.on_hand <= 0:
            return None
        left = (self.expiry_date - today).days
        band = next((t for t in sorted(thresholds) if left <= t), None)
        if band is None:
            return None
        return LotExpiring(self, left, band)

    def waste(self, vials: int, reason: str) -> Entry:
        """Whole vials lost (damaged, expired, a temperature excursion...). Reserved vials may
        be among them: the caller then moves those reservations to other lots."""
        if vials > self.balance.on_hand:
            raise precondition(
                "VIALS_ON_HAND", self.id, f"only {self.balance.on_hand} vial(s) are on hand"
            )
        return self._book(Entry(MovementKind.WASTE, reason, on_hand=-vials))

    def give_back(self, vials: int) -> Entry:
        """Return vials to the supplier: only vials no appointment holds."""
        self._check_free(vials)
        return self._book(Entry(MovementKind.RETURN_TO_SUPPLIER, "RETURNED", on_hand=-vials))

    def send(self, vials: int) -> Entry:
        """The outgoing half of a transfer: an AVAILABLE lot's vials that nobody holds."""
        if self.state is not LotState.AVAILABLE:
            raise precondition("LOT_USABLE", self.id, f"a {self.state.value} lot is not moved")
        self._check_free(vials)
        return self._book(Entry(MovementKind.TRANSFER_OUT, "TRANSFER", on_hand=-vials))

    def take_in(self, vials: int) -> Entry:
        """The incoming half of a transfer: never into a recalled or expired lot."""
        if self.state in (LotState.RECALLED, LotState.EXPIRED):
            raise precondition("LOT_USABLE", self.id, f"the target lot is {self.state.value}")
        return self._book(Entry(MovementKind.TRANSFER_IN, "TRANSFER", on_hand=vials))

    def check_receipt(self, currency: str) -> None:
        """More vials of a known lot: not into a recalled or expired lot, and in its currency
        (a lot has one unit cost currency, so its value stays one sum)."""
        if self.state in (LotState.RECALLED, LotState.EXPIRED):
            raise precondition(
                "LOT_ACCEPTS_RECEIPTS", self.id, f"lot {self.lot_number} is {self.state.value}"
            )
        if self.currency != currency:
            raise InvalidArgument(
                [FieldViolation("unit_cost.currency_code", f"the lot is costed in {self.currency}")]
            )

    def undo(self, movement: Movement, reversed_already: bool) -> Entry:
        """The REVERSAL of one of this lot's movements: a change of state is undone by the
        opposite verb and a reversal is not reversed; neither is a movement twice; and the
        reversal may not leave the lot short."""
        kind = movement.kind
        if kind in STATE_MOVEMENTS or kind is MovementKind.REVERSAL:
            raise precondition(
                "MOVEMENT_REVERSIBLE",
                movement.lot_id,
                f"a {kind.value} movement is not reversed: "
                + ("use the opposite verb" if kind in STATE_MOVEMENTS else "it is a correction"),
            )
        if reversed_already:
            raise precondition(
                "MOVEMENT_REVERSIBLE", movement.lot_id, "the movement was already reversed"
            )
        entry = Entry(
            MovementKind.REVERSAL,
            "REVERSAL",
            on_hand=-movement.on_hand_delta,
            reserved=-movement.reserved_delta,
        )
        check_balance(self.id, self.balance.plus(entry.on_hand, entry.reserved))
        return self._book(entry)

    def _check_free(self, vials: int) -> None:
        if vials > self.free:
            raise precondition(
                "VIALS_FREE", self.id, f"{self.free} vial(s) are not reserved; {vials} asked for"
            )

    def _book(self, entry: Entry) -> Entry:
        self.balance = self.balance.plus(entry.on_hand, entry.reserved)
        return entry

    def settle(self) -> bool:
        """The quantity-driven state after a movement (DEPLETED ↔ AVAILABLE); whether the
        state changed (the caller then stores the new state and revision)."""
        wanted = state_after_quantity_change(self.state, self.balance)
        if wanted is self.state:
            return False
        check_transition(self.id, self.state, wanted)
        self._change_state(wanted)
        return True

    def _become(self, wanted: LotState, *, checked: bool = True) -> Entry:
        if checked:
            check_transition(self.id, self.state, wanted)
        self._change_state(wanted)
        kind, code = STATE_MOVEMENT[wanted]
        return Entry(kind, code)

    def _change_state(self, wanted: LotState) -> None:
        """Every change of a lot's state is a new revision of the lot, whichever way it
        comes (a verb, or the quantities after a movement): the one place that says so, so
        the store and the set-based dispense write the same revision."""
        if wanted is not self.state:
            self.state = wanted
            self.revision += 1


@dataclass(frozen=True)
class LotExpiring:
    """The event of a lot reaching an expiry warning threshold of its site."""

    lot: Lot
    days_left: int
    threshold_days: int

    topic = "LOT_EXPIRING"

    @property
    def dedupe_key(self) -> str:
        return f"LOT_EXPIRING:{self.lot.id}:{self.threshold_days}"

    def payload(self) -> dict[str, object]:
        lot = self.lot
        return {
            "site_id": lot.site_id,
            "lot_id": lot.id,
            "product_id": lot.product_id,
            "lot_number": lot.lot_number,
            "expiry_date": lot.expiry_date.isoformat(),
            "days_left": self.days_left,
            "threshold_days": self.threshold_days,
            "on_hand_vials": lot.balance.on_hand,
            "reserved_vials": lot.balance.reserved,
        }


@dataclass(frozen=True)
class Entry:
    """A movement a lot asks the ledger to append (vial-less for a change of state)."""

    kind: MovementKind
    code: str
    on_hand: int = 0
    reserved: int = 0


@dataclass(frozen=True)
class Movement:
    """One ledger entry as recorded: never changed; a mistake is undone by a REVERSAL."""

    id: str
    lot_id: str
    site_id: str
    kind: MovementKind
    on_hand_delta: int
    reserved_delta: int
    unit_cost: Decimal
    currency: str
    reason_code: str
    note: str
    actor: str
    request_id: str
    created_at: dt.datetime
    seq: int
    reverses_movement_id: str = ""


@dataclass(frozen=True)
class Actor:
    """Who did it and why, kept on every movement."""

    name: str = ""
    reason: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class Receipt:
    site_id: str
    product_id: str
    presentation_grams: Decimal
    lot_number: str
    expiry_date: dt.date
    vials: int
    unit_cost: Decimal
    currency: str
    supplier: str = ""
    purchase_order_id: str = ""
    gtin: str = ""
    storage_unit_id: str = ""


def validate_receipt(r: Receipt, today: dt.date, known_expiry: dt.date | None) -> Violations:
    """Receipts: a known lot number with another expiry, an expiry in the past, zero or
    negative quantities are refused, each as its own field violation."""
    v = Violations()
    if not r.site_id:
        v.add("site_id", "is required")
    if not r.lot_number.strip():
        v.add("lot_number", "is required (or scan the GS1 element string)")
    if r.vials <= 0:
        v.add("vials", f"must be a whole number of vials above 0, not {r.vials}")
    if r.unit_cost < 0:
        v.add("unit_cost", "must not be negative")
    if len(r.currency) != 3 or not r.currency.isalpha() or not r.currency.isupper():
        v.add("unit_cost.currency_code", "must be an ISO 4217 code such as GBP")
    if r.expiry_date < today:
        v.add("expiry_date", f"{r.expiry_date} is in the past: expired stock cannot be received")
    if known_expiry is not None and known_expiry != r.expiry_date:
        v.add(
            "expiry_date",
            f"lot {r.lot_number} is already known with expiry {known_expiry}; "
            f"{r.expiry_date} contradicts it",
        )
    return v


def check_transition(lot_id: str, current: LotState, wanted: LotState) -> None:
    if wanted not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none"
        raise FailedPrecondition(
            [
                PreconditionViolation(
                    "LOT_STATE_TRANSITION",
                    f"lots/{lot_id}",
                    f"a {current.value} lot cannot become {wanted.value} (allowed: {allowed})",
                )
            ]
        )


def state_after_quantity_change(current: LotState, balance: Balance) -> LotState:
    """An AVAILABLE lot with nothing left becomes DEPLETED; stock coming back to a DEPLETED lot
    makes it AVAILABLE again. Other states are not changed by quantities."""
    if current is LotState.AVAILABLE and balance.on_hand == 0:
        return LotState.DEPLETED
    if current is LotState.DEPLETED and balance.on_hand > 0:
        return LotState.AVAILABLE
    return current


def check_balance(lot_id: str, balance: Balance) -> None:
    """No movement may leave a lot with negative stock or with more reserved than on hand."""
    if balance.on_hand < 0 or balance.reserved < 0 or balance.reserved > balance.on_hand:
        raise FailedPrecondition(
            [
                PreconditionViolation(
                    "STOCK_BALANCE",
                    f"lots/{lot_id}",
                    f"this would leave {balance.on_hand} vial(s) on hand and "
                    f"{balance.reserved} reserved",
                )
            ]
        )


def precondition(rule: Rule, lot_id: str, text: str) -> FailedPrecondition:
    return FailedPrecondition([PreconditionViolation(rule, f"lots/{lot_id}", text)])
