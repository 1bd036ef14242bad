"""Reservations, dispensing, waste, transfers, recalls and expiry through a real gRPC server on
SQLite and PostgreSQL: the FEFO choice of domain/allocation.py, refusals that write nothing,
idempotent retries, the administration trace and the outbox, and projections that always
equal the ledger."""

from __future__ import annotations

import json

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money

from infusion.inventory.v1 import inventory_pb2 as inv
from tests.integration.conftest import Platform, request_id, stock_site
from tests.integration.errors import error_reason, field_violations, precondition_types

GAMMAGARD = "gammagard-liquid"
PRIVIGEN = "privigen"
DAY = Date(year=2026, month=12, day=1)


@pytest.fixture(autouse=True)
def sites(platform: Platform) -> None:
    stock_site(platform, "site-1")
    stock_site(platform, "site-2")


def pid(p: Platform, code: str = GAMMAGARD) -> str:
    return p.inventory.GetProduct(inv.GetProductRequest(id=code)).product.id


def receive(
    p: Platform,
    lot: str,
    grams: str,
    vials: int,
    expiry: Date,
    code: str = GAMMAGARD,
    site: str = "site-1",
    pence: int = 34_000,
) -> inv.Lot:
    return p.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id=site,
            product_id=pid(p, code),
            presentation_grams=grams,
            lot_number=lot,
            expiry_date=expiry,
            vials=vials,
            # £34 per gram (docs/clinical-rules.md#cost): a 10 g vial costs £340; pence scale with
            # size
            unit_cost=Money(currency_code="GBP", units=pence // 100 * int(float(grams)) // 10),
            request_id=request_id(),
        )
    ).lot


def reserve(p: Platform, appointment: str, grams: str, **kw: object) -> inv.Reservation:
    fields: dict[str, object] = dict(
        appointment_id=appointment,
        site_id="site-1",
        patient_id="patient-1",
        product_id=pid(p),
        grams=grams,
        needed_on=DAY,
    )
    fields.update(kw)
    return p.inventory.ReserveStock(inv.ReserveStockRequest(**fields)).reservation  # type: ignore[arg-type]


def lot(p: Platform, lot_id: str) -> inv.Lot:
    return p.inventory.GetLot(inv.GetLotRequest(id=lot_id)).lot


def assert_ledger_matches(p: Platform) -> None:
    report = p.inventory.ReconcileStock(inv.ReconcileStockRequest())
    assert report.lots_checked > 0
    assert list(report.discrepancies) == []


def events(p: Platform, topic: str) -> list[dict[str, object]]:
    found = p.inventory.ListOutgoingEvents(inv.ListOutgoingEventsRequest(topic=topic)).events
    return [json.loads(e.payload_json) for e in found]


def test_fefo_mix_for_35_g_from_5_10_20_g_vials(platform: Platform) -> None:
    # Shelf: 20 g vials expiring 2027-01-31 (lot A), 10 g 2027-03-31 (B), 5 g 2027-06-30 (C),
    # and one 5 g vial expiring 2026-12-31 (D). 35 g can be made exactly (no overfill), so
    # rule 2 keeps the total at 35; rule 3 then takes as much as possible from the earliest
    # expiry: D gives 5 g (35 − 5 = 30 still makeable from the rest), A gives 20 g (10 g left,
    # makeable from B), A cannot give 40; then B gives 10 g. C gives nothing.
    a = receive(platform, "A", "20", 3, Date(year=2027, month=1, day=31))
    b = receive(platform, "B", "10", 5, Date(year=2027, month=3, day=31))
    c = receive(platform, "C", "5", 10, Date(year=2027, month=6, day=30))
    d = receive(platform, "D", "5", 1, Date(year=2026, month=12, day=31))
    r = reserve(platform, "appt-1", "35")
    assert [(x.lot_number, x.vials) for x in r.lines] == [("D", 1), ("A", 1), ("B", 1)]
    assert (r.allocated_grams, r.overfill_grams, r.state) == (
        "35",
        "0",
        inv.RESERVATION_STATE_ACTIVE,
    )
    assert [lot(platform, x.id).available_vials for x in (a, b, c, d)] == [2, 4, 10, 0]
    # the appointment id is the idempotency key: the same request returns the same reservation
    assert reserve(platform, "appt-1", "35") == r
    with pytest.raises(grpc.RpcError) as other:
        reserve(platform, "appt-1", "40")
    assert other.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(other.value) == "APPOINTMENT_RESERVED"
    assert_ledger_matches(platform)


