"""Reservations: their states, the checks of a reservation, an amendment, a release and a
dispense, and the arithmetic of a dispense."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
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
from services.inventory.domain.allocation import Allocation
from services.inventory.domain.stock import Lot, LotState

MG_PER_GRAM = 1000
# The plan's rounding band defaults to ±10 % (docs/clinical-rules.md#dose-rounding); a reservation
# may carry any
# band a plan may, and no plan band above 50 % is sensible.
MAX_BAND_PERCENT = Decimal(50)


class ReservationState(StrEnum):
    ACTIVE = "ACTIVE"
    AT_RISK = "AT_RISK"
    DISPENSED = "DISPENSED"
    RELEASED = "RELEASED"


OPEN_STATES = frozenset({ReservationState.ACTIVE, ReservationState.AT_RISK})


@dataclass(frozen=True)
class ReservationRequest:
    appointment_id: str
    site_id: str
    patient_id: str
    products: tuple[str, ...]  # asked for, then allowed alternatives in order
    grams: Decimal
    band_percent: Decimal
    needed_on: dt.date


def to_mg(grams: Decimal) -> int:
    return int(grams * MG_PER_GRAM)


def from_mg(mg: int) -> Decimal:
    return (Decimal(mg) / MG_PER_GRAM).normalize()


MAX_ALTERNATIVES = 10
"""Alternatives a reservation may name besides its product (ReserveStockRequest's limit)."""


def validate_request(r: ReservationRequest, site_today: dt.date | None) -> Violations:
    v = Violations()
    if not r.appointment_id.strip():
        v.add("appointment_id", "is required: it is the reservation's idempotency key")
    if not r.site_id:
        v.add("site_id", "is required")
    if not r.products[0]:
        v.add("product_id", "is required")
    if len(set(r.products)) != len(r.products):
        v.add("alternative_product_ids", "must not repeat the product or each other")
    if len(r.products) > 1 + MAX_ALTERNATIVES:
        v.add("alternative_product_ids", f"at most {MAX_ALTERNATIVES}")
    if r.grams <= 0:
        v.add("grams", "must be above 0")
    elif r.grams != r.grams.quantize(Decimal("0.001")):
        v.add("grams", "at most 3 decimals (milligrams)")
    if not Decimal(0) <= r.band_percent <= MAX_BAND_PERCENT:
        v.add("rounding_band_percent", f"must be 0 to {MAX_BAND_PERCENT}")
    if site_today is not None and r.needed_on < site_today:
        v.add("needed_on", f"{r.needed_on} is before the site's today ({site_today})")
    return v


@dataclass(frozen=True)
class HeldLine:
    """Vials of one lot held for a reservation, with the lot facts a pharmacy reads."""

    lot_id: str
    product_id: str
    lot_number: str
    presentation_grams: Decimal
    expiry_date: dt.date
    vials: int


@dataclass
class Reservation:
    """Vials set aside for one appointment. Grams are integer milligrams, as stored."""

    id: str
    appointment_id: str
    site_id: str
    patient_id: str
    product_id: str
    alternative_product_ids: tuple[str, ...]
    grams_mg: int
    rounding_band_percent: Decimal
    needed_on: dt.date
    state: ReservationState
    allocated_product_id: str
    allocated_mg: int
    at_risk_reason: str
    revision: int
    created_at: dt.datetime
    updated_at: dt.datetime
    lines: list[HeldLine]

    @classmethod
    def open(
        cls, reservation_id: str, request: ReservationRequest, now: dt.datetime
    ) -> Reservation:
        """A new reservation for a checked request (validate_request): ACTIVE, holding nothing
        until it holds the vials chosen for it."""
        return cls(
            id=reservation_id,
            appointment_id=request.appointment_id,
            site_id=request.site_id,
            patient_id=request.patient_id,
            product_id=request.products[0],
            alternative_product_ids=tuple(request.products[1:]),
            grams_mg=to_mg(request.grams),
            rounding_band_percent=request.band_percent,
            needed_on=request.needed_on,
            state=ReservationState.ACTIVE,
            allocated_product_id="",
            allocated_mg=0,
            at_risk_reason="",
            revision=1,
            created_at=now,
            updated_at=now,
            lines=[],
        )

    def hold(self, chosen: Allocation) -> None:
        """Take the vials chosen by the allocation rules (domain/allocation.py): the product
        they are of and the grams they give; no longer at risk."""
        self.allocated_product_id = chosen.product_id
        self.allocated_mg = to_mg(chosen.total_grams)
        self.at_risk_reason = ""

    def revise(self, now: dt.datetime, state: ReservationState | None = None) -> None:
        """Every change of a reservation after it is opened (an amend, a release, a dispense,
        a move to other lots or to AT_RISK) is a new revision, the etag a client amends
        against, stamped with the time of the change; ``state``: the state it leaves the
        reservation in, when the change itself has not set it. The one place that says so,
        for the set-based writes and the ORM's alike."""
        if state is not None:
            self.state = state
        self.revision += 1
        self.updated_at = now

    @property
    def grams(self) -> Decimal:
        return from_mg(self.grams_mg)

    @property
    def allocated_grams(self) -> Decimal:
        return from_mg(self.allocated_mg)

    @property
    def overfill_grams(self) -> Decimal:
        """What the vials held give beyond the dose (0 when nothing is held)."""
        if not self.allocated_mg:
            return Decimal(0)
        return max(self.allocated_grams - self.grams, Decimal(0))

    @property
    def products(self) -> tuple[str, ...]:
        """The product asked for, then the allowed alternatives in order."""
        return (self.product_id, *self.alternative_product_ids)

    def check_open(self) -> None:
        """Only an ACTIVE or AT_RISK reservation is amended, released or dispensed."""
        if self.state not in OPEN_STATES:
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "RESERVATION_OPEN",
                        f"reservations/{self.id}",
                        f"the reservation is {self.state.value}",
                    )
                ]
            )

    def amend(
        self, grams: Decimal | None, needed_on: dt.date | None, site_today: dt.date
    ) -> ReservationRequest:
        """New figures (a dose, a day, or both), checked as a new reservation's would be; the
        vials are chosen again by the caller. Answers the request the figures make now."""
        self.check_open()
        request = ReservationRequest(
            appointment_id=self.appointment_id,
            site_id=self.site_id,
            patient_id=self.patient_id,
            products=self.products,
            grams=self.grams if grams is None else grams,
            band_percent=self.rounding_band_percent,
            needed_on=needed_on or self.needed_on,
        )
        validate_request(request, site_today).raise_if_any()
        self.grams_mg = to_mg(request.grams)
        self.needed_on = request.needed_on
        return request

    def put_at_risk(self, reason: str, cause: str) -> StockAtRisk:
        """Its vials were lost (waste, recall, expiry) and no usable lot covers the dose any
        more: AT_RISK until stock arrives or the appointment changes, and the care team is
        told (STOCK_AT_RISK)."""
        self.state = ReservationState.AT_RISK
        self.at_risk_reason = reason
        return StockAtRisk(
            reservation_id=self.id,
            appointment_id=self.appointment_id,
            patient_id=self.patient_id,
            site_id=self.site_id,
            product_id=self.product_id,
            grams=self.grams,
            needed_on=self.needed_on,
            reason=reason,
            cause=cause,
        )

    def release(self) -> bool:
        """Give the vials back. False when released already: a repeat changes nothing."""
        if self.state is ReservationState.RELEASED:
            return False
        self.check_open()
        self.state = ReservationState.RELEASED
        self.at_risk_reason = ""
        return True

    def dispense(self, d: DispenseInput, lots: Mapping[str, Lot], day: dt.date) -> Dispensing:
        """The checks of a dispense and what it books. ``lots``: the lots named and the lots
        held, as they are now; ``day``: the site's local day of the administration.

        Every vial opened must come from a lot at the reservation's site, usable and in date
        on the day; more than the dose reserved needs an explicit override with a reason; vials
        beyond those held may only come from what no other appointment holds. Held vials not
        opened go back to their lots."""
        v = Violations()
        if d.patient_id and self.patient_id and d.patient_id != self.patient_id:
            v.add("patient_id", f"the reservation is for patient {self.patient_id}")
        if d.appointment_id and d.appointment_id != self.appointment_id:
            v.add("appointment_id", f"the reservation is for appointment {self.appointment_id}")
        if not d.lines:
            v.add("vials", "name the lots and vials opened")
        for i, (lot_id, vials) in enumerate(d.lines):
            if vials <= 0:
                v.add(f"vials[{i}].vials", "must be at least 1")
            if not lot_id:
                v.add(f"vials[{i}].lot_id", "give a lot_id or scan the vial")
        if len({lot_id for lot_id, _ in d.lines}) != len(d.lines):
            v.add("vials", "name each lot once")
        if d.allow_over_reservation and not d.override_reason.strip():
            v.add("override_reason", "is required with allow_over_reservation")
        v.raise_if_any()
        self.check_open()
        missing = [lot for lot, _ in d.lines if lot not in lots]
        if missing:
            raise InvalidArgument([FieldViolation("vials", f"no lot {missing[0]!r}")])
        opened = [OpenedVials(lot, n, lots[lot].presentation_grams) for lot, n in d.lines]
        shares = split_waste(opened, d.grams_administered, d.grams_wasted, v)
        v.raise_if_any()
        problems = []
        for lot_id, _ in d.lines:
            lot = lots[lot_id]
            if lot.site_id != self.site_id:
                problems.append(_rule("LOT_AT_SITE", lot, f"lot is at site {lot.site_id}"))
            elif lot.state is not LotState.AVAILABLE:
                problems.append(
                    _rule("LOT_USABLE", lot, f"lot {lot.lot_number} is {lot.state.value}")
                )
            elif lot.expiry_date < day:
                problems.append(
                    _rule("LOT_IN_DATE", lot, f"lot {lot.lot_number} expired {lot.expiry_date}")
                )
        if d.grams_administered > self.grams and not d.allow_over_reservation:
            problems.append(
                PreconditionViolation(
                    "DISPENSE_WITHIN_RESERVATION",
                    f"reservations/{self.id}",
                    f"{d.grams_administered} g given is more than the {self.grams} g reserved; "
                    "set allow_over_reservation with a reason",
                )
            )
        if problems:
            raise FailedPrecondition(problems)
        unused = {line.lot_id: line.vials for line in self.lines}
        booked = []
        for (lot_id, vials), (given, wasted) in zip(d.lines, shares, strict=True):
            lot = lots[lot_id]
            from_reserved = min(vials, unused.get(lot_id, 0))
            if vials - from_reserved > lot.free:
                raise FailedPrecondition(
                    [
                        _rule(
                            "VIALS_FREE",
                            lot,
                            f"lot {lot.lot_number} has {lot.free} vial(s) not reserved for other "
                            f"appointments; {vials - from_reserved} more were asked for",
                        )
                    ]
                )
            if lot_id in unused:
                unused[lot_id] -= from_reserved
            booked.append(DispensedVials(lot, vials, from_reserved, given, wasted))
        self.state = ReservationState.DISPENSED
        self.lines = []
        return Dispensing(
            booked,
            unused,
            d.override_reason if d.allow_over_reservation else None,
        )


