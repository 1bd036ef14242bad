"""Reservation states and the arithmetic of a dispense."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from services.common.errors import Violations

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