def test_least_overfill_then_band_then_refusal_that_writes_nothing(platform: Platform) -> None:
    receive(platform, "T", "20", 2, Date(year=2027, month=6, day=30))
    # 35 g from 20 g vials only: 2 × 20 = 40 g covers it; 5 g will be opened and not given
    r = reserve(platform, "appt-1", "35")
    assert (r.allocated_grams, r.overfill_grams) == ("40", "5")
    # nothing left: 20 g asked for again is refused, naming what is short, and nothing written
    before = platform.inventory.ListMovements(inv.ListMovementsRequest(site_id="site-1"))
    with pytest.raises(grpc.RpcError) as short:
        reserve(platform, "appt-2", "20")
    assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_types(short.value) == ["STOCK_SHORT"]
    assert error_reason(short.value) == "STOCK_SHORT"
    assert "in date and unreserved: 0 g" in (short.value.details() or "")
    after = platform.inventory.ListMovements(inv.ListMovementsRequest(site_id="site-1"))
    assert after == before
    assert reserve(platform, "appt-1", "35") == r  # a retry is answered even with no stock left
    with pytest.raises(grpc.RpcError) as gone:
        platform.inventory.GetReservation(inv.GetReservationRequest(appointment_id="appt-2"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_band_allows_a_little_less_only_when_the_dose_cannot_be_covered(
    platform: Platform,
) -> None:
    receive(platform, "T", "10", 3, Date(year=2027, month=6, day=30))
    # 32 g wanted, 30 g on the shelf: within a 10 % band (≥ 28.8 g) the 3 vials are reserved
    r = reserve(platform, "appt-1", "32", rounding_band_percent="10")
    assert (r.allocated_grams, r.overfill_grams) == ("30", "0")


def test_substitute_only_when_the_product_cannot_cover(platform: Platform) -> None:
    receive(platform, "G", "10", 2, Date(year=2027, month=6, day=30))
    receive(platform, "P", "10", 5, Date(year=2027, month=6, day=30), code=PRIVIGEN)
    same = reserve(platform, "appt-1", "20", alternative_product_ids=[pid(platform, PRIVIGEN)])
    assert same.allocated_product_id == pid(platform)
    switched = reserve(platform, "appt-2", "20", alternative_product_ids=[pid(platform, PRIVIGEN)])
    assert switched.allocated_product_id == pid(platform, PRIVIGEN)


def test_the_last_of_ten_alternatives_is_promised_when_only_it_has_stock(
    platform: Platform,
) -> None:
    """A request names its product and up to ten alternatives, every one of them read (the
    promisable read's fixed product slots): stock of the tenth alone covers the dose."""
    others = [
        p
        for p in platform.inventory.ListProducts(inv.ListProductsRequest(page_size=50)).products
        if p.id != pid(platform)
    ]
    alternatives = others[:10]
    assert len(alternatives) == 10
    last = alternatives[-1]
    size = last.presentations[0].grams
    receive(platform, "LAST", size, 20, Date(year=2027, month=6, day=30), code=last.code)
    r = reserve(platform, "appt-1", size, alternative_product_ids=[p.id for p in alternatives])
    assert (r.allocated_product_id, r.allocated_grams) == (last.id, size)


def test_lots_expired_by_the_day_or_not_available_are_not_promised(platform: Platform) -> None:
    old = receive(platform, "OLD", "10", 5, Date(year=2026, month=11, day=30))
    held = receive(platform, "Q", "10", 5, Date(year=2027, month=6, day=30))
    platform.inventory.QuarantineLot(
        inv.QuarantineLotRequest(lot_id=held.id, reason="fridge alarm", request_id=request_id())
    )
    with pytest.raises(grpc.RpcError) as short:
        reserve(platform, "appt-1", "10")  # needed 2026-12-01: OLD expires the day before
    assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert lot(platform, old.id).reserved_vials == 0


def test_bad_requests_list_every_field(platform: Platform) -> None:
    with pytest.raises(grpc.RpcError) as bad:
        reserve(
            platform,
            "",
            "0",
            site_id="nowhere",
            needed_on=Date(year=2026, month=11, day=1),
            rounding_band_percent="80",
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad.value)) == {
        "site_id",
        "appointment_id",
        "grams",
        "rounding_band_percent",
    }
    with pytest.raises(grpc.RpcError) as past:
        reserve(platform, "appt-1", "10", needed_on=Date(year=2026, month=11, day=1))
    assert field_violations(past.value) == ["needed_on"]


def test_amend_moves_vials_and_a_failed_amend_changes_nothing(platform: Platform) -> None:
    receive(platform, "A", "10", 4, Date(year=2027, month=6, day=30))
    r = reserve(platform, "appt-1", "20")
    amended = platform.inventory.AmendReservation(
        inv.AmendReservationRequest(
            reservation_id=r.id, grams="30", etag=r.etag, request_id=request_id()
        )
    ).reservation
    assert (amended.grams, amended.allocated_grams) == ("30", "30")
    assert sum(x.vials for x in amended.lines) == 3
    with pytest.raises(grpc.RpcError) as short:
        platform.inventory.AmendReservation(
            inv.AmendReservationRequest(reservation_id=r.id, grams="50", request_id=request_id())
        )
    assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert platform.inventory.GetReservation(inv.GetReservationRequest(id=r.id)).reservation == (
        amended
    )
    with pytest.raises(grpc.RpcError) as stale:
        platform.inventory.AmendReservation(
            inv.AmendReservationRequest(
                reservation_id=r.id, grams="10", etag=r.etag, request_id=request_id()
            )
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    released = platform.inventory.ReleaseReservation(
        inv.ReleaseReservationRequest(reservation_id=r.id, reason="cancelled", request_id="rel")
    ).reservation
    assert released.state == inv.RESERVATION_STATE_RELEASED and not released.lines
    assert lot(platform, r.lines[0].lot_id).available_vials == 4
    assert_ledger_matches(platform)


def test_dispense_writes_movements_trace_and_cost_basis(platform: Platform) -> None:
    a = receive(platform, "A", "20", 2, Date(year=2027, month=6, day=30))
    b = receive(platform, "B", "5", 4, Date(year=2027, month=9, day=30))
    r = reserve(platform, "appt-1", "23")  # 20 + 5 = 25 g: the least overfill (2 g)
    assert (r.allocated_grams, r.overfill_grams) == ("25", "2")
    with pytest.raises(grpc.RpcError) as over:
        platform.inventory.DispenseReservation(
            inv.DispenseReservationRequest(
                reservation_id=r.id,
                vials=[inv.DispensedVials(lot_id=a.id, vials=2)],
                grams_administered="40",
                grams_wasted="0",
                request_id=request_id(),
            )
        )
    assert precondition_types(over.value) == ["DISPENSE_WITHIN_RESERVATION"]
    with pytest.raises(grpc.RpcError) as sums:
        platform.inventory.DispenseReservation(
            inv.DispenseReservationRequest(
                reservation_id=r.id,
                vials=[inv.DispensedVials(lot_id=a.id, vials=1)],
                grams_administered="23",
                grams_wasted="0",
                request_id=request_id(),
            )
        )
    assert field_violations(sums.value) == ["grams_wasted"]
    rid = request_id()
    request = inv.DispenseReservationRequest(
        reservation_id=r.id,
        vials=[
            inv.DispensedVials(lot_id=a.id, vials=1),
            inv.DispensedVials(lot_id=b.id, vials=1),
        ],
        grams_administered="23",
        grams_wasted="2",
        patient_id="patient-1",
        appointment_id="appt-1",
        request_id=rid,
    )
    done = platform.inventory.DispenseReservation(request)
    assert platform.inventory.DispenseReservation(request) == done  # a retry changes nothing
    assert done.reservation.state == inv.RESERVATION_STATE_DISPENSED
    # 20 g from A given in full; the 5 g vial of B is the last spiked: 3 g given, 2 g wasted
    assert [(x.lot_number, x.grams_administered, x.grams_wasted) for x in done.administrations] == [
        ("A", "20", "0"),
        ("B", "3", "2"),
    ]
    kinds = [(m.kind, m.on_hand_delta_vials, m.reserved_delta_vials) for m in done.movements]
    assert kinds == [
        (inv.MOVEMENT_KIND_DISPENSE, -1, -1),
        (inv.MOVEMENT_KIND_DISPENSE, -1, -1),
        (inv.MOVEMENT_KIND_WASTE, 0, 0),
    ]
    assert (lot(platform, a.id).on_hand_vials, lot(platform, b.id).on_hand_vials) == (1, 3)
    who = platform.inventory.ListLotRecipients(
        inv.ListLotRecipientsRequest(product_id=pid(platform), lot_number="B")
    ).administrations
    assert [(x.patient_id, x.appointment_id, x.grams_administered) for x in who] == [
        ("patient-1", "appt-1", "3")
    ]
    with pytest.raises(grpc.RpcError) as twice:
        platform.inventory.DispenseReservation(
            inv.DispenseReservationRequest(
                reservation_id=r.id,
                vials=[inv.DispensedVials(lot_id=a.id, vials=1)],
                grams_administered="20",
                request_id=request_id(),
            )
        )
    assert precondition_types(twice.value) == ["RESERVATION_OPEN"]
    assert_ledger_matches(platform)


def test_waste_of_reserved_vials_moves_the_reservation(platform: Platform) -> None:
    first = receive(platform, "A", "10", 2, Date(year=2027, month=3, day=31))
    later = receive(platform, "B", "10", 2, Date(year=2027, month=9, day=30))
    r = reserve(platform, "appt-1", "20")
    assert [x.lot_id for x in r.lines] == [first.id]
    wasted = platform.inventory.RecordWaste(
        inv.RecordWasteRequest(
            lot_id=first.id, vials=1, reason=inv.WASTE_REASON_DAMAGED, request_id=request_id()
        )
    )
    assert wasted.lot.on_hand_vials == 1
    moved = platform.inventory.GetReservation(inv.GetReservationRequest(id=r.id)).reservation
    assert moved.state == inv.RESERVATION_STATE_ACTIVE
    assert sorted((x.lot_number, x.vials) for x in moved.lines) == [("B", 2)]
    assert lot(platform, later.id).available_vials == 0
    with pytest.raises(grpc.RpcError) as bad:
        platform.inventory.RecordWaste(
            inv.RecordWasteRequest(lot_id=first.id, vials=1, reason=inv.WASTE_REASON_OTHER)
        )
    assert field_violations(bad.value) == ["note"]
    assert_ledger_matches(platform)


def test_transfer_and_return_move_only_unreserved_vials(platform: Platform) -> None:
    a = receive(platform, "A", "10", 5, Date(year=2027, month=6, day=30))
    reserve(platform, "appt-1", "30")
    with pytest.raises(grpc.RpcError) as too_many:
        platform.inventory.TransferStock(
            inv.TransferStockRequest(lot_id=a.id, to_site_id="site-2", vials=3)
        )
    assert precondition_types(too_many.value) == ["VIALS_FREE"]
    moved = platform.inventory.TransferStock(
        inv.TransferStockRequest(lot_id=a.id, to_site_id="site-2", vials=2, request_id="t1")
    )
    assert (moved.from_lot.on_hand_vials, moved.to_lot.on_hand_vials) == (3, 2)
    assert moved.to_lot.site_id == "site-2" and moved.to_lot.lot_number == "A"
    back = platform.inventory.ReturnToSupplier(
        inv.ReturnToSupplierRequest(lot_id=moved.to_lot.id, vials=2, reason="overstock")
    )
    assert back.lot.state == inv.LOT_STATE_DEPLETED
    assert_ledger_matches(platform)


def test_recall_reallocates_marks_at_risk_and_names_recipients(platform: Platform) -> None:
    bad = receive(platform, "BAD", "10", 4, Date(year=2027, month=1, day=31))
    receive(platform, "BAD", "10", 1, Date(year=2027, month=1, day=31), site="site-2")
    receive(platform, "GOOD", "10", 2, Date(year=2027, month=6, day=30))
    given = reserve(platform, "appt-0", "10")
    platform.inventory.DispenseReservation(
        inv.DispenseReservationRequest(
            reservation_id=given.id,
            vials=[inv.DispensedVials(lot_id=bad.id, vials=1)],
            grams_administered="10",
            request_id=request_id(),
        )
    )
    saved = reserve(platform, "appt-1", "20")  # BAD first (earlier expiry)
    lost = reserve(platform, "appt-2", "10", patient_id="patient-2")
    assert {x.lot_number for x in saved.lines} == {"BAD"}
    recall = platform.inventory.RecallLot(
        inv.RecallLotRequest(
            product_id=GAMMAGARD, lot_number="BAD", reason="FDA withdrawal", request_id="r1"
        )
    )
    assert sorted(x.site_id for x in recall.lots) == ["site-1", "site-2"]
    assert all(x.state == inv.LOT_STATE_RECALLED for x in recall.lots)
    # latest needed-on first, then id: appt-2 (later id) re-allocated first, takes 10 g of GOOD
    states = {r.appointment_id: r.state for r in [*recall.reallocated, *recall.at_risk]}
    assert sorted(states.values()) == [inv.RESERVATION_STATE_ACTIVE, inv.RESERVATION_STATE_AT_RISK]
    assert recall.recipients == 1
    recalled = events(platform, "LOT_RECALLED")
    assert len(recalled) == 1 and recalled[0]["lot_number"] == "BAD"
    assert [x["patient_id"] for x in recalled[0]["recipients"]] == ["patient-1"]  # type: ignore[index]
    # notify routes it to the staff of every site holding the lot or that treated with it
    assert recalled[0]["sites"] == ["site-1", "site-2"]
    assert [x["site_id"] for x in recalled[0]["recipients"]] == ["site-1"]  # type: ignore[index]
    at_risk = events(platform, "STOCK_AT_RISK")
    assert len(at_risk) == 1
    with pytest.raises(grpc.RpcError) as unknown:
        platform.inventory.RecallLot(
            inv.RecallLotRequest(product_id=GAMMAGARD, lot_number="NOPE", reason="x")
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert {saved.id, lost.id} == {r.id for r in [*recall.reallocated, *recall.at_risk]}
    assert_ledger_matches(platform)


def test_expiry_check_expires_lots_and_warns_once_per_threshold(platform: Platform) -> None:
    soon = receive(platform, "SOON", "10", 3, Date(year=2026, month=12, day=20))
    receive(platform, "LATER", "10", 3, Date(year=2027, month=2, day=10))
    receive(platform, "FAR", "10", 3, Date(year=2028, month=2, day=10))
    first = platform.inventory.RunExpiryCheck(inv.RunExpiryCheckRequest(site_id="site-1"))
    # 2026-11-24 → SOON has 26 days (≤ 30: the 30-day warning), LATER 78 days (the 90-day)
    assert sorted((w.lot.lot_number, w.days_left, w.threshold_days) for w in first.warnings) == [
        ("LATER", 78, 90),
        ("SOON", 26, 30),
    ]
    again = platform.inventory.RunExpiryCheck(inv.RunExpiryCheckRequest(site_id="site-1"))
    assert list(again.warnings) == []
    later = platform.inventory.RunExpiryCheck(
        inv.RunExpiryCheckRequest(site_id="site-1", as_of=Date(year=2026, month=12, day=21))
    )
    assert [x.id for x in later.expired] == [soon.id]
    assert lot(platform, soon.id).state == inv.LOT_STATE_EXPIRED
    assert [(w.lot.lot_number, w.threshold_days) for w in later.warnings] == [("LATER", 60)]
    assert len(events(platform, "LOT_EXPIRING")) == 3
