"""Reservations, dispensing and administrations: protobuf ↔ the reservation domain. No rules
live here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from infusion.inventory.v1 import inventory_pb2 as pb
from services.common.convert import (
    decimal_str,
    from_date,
    from_datetime,
    parse_date,
    parse_decimal,
    to_datetime,
)
from services.common.errors import Violations
from services.common.etag import etag_for
from services.common.gs1 import ScanError, read_scan
from services.inventory.domain.reservations import (
    Administration,
    DispenseInput,
    Reservation,
    ReservationRequest,
    ReservationState,
)
from services.inventory.usecases.reservations import Repaired

STATE: dict[ReservationState, Any] = {
    s: pb.ReservationState.Value(f"RESERVATION_STATE_{s.value}") for s in ReservationState
}
STATE_IN = {v: k for k, v in STATE.items()}
WASTE_REASON = {
    pb.WASTE_REASON_OPENED_UNUSED: "OPENED_UNUSED",
    pb.WASTE_REASON_DAMAGED: "DAMAGED",
    pb.WASTE_REASON_EXPIRED: "EXPIRED",
    pb.WASTE_REASON_TEMPERATURE_EXCURSION: "TEMPERATURE_EXCURSION",
    pb.WASTE_REASON_OTHER: "OTHER",
}


def reservation_out(r: Reservation) -> pb.Reservation:
    return pb.Reservation(
        id=r.id,
        appointment_id=r.appointment_id,
        site_id=r.site_id,
        patient_id=r.patient_id,
        product_id=r.product_id,
        alternative_product_ids=list(r.alternative_product_ids),
        grams=decimal_str(r.grams),
        rounding_band_percent=decimal_str(r.rounding_band_percent),
        needed_on=from_date(r.needed_on),
        state=STATE[r.state],
        lines=[
            pb.ReservationLine(
                lot_id=line.lot_id,
                product_id=line.product_id,
                lot_number=line.lot_number,
                presentation_grams=decimal_str(line.presentation_grams),
                vials=line.vials,
                expiry_date=from_date(line.expiry_date),
            )
            for line in r.lines
        ],
        allocated_grams=decimal_str(r.allocated_grams),
        overfill_grams=decimal_str(r.overfill_grams),
        allocated_product_id=r.allocated_product_id,
        at_risk_reason=r.at_risk_reason,
        etag=etag_for(r.revision),
        create_time=from_datetime(r.created_at),
        update_time=from_datetime(r.updated_at),
    )


def administration_out(a: Administration) -> pb.Administration:
    return pb.Administration(
        id=a.id,
        patient_id=a.patient_id,
        appointment_id=a.appointment_id,
        reservation_id=a.reservation_id,
        site_id=a.site_id,
        lot_id=a.lot_id,
        product_id=a.product_id,
        lot_number=a.lot_number,
        vials=a.vials,
        grams_administered=decimal_str(a.grams_administered),
        grams_wasted=decimal_str(a.grams_wasted),
        administered_time=from_datetime(a.administered_at),
    )


def repaired_out(r: Repaired) -> tuple[list[pb.Reservation], list[pb.Reservation]]:
    """(reallocated, at risk)"""
    return [reservation_out(x) for x in r.reallocated], [reservation_out(x) for x in r.at_risk]


def reserve_in(request: pb.ReserveStockRequest) -> ReservationRequest:
    v = Violations()
    grams = parse_decimal(request.grams, "grams", v)
    band = parse_decimal(
        request.rounding_band_percent or "0", "rounding_band_percent", v, required=False
    )
    needed_on = parse_date(request.needed_on, "needed_on", v)
    v.raise_if_any()
    assert grams is not None and needed_on is not None
    return ReservationRequest(
        appointment_id=request.appointment_id,
        site_id=request.site_id,
        patient_id=request.patient_id,
        products=(request.product_id, *request.alternative_product_ids),
        grams=grams,
        band_percent=band or Decimal(0),
        needed_on=needed_on,
    )


def amend_in(request: pb.AmendReservationRequest) -> tuple[str, Decimal | None, dt.date | None]:
    """(reservation id, new dose or None, new day or None)"""
    v = Violations()
    reservation_id = v.require(request.reservation_id, "reservation_id")
    grams = parse_decimal(request.grams, "grams", v, required=False)
    needed_on = (
        parse_date(request.needed_on, "needed_on", v) if request.HasField("needed_on") else None
    )
    if grams is None and needed_on is None and not v:
        v.add("grams", "give a new dose, a new needed_on day, or both")
    v.raise_if_any()
    return reservation_id, grams, needed_on


@dataclass(frozen=True)
class Scanned:
    """A dispensed vial given by its GS1 scan: the lot is found at the reservation's site."""

    line: int
    gtin: str
    lot_number: str


def dispense_in(request: pb.DispenseReservationRequest) -> tuple[DispenseInput, list[Scanned]]:
    """The dispense as asked; lines given by scan carry "" as lot id until resolved."""
    v = Violations()
    reservation_id = v.require(request.reservation_id, "reservation_id")
    given = parse_decimal(request.grams_administered, "grams_administered", v)
    wasted = parse_decimal(request.grams_wasted or "0", "grams_wasted", v)
    scans: list[Scanned] = []
    lines: list[tuple[str, int]] = []
    for i, item in enumerate(request.vials):
        if item.gs1_element_string and not item.lot_id:
            try:
                scan = read_scan(item.gs1_element_string)
            except ScanError as error:
                v.add(f"vials[{i}].gs1_element_string", str(error))
                continue
            scans.append(Scanned(i, scan.gtin, scan.lot_number))
        lines.append((item.lot_id, item.vials))
    v.raise_if_any()
    assert given is not None and wasted is not None
    return DispenseInput(
        reservation_id=reservation_id,
        lines=lines,
        grams_administered=given,
        grams_wasted=wasted,
        patient_id=request.patient_id,
        appointment_id=request.appointment_id,
        allow_over_reservation=request.allow_over_reservation,
        override_reason=request.override_reason,
        administered_at=to_datetime(request.administered_time)
        if request.HasField("administered_time")
        else None,
    ), scans


def waste_reason_in(request: pb.RecordWasteRequest) -> str:
    v = Violations()
    v.require(request.lot_id, "lot_id")
    reason = WASTE_REASON.get(request.reason)
    if reason is None:
        v.add("reason", "is required: opened unused, damaged, expired, temperature, other")
    if reason == "OTHER" and not request.note.strip():
        v.add("note", "is required when the reason is OTHER")
    v.raise_if_any()
    assert reason is not None
    return reason