@dataclass(frozen=True)
class StockAtRisk:
    """The event a reservation raises when it can no longer be covered."""

    reservation_id: str
    appointment_id: str
    patient_id: str
    site_id: str
    product_id: str
    grams: Decimal
    needed_on: dt.date
    reason: str
    cause: str  # what took the vials: LOST (waste), RECALLED, EXPIRY

    topic = "STOCK_AT_RISK"

    def payload(self) -> dict[str, str]:
        return {
            "reservation_id": self.reservation_id,
            "appointment_id": self.appointment_id,
            "patient_id": self.patient_id,
            "site_id": self.site_id,
            "product_id": self.product_id,
            "grams": str(self.grams),
            "needed_on": self.needed_on.isoformat(),
            "reason": self.reason,
            "cause": self.cause,
        }


@dataclass(frozen=True)
class DispenseInput:
    reservation_id: str
    lines: list[tuple[str, int]]  # (lot id, vials); scans already resolved to lot ids
    grams_administered: Decimal
    grams_wasted: Decimal
    patient_id: str
    appointment_id: str
    allow_over_reservation: bool
    override_reason: str
    administered_at: dt.datetime | None


@dataclass(frozen=True)
class DispensedVials:
    """Vials of one lot opened for the patient: how many came from the reservation's hold, and
    the grams given and thrown away."""

    lot: Lot
    vials: int
    from_reserved: int
    grams_given: Decimal
    grams_wasted: Decimal


