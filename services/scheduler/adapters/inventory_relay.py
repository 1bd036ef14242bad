"""Bookings → the inventory's reservations, through the transactional outbox
(services/common/outbox.py).

BookAppointment, RescheduleAppointment, CancelAppointment and MarkNoShow write RESERVE_STOCK,
AMEND_RESERVATION or RELEASE_RESERVATION to the scheduler's outbox in the booking's own
transaction; the outbox relay hands those rows to ``StockRelay.deliver``, which calls the
inventory. A booking therefore never fails because the pharmacy service is down: its
reservation follows when the inventory is back. Every call is idempotent at the inventory
(the appointment id is ReserveStock's key; Amend and Release carry the outbox row id as
request_id), so a redelivery after a crash changes nothing.

The outcome is written back on the appointment: RESERVED, or AT_RISK with the inventory's
explanation, plus a STOCK_AT_RISK notification to the pharmacy; a later successful reservation
(an amend after new stock arrived, say) clears it.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import grpc
from google.type.date_pb2 import Date

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from services.common.clock import Clock
from services.common.convert import decimal_str
from services.common.db import Database
from services.common.outbox import OutgoingEvent
from services.common.outbox_relay import PermanentFailure, publish_or_dead_letter
from services.scheduler.store.events import Event, board_changed, write_events
from services.scheduler.store.models import AppointmentRow, outbox

log = logging.getLogger(__name__)

STOCK_TOPICS = frozenset(
    {
        "RESERVE_STOCK",
        "AMEND_RESERVATION",
        "RELEASE_RESERVATION",
        "DISPENSE",
        "HOME_DISPENSE",
        "DEMAND_FORECAST",
    }
)
TIMEOUT_SECONDS = 10
RESERVED, AT_RISK, DISPENSED = "RESERVED", "AT_RISK", "DISPENSED"
# the inventory's answers that are refusals, not outages
REFUSALS = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
)


def stock_order(event: OutgoingEvent) -> tuple[str, str]:
    """The rows a failed stock row holds back (the relay's ``order_key``): an appointment's
    commands (RESERVE, AMEND, RELEASE, DISPENSE; HOME_DISPENSE names its home infusion as the
    appointment), so a RELEASE never overtakes its RESERVE; a site's forecasts likewise (a
    later DEMAND_FORECAST overwrites the days of an earlier one). Another appointment's rows go
    on: one row failing again and again stops no other reservation."""
    body: dict[str, Any] = event.payload.get("payload") or {}
    if event.topic == "DEMAND_FORECAST":
        sites = sorted({str(f.get("site_id", "")) for f in body.get("forecasts") or []})
        return ("forecast", sites[0] if len(sites) == 1 else "")
    return ("appointment", str(body.get("appointment_id", "")))


STOCK_CHAIN = ("stock",)
"""The relay's ``chain_key`` of every stock row: all are delivered in the order written, one
after another, so that of two bookings competing for the same vials (Ig is often short) the one
made first reserves first and the later one is left AT_RISK, as a pharmacist expects, rather
than whichever delivery won a race. (Chained by appointment, a later booking's RESERVE overtook
an earlier one's in the e2e scenario and took the first-expiring lot.)"""


def _date(text: str) -> Date:
    day = dt.date.fromisoformat(text)
    return Date(year=day.year, month=day.month, day=day.day)


def _reserve(body: dict[str, Any], grams: str, needed_on: str) -> inv.ReserveStockRequest:
    """ReserveStock for the outbox row's appointment (or home infusion): its id is the key."""
    return inv.ReserveStockRequest(
        appointment_id=body["appointment_id"],
        site_id=body["site_id"],
        patient_id=body["patient_id"],
        product_id=body["product_id"],
        grams=grams,
        needed_on=_date(needed_on),
        actor="scheduler",
    )


class StockRelay:
    def __init__(self, db: Database, clock: Clock, channel: grpc.Channel) -> None:
        self.db = db
        self.clock = clock
        self.stub = inventory_pb2_grpc.InventoryServiceStub(channel)

    def deliver(self, event: OutgoingEvent) -> None:
        """Raises on an outage (the relay retries); a refusal is an answer, recorded."""
        body: dict[str, Any] = event.payload["payload"]
        if event.topic == "RELEASE_RESERVATION":
            self._release(body, event.id)
            return
        if event.topic == "DISPENSE":
            self._dispense(body, event.id)
            return
        if event.topic == "HOME_DISPENSE":
            self._home_dispense(body, event.id)
            return
        if event.topic == "DEMAND_FORECAST":
            request = inv.UpsertDemandForecastRequest(
                forecasts=[
                    inv.DemandForecast(
                        site_id=f["site_id"],
                        product_id=f["product_id"],
                        day=_date(f["day"]),
                        grams=f["grams"],
                    )
                    for f in body["forecasts"]
                ],
                request_id=event.id,
            )
            publish_or_dead_letter(
                lambda: self.stub.UpsertDemandForecast(request, timeout=TIMEOUT_SECONDS)
            )
            return
        try:
            if event.topic == "AMEND_RESERVATION" and (existing := self._find(body)):
                self.stub.AmendReservation(
                    inv.AmendReservationRequest(
                        reservation_id=existing.id,
                        grams=body["grams"],
                        needed_on=_date(body["needed_on"]),
                        request_id=event.id,
                        actor="scheduler",
                    ),
                    timeout=TIMEOUT_SECONDS,
                )
            else:  # a booking, or an amend of a booking whose reservation was never made
                self.stub.ReserveStock(
                    _reserve(body, body["grams"], body["needed_on"]), timeout=TIMEOUT_SECONDS
                )
        except grpc.RpcError as error:
            code = error.code()
            if code is grpc.StatusCode.FAILED_PRECONDITION:  # not enough stock, or no site
                self._record(body, AT_RISK, error.details() or "refused by the inventory")
                return
            if code is grpc.StatusCode.ALREADY_EXISTS:  # reserved already, later amended
                self._record(body, RESERVED, "")
                return
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                self._record(body, AT_RISK, error.details() or "refused by the inventory")
                raise PermanentFailure(f"{code.name}: {error.details()}") from error
            raise
        self._record(body, RESERVED, "")

    def _find(self, body: dict[str, Any]) -> Any:
        try:
            return self.stub.GetReservation(
                inv.GetReservationRequest(appointment_id=body["appointment_id"]),
                timeout=TIMEOUT_SECONDS,
            ).reservation
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def _release(self, body: dict[str, Any], request_id: str) -> None:
        existing = self._find(body)
        if existing is None:
            return  # never reserved (a hold, or a refused reservation): nothing to give back
        try:
            self.stub.ReleaseReservation(
                inv.ReleaseReservationRequest(
                    reservation_id=existing.id,
                    reason="appointment cancelled or missed",
                    actor="scheduler",
                    request_id=request_id,
                ),
                timeout=TIMEOUT_SECONDS,
            )
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.FAILED_PRECONDITION:  # dispensed already
                raise

    def _dispense(self, body: dict[str, Any], request_id: str) -> None:
        """CompleteInfusion → DispenseReservation: the lots scanned at the chair (by lot
        number at the site, or the GS1 string), else the reserved vials; what was opened and
        not given is waste. A dispense the inventory refuses is noted on the appointment."""
        reservation = self._find(body)
        if reservation is None:
            self._record(body, AT_RISK, "completed without a reservation: dispense not recorded")
            return
        scanned = self._scanned(body, reservation.allocated_product_id)
        if isinstance(scanned, str):
            self._record(body, AT_RISK, scanned)
            return
        try:
            self._dispensed(
                body,
                reservation,
                scanned,
                "recorded at the chair (CompleteInfusion)",
                request_id=request_id,
            )
        except grpc.RpcError as error:
            if error.code() in REFUSALS:
                self._record(body, AT_RISK, f"dispense not recorded: {error.details()}")
                return
            raise
        self._record(body, DISPENSED, "")

    def _home_dispense(self, body: dict[str, Any], request_id: str) -> None:
        """RecordHomeInfusion → the dose leaves the pharmacy: a reservation keyed by the home
        infusion's id (needed on the site's today), dispensed at once with the lots recorded
        (else the vials reserved), so stock on hand falls and each lot's recall trace names the
        patient. No appointment holds a stock state: a refusal is logged and the row
        dead-lettered for the pharmacy to settle by hand."""
        scanned = self._scanned(body, body["product_id"])
        if isinstance(scanned, str):
            raise PermanentFailure(self._home_refused(body, scanned))
        reservation = self._find(body)
        try:
            if reservation is None:
                today = self.clock.now().astimezone(ZoneInfo(body["time_zone"])).date()
                reservation = self.stub.ReserveStock(
                    _reserve(body, body["grams_given"], today.isoformat()),
                    timeout=TIMEOUT_SECONDS,
                ).reservation
            given_on = dt.date.fromisoformat(body["given_on"])
            noon = dt.datetime.combine(given_on, dt.time(12), tzinfo=ZoneInfo(body["time_zone"]))
            self._dispensed(
                body,
                reservation,
                scanned,
                "given at home (RecordHomeInfusion)",
                administered=noon,
                request_id=request_id,
            )
        except grpc.RpcError as error:
            if error.code() in (*REFUSALS, grpc.StatusCode.ALREADY_EXISTS):
                raise PermanentFailure(
                    self._home_refused(body, f"{error.code().name}: {error.details()}")
                ) from error
            raise

    def _home_refused(self, body: dict[str, Any], why: str) -> str:
        text = f"home infusion {body['home_infusion_id']}: dispense not recorded: {why}"
        log.warning("%s", text)
        return text

    def _scanned(
        self, body: dict[str, Any], product_id: str
    ) -> tuple[list[inv.DispensedVials], Decimal] | str:
        """The vials scanned (by lot number at the site, or the GS1 string) and the grams they
        hold (-1 when a GS1 string leaves the vial size to the inventory); or why not."""
        opened = Decimal(0)
        vials: list[inv.DispensedVials] = []
        for scan in body.get("scanned_lots") or []:
            if scan.get("gs1_element_string"):
                vials.append(
                    inv.DispensedVials(
                        gs1_element_string=scan["gs1_element_string"], vials=scan["vials"]
                    )
                )
                opened = Decimal(-1)  # the vial size is the inventory's to know
                continue
            lot = self._lot(body["site_id"], scan.get("lot_number", ""), product_id)
            if lot is None:
                return f"lot {scan.get('lot_number')!r} is not at the site"
            vials.append(inv.DispensedVials(lot_id=lot.id, vials=scan["vials"]))
            if opened >= 0:
                opened += Decimal(lot.presentation_grams) * scan["vials"]
        return vials, opened

    def _dispensed(
        self,
        body: dict[str, Any],
        reservation: Any,
        scanned: tuple[list[inv.DispensedVials], Decimal],
        why: str,
        administered: dt.datetime | None = None,
        request_id: str = "",
    ) -> None:
        """DispenseReservation of the scanned vials, else the reserved ones; what was opened
        and not given is waste."""
        vials, opened = scanned
        if not vials:  # nothing scanned: the reserved vials were used
            for line in reservation.lines:
                vials.append(inv.DispensedVials(lot_id=line.lot_id, vials=line.vials))
                opened += Decimal(line.presentation_grams) * line.vials
        given = Decimal(body["grams_given"])
        wasted = max(opened - given, Decimal(0)) if opened >= 0 else Decimal(0)
        request = inv.DispenseReservationRequest(
            reservation_id=reservation.id,
            vials=vials,
            grams_administered=decimal_str(given),
            grams_wasted=decimal_str(wasted),
            patient_id=body["patient_id"],
            appointment_id=body["appointment_id"],
            allow_over_reservation=True,
            override_reason=why,
            actor="scheduler",
            request_id=request_id,
        )
        if administered is not None:
            request.administered_time.FromDatetime(administered.astimezone(dt.UTC))
        self.stub.DispenseReservation(request, timeout=TIMEOUT_SECONDS)

    def _lot(self, site_id: str, lot_number: str, product_id: str) -> Any:
        found = self.stub.ListLots(
            inv.ListLotsRequest(site_id=site_id, lot_number=lot_number), timeout=TIMEOUT_SECONDS
        ).lots
        preferred = [lot for lot in found if lot.product_id == product_id]
        return (preferred or list(found) or [None])[0]

    def _record(self, body: dict[str, Any], status: str, note: str) -> None:
        now = self.clock.now()
        with self.db.write() as session:
            row = session.get(AppointmentRow, body["appointment_id"])
            if row is None:
                return
            changed = row.stock_status != status
            row.stock_status = status
            row.stock_note = note[:1000]
            if changed:  # the board shows at risk (and its clearing): tell it
                board = board_changed(
                    row.id,
                    row.site_id,
                    row.local_date,
                    row.status,
                    row.revision,
                    status,
                    key_suffix=f":{status}",
                )
                write_events(session, outbox, [board], now)
            if status == AT_RISK:
                event = Event(
                    "STOCK_AT_RISK",
                    f"STOCK_AT_RISK:{row.id}:{row.revision}",
                    {
                        "appointment_id": row.id,
                        "patient_id": row.patient_id,
                        "site_id": row.site_id,
                        "product_id": row.product_id,
                        "grams": body["grams"],
                        "needed_on": body["needed_on"],
                        "reason": note,
                        "cause": "BOOKING",
                    },
                )
                write_events(session, outbox, [event], now)
        if status == AT_RISK:
            log.warning("appointment %s is at risk: %s", body["appointment_id"], note)
