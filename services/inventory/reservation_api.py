"""Reservation, dispensing, waste, transfer, recall and expiry RPCs: protobuf ↔ use cases.
No rules live here."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import grpc

from infusion.inventory.v1 import inventory_pb2 as pb
from services.common.convert import (
    decimal_str,
    from_date,
    from_datetime,
    parse_date,
    parse_decimal,
    to_datetime,
)
from services.common.errors import FieldViolation, InvalidArgument, Violations
from services.common.etag import etag_for
from services.common.pagination import page_request, split_page
from services.inventory.domain.gs1 import ScanError, read_scan
from services.inventory.domain.reservations import ReservationRequest, ReservationState, from_mg
from services.inventory.reservation_service import (
    DispenseInput,
    Repaired,
    ReservationService,
    ReservationView,
)
from services.inventory.stock_api import movement_out
from services.inventory.stock_service import Actor
from services.inventory.store.models import AdministrationRow
from services.inventory.store.stock import LotView

STATE: dict[ReservationState, Any] = {
    s: pb.ReservationState.Value(f"RESERVATION_STATE_{s.value}") for s in ReservationState
}
_STATE_IN = {v: k for k, v in STATE.items()}
WASTE_REASON = {
    pb.WASTE_REASON_OPENED_UNUSED: "OPENED_UNUSED",
    pb.WASTE_REASON_DAMAGED: "DAMAGED",
    pb.WASTE_REASON_EXPIRED: "EXPIRED",
    pb.WASTE_REASON_TEMPERATURE_EXCURSION: "TEMPERATURE_EXCURSION",
    pb.WASTE_REASON_OTHER: "OTHER",
}


def reservation_out(view: ReservationView) -> pb.Reservation:
    r = view.row
    return pb.Reservation(
        id=r.id,
        appointment_id=r.appointment_id,
        site_id=r.site_id,
        patient_id=r.patient_id,
        product_id=r.product_id,
        alternative_product_ids=list(r.alternative_product_ids),
        grams=decimal_str(from_mg(r.grams_mg)),
        rounding_band_percent=decimal_str(r.rounding_band_percent),
        needed_on=from_date(r.needed_on),
        state=STATE[view.state],
        lines=[
            pb.ReservationLine(
                lot_id=lot.id,
                product_id=lot.product_id,
                lot_number=lot.lot_number,
                presentation_grams=decimal_str(lot.presentation_grams),
                vials=line.vials,
                expiry_date=from_date(lot.expiry_date),
            )
            for line, lot in sorted(view.lines, key=lambda p: (p[1].expiry_date, p[1].id))
        ],
        allocated_grams=decimal_str(from_mg(r.allocated_mg)),
        overfill_grams=decimal_str(max(from_mg(r.allocated_mg) - from_mg(r.grams_mg), Decimal(0)))
        if r.allocated_mg
        else "0",
        allocated_product_id=r.allocated_product_id,
        at_risk_reason=r.at_risk_reason,
        etag=etag_for(r.revision),
        create_time=from_datetime(r.created_at),
        update_time=from_datetime(r.updated_at),
    )


def administration_out(a: AdministrationRow) -> pb.Administration:
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


class ReservationApi:
    """Mixed into InventoryApi; ``reservations``, ``_lot_out`` and ``_mutate`` come from it."""

    reservations: ReservationService
    _mutate: Callable[..., Any]
    _lot_out: Callable[[LotView], pb.Lot]

    def _repaired(self, r: Repaired) -> tuple[list[pb.Reservation], list[pb.Reservation]]:
        return [reservation_out(x) for x in r.reallocated], [reservation_out(x) for x in r.at_risk]

    def ReserveStock(self, request: pb.ReserveStockRequest, context: grpc.ServicerContext) -> Any:
        v = Violations()
        grams = parse_decimal(request.grams, "grams", v)
        band = parse_decimal(
            request.rounding_band_percent or "0", "rounding_band_percent", v, required=False
        )
        needed_on = parse_date(request.needed_on, "needed_on", v)
        v.raise_if_any()
        assert grams is not None and needed_on is not None
        view = self.reservations.reserve(
            ReservationRequest(
                appointment_id=request.appointment_id,
                site_id=request.site_id,
                patient_id=request.patient_id,
                products=(request.product_id, *request.alternative_product_ids),
                grams=grams,
                band_percent=band or Decimal(0),
                needed_on=needed_on,
            ),
            Actor(request.actor, "", request.appointment_id),
        )
        return pb.ReserveStockResponse(reservation=reservation_out(view))

    def AmendReservation(
        self, request: pb.AmendReservationRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        reservation_id = v.require(request.reservation_id, "reservation_id")
        grams = parse_decimal(request.grams, "grams", v, required=False)
        needed_on = (
            parse_date(request.needed_on, "needed_on", v) if request.HasField("needed_on") else None
        )
        if grams is None and needed_on is None and not v:
            v.add("grams", "give a new dose, a new needed_on day, or both")
        v.raise_if_any()
        actor = Actor(request.actor, "", request.request_id)
        return self._mutate(
            "AmendReservation",
            request,
            pb.AmendReservationResponse,
            lambda s: pb.AmendReservationResponse(
                reservation=reservation_out(
                    self.reservations.amend(
                        s, reservation_id, grams, needed_on, request.etag, actor
                    )
                )
            ),
        )

    def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        reservation_id = v.require(request.reservation_id, "reservation_id")
        v.raise_if_any()
        actor = Actor(request.actor, request.reason, request.request_id)
        return self._mutate(
            "ReleaseReservation",
            request,
            pb.ReleaseReservationResponse,
            lambda s: pb.ReleaseReservationResponse(
                reservation=reservation_out(self.reservations.release(s, reservation_id, actor))
            ),
        )

    def GetReservation(
        self, request: pb.GetReservationRequest, context: grpc.ServicerContext
    ) -> Any:
        if not request.id and not request.appointment_id:
            raise InvalidArgument([FieldViolation("id", "give an id or an appointment_id")])
        view = self.reservations.get(request.id, request.appointment_id)
        return pb.GetReservationResponse(reservation=reservation_out(view))

    def ListReservations(
        self, request: pb.ListReservationsRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        start = parse_date(request.needed_from, "needed_from", v, required=False)
        end = parse_date(request.needed_to, "needed_to", v, required=False)
        if start and end and start > end:
            v.add("needed_to", "is before needed_from")
        v.raise_if_any()
        scope = (
            f"reservations:{request.site_id}:{request.product_id}:{request.patient_id}:"
            f"{request.state}:{start}:{end}"
        )
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.reservations.list_reservations(
                request.site_id,
                request.product_id,
                request.patient_id,
                _STATE_IN.get(request.state),
                start,
                end,
                page,
            ),
            page,
            lambda view: [view.row.needed_on.isoformat(), view.row.id],
            scope=scope,
        )
        return pb.ListReservationsResponse(
            reservations=[reservation_out(r) for r in rows], next_page_token=token
        )

    def DispenseReservation(
        self, request: pb.DispenseReservationRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        reservation_id = v.require(request.reservation_id, "reservation_id")
        given = parse_decimal(request.grams_administered, "grams_administered", v)
        wasted = parse_decimal(request.grams_wasted or "0", "grams_wasted", v)
        scans: list[tuple[int, str, str]] = []  # (line, gtin, lot number)
        lines: list[tuple[str, int]] = []
        for i, item in enumerate(request.vials):
            if item.gs1_element_string and not item.lot_id:
                try:
                    scan = read_scan(item.gs1_element_string)
                except ScanError as error:
                    v.add(f"vials[{i}].gs1_element_string", str(error))
                    continue
                scans.append((i, scan.gtin, scan.lot_number))
            lines.append((item.lot_id, item.vials))
        v.raise_if_any()
        assert given is not None and wasted is not None
        actor = Actor(request.actor, "", request.request_id)

        def dispense(session: Any) -> pb.DispenseReservationResponse:
            resolved = list(lines)
            for i, gtin, lot_number in scans:
                resolved[i] = (
                    self.reservations.lot_for_scan(
                        session, reservation_id, gtin, lot_number, f"vials[{i}]"
                    ),
                    resolved[i][1],
                )
            done = self.reservations.dispense(
                session,
                DispenseInput(
                    reservation_id=reservation_id,
                    lines=resolved,
                    grams_administered=given,
                    grams_wasted=wasted,
                    patient_id=request.patient_id,
                    appointment_id=request.appointment_id,
                    allow_over_reservation=request.allow_over_reservation,
                    override_reason=request.override_reason,
                    administered_at=to_datetime(request.administered_time)
                    if request.HasField("administered_time")
                    else None,
                ),
                actor,
            )
            return pb.DispenseReservationResponse(
                reservation=reservation_out(done.reservation),
                movements=[movement_out(m) for m in done.movements],
                administrations=[administration_out(a) for a in done.administrations],
            )

        return self._mutate(
            "DispenseReservation", request, pb.DispenseReservationResponse, dispense
        )

    def RecordWaste(self, request: pb.RecordWasteRequest, context: grpc.ServicerContext) -> Any:
        v = Violations()
        lot_id = v.require(request.lot_id, "lot_id")
        reason = WASTE_REASON.get(request.reason)
        if reason is None:
            v.add("reason", "is required: opened unused, damaged, expired, temperature, other")
        if reason == "OTHER" and not request.note.strip():
            v.add("note", "is required when the reason is OTHER")
        v.raise_if_any()
        assert reason is not None
        actor = Actor(request.actor, request.note, request.request_id)

        def waste(session: Any) -> pb.RecordWasteResponse:
            lot, movement, moved = self.reservations.record_waste(
                session, lot_id, request.vials, reason, actor
            )
            return pb.RecordWasteResponse(
                lot=self._lot_out(lot),
                movement=movement_out(movement),
                reallocated=[reservation_out(r) for r in moved],
            )

        return self._mutate("RecordWaste", request, pb.RecordWasteResponse, waste)

    def TransferStock(self, request: pb.TransferStockRequest, context: grpc.ServicerContext) -> Any:
        v = Violations()
        lot_id = v.require(request.lot_id, "lot_id")
        v.raise_if_any()
        actor = Actor(request.actor, request.reason, request.request_id)

        def transfer(session: Any) -> pb.TransferStockResponse:
            source, target, moves = self.reservations.transfer(
                session,
                lot_id,
                request.to_site_id,
                request.to_storage_unit_id,
                request.vials,
                actor,
            )
            return pb.TransferStockResponse(
                from_lot=self._lot_out(source),
                to_lot=self._lot_out(target),
                movements=[movement_out(m) for m in moves],
            )

        return self._mutate("TransferStock", request, pb.TransferStockResponse, transfer)

    def ReturnToSupplier(
        self, request: pb.ReturnToSupplierRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        lot_id = v.require(request.lot_id, "lot_id")
        v.require(request.reason, "reason")
        v.raise_if_any()
        actor = Actor(request.actor, request.reason, request.request_id)

        def give_back(session: Any) -> pb.ReturnToSupplierResponse:
            lot, movement = self.reservations.return_to_supplier(
                session, lot_id, request.vials, actor
            )
            return pb.ReturnToSupplierResponse(
                lot=self._lot_out(lot), movement=movement_out(movement)
            )

        return self._mutate("ReturnToSupplier", request, pb.ReturnToSupplierResponse, give_back)

    def RecallLot(self, request: pb.RecallLotRequest, context: grpc.ServicerContext) -> Any:
        actor = Actor(request.actor, request.reason, request.request_id)

        def recall(session: Any) -> pb.RecallLotResponse:
            lots, repaired, count = self.reservations.recall(
                session, request.product_id, request.lot_number, actor
            )
            moved, risky = self._repaired(repaired)
            return pb.RecallLotResponse(
                lots=[self._lot_out(lot) for lot in lots],
                reallocated=moved,
                at_risk=risky,
                recipients=count,
            )

        return self._mutate("RecallLot", request, pb.RecallLotResponse, recall)

    def ListLotRecipients(
        self, request: pb.ListLotRecipientsRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        v.require(request.product_id, "product_id")
        v.require(request.lot_number, "lot_number")
        v.raise_if_any()
        scope = f"recipients:{request.product_id}:{request.lot_number}"
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.reservations.recipients(request.product_id, request.lot_number, page),
            page,
            lambda a: [a.id],
            scope=scope,
        )
        return pb.ListLotRecipientsResponse(
            administrations=[administration_out(a) for a in rows], next_page_token=token
        )

    def RunExpiryCheck(
        self, request: pb.RunExpiryCheckRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        v.require(request.site_id, "site_id")
        as_of = parse_date(request.as_of, "as_of", v, required=False)
        v.raise_if_any()
        expired, repaired, warnings = self.reservations.expiry_check(request.site_id, as_of)
        moved, risky = self._repaired(repaired)
        return pb.RunExpiryCheckResponse(
            expired=[self._lot_out(lot) for lot in expired],
            reallocated=moved,
            at_risk=risky,
            warnings=[
                pb.LotExpiryWarning(lot=self._lot_out(lot), days_left=left, threshold_days=band)
                for lot, left, band in warnings
            ],
        )