@dataclass(frozen=True)
class Dispensing:
    """What a dispense books: the vials opened per lot; the held vials not opened (lot id →
    vials), which go back to their lots; the override reason, when more than the dose reserved
    was given."""

    opened: list[DispensedVials]
    unused: dict[str, int]
    override_reason: str | None


@dataclass(frozen=True)
class Administration:
    """The trace a recall follows: which patient got how much of which lot, when."""

    id: str
    reservation_id: str
    patient_id: str
    appointment_id: str
    site_id: str
    lot_id: str
    product_id: str
    lot_number: str
    vials: int
    grams_administered: Decimal
    grams_wasted: Decimal
    administered_at: dt.datetime


@dataclass(frozen=True)
class OpenedVials:
    lot_id: str
    vials: int
    presentation_grams: Decimal

    @property
    def grams(self) -> Decimal:
        return self.vials * self.presentation_grams


def split_waste(
    lines: list[OpenedVials], administered: Decimal, wasted: Decimal, v: Violations
) -> list[tuple[Decimal, Decimal]]:
    """(grams given, grams wasted) per line. Opened grams must equal given plus wasted: a vial is
    single-use, so whatever is opened and not given is waste
    (docs/clinical-rules.md#single-use-vials). The waste is put on the lines from the last
    backwards, each up to what it opened: the last vial spiked is the one left part-used."""
    opened = sum((line.grams for line in lines), Decimal(0))
    if administered < 0:
        v.add("grams_administered", "must not be negative")
    if wasted < 0:
        v.add("grams_wasted", "must not be negative")
    if administered + wasted != opened and administered >= 0 and wasted >= 0:
        v.add(
            "grams_wasted",
            f"the vials opened hold {opened} g; given {administered} g + wasted {wasted} g "
            f"must add up to it",
        )
    if v:
        return []
    left = wasted
    shares: list[tuple[Decimal, Decimal]] = []
    for line in reversed(lines):
        waste = min(left, line.grams)
        left -= waste
        shares.append((line.grams - waste, waste))
    return list(reversed(shares))


def _rule(rule: Rule, lot: Lot, text: str) -> PreconditionViolation:
    return PreconditionViolation(rule, f"lots/{lot.id}", text)
