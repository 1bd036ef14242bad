"""The lifecycles of a reservation, a lot and a purchase order, tested on the domain objects
alone: no gRPC, no database. The same rules are exercised end to end through the service in
tests/integration/test_inventory_*.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal as D

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.inventory.domain.allocation import Allocation
from services.inventory.domain.purchasing import (
    Delivery,
    OrderLine,
    OrderState,
    PurchaseOrder,
)
from services.inventory.domain.reservations import (
    DispenseInput,
    HeldLine,
    Reservation,
    ReservationRequest,
    ReservationState,
    to_mg,
    validate_request,
)
from services.inventory.domain.stock import Balance, LotState, Movement, MovementKind
from tests.unit.inventory_builders import lot

TODAY = dt.date(2026, 11, 24)
NOW = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)


def reservation(**kw: object) -> Reservation:
    """30 g for an appointment, held as 3 × 10 g vials of lot-a."""
    fields: dict[str, object] = dict(
        id="res-1",
        appointment_id="appt-1",
        site_id="site",
        patient_id="patient-1",
        product_id="privigen",
        alternative_product_ids=(),
        grams_mg=to_mg(D(30)),
        rounding_band_percent=D(10),
        needed_on=TODAY,
        state=ReservationState.ACTIVE,
        allocated_product_id="privigen",
        allocated_mg=to_mg(D(30)),
        at_risk_reason="",
        revision=2,
        created_at=NOW,
        updated_at=NOW,
        lines=[HeldLine("lot-a", "privigen", "L-lot-a", D(10), dt.date(2027, 6, 30), 3)],
    )
    fields.update(kw)
    return Reservation(**fields)  # type: ignore[arg-type]


def dispense(
    lines: list[tuple[str, int]], given: str, wasted: str = "0", **kw: object
) -> DispenseInput:
    fields: dict[str, object] = dict(
        reservation_id="res-1",
        lines=lines,
        grams_administered=D(given),
        grams_wasted=D(wasted),
        patient_id="",
        appointment_id="",
        allow_over_reservation=False,
        override_reason="",
        administered_at=None,
    )
    fields.update(kw)
    return DispenseInput(**fields)  # type: ignore[arg-type]


def rules(error: FailedPrecondition) -> list[str]:
    return [v.type for v in error.violations]


def fields(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


# --- reserving and amending ---------------------------------------------------------------------


def test_a_reservation_request_names_every_bad_field_at_once() -> None:
    request = ReservationRequest(
        appointment_id=" ",
        site_id="site",
        patient_id="p",
        products=("privigen", "privigen"),
        grams=D("30.0001"),
        band_percent=D(60),
        needed_on=TODAY - dt.timedelta(days=1),
    )
    found = [v.field for v in validate_request(request, TODAY).items]
    assert found == [
        "appointment_id",
        "alternative_product_ids",
        "grams",
        "rounding_band_percent",
        "needed_on",
    ]


def test_a_reservation_names_at_most_ten_alternatives() -> None:
    def request(alternatives: int) -> ReservationRequest:
        products = ("privigen", *(f"alt-{n}" for n in range(alternatives)))
        return ReservationRequest("appt-1", "site", "p", products, D(30), D(10), TODAY)

    assert validate_request(request(10), TODAY).items == []
    found = [(v.field, v.description) for v in validate_request(request(11), TODAY).items]
    assert found == [("alternative_product_ids", "at most 10")]


def test_a_new_reservation_is_active_and_holds_what_the_allocation_chose() -> None:
    request = ReservationRequest(
        "appt-9", "site", "p", ("privigen", "gamunex"), D(25), D(10), TODAY
    )
    r = Reservation.open("res-9", request, NOW)
    assert (r.state, r.products, r.grams, r.allocated_mg, r.revision) == (
        ReservationState.ACTIVE,
        ("privigen", "gamunex"),
        D(25),
        0,
        1,
    )
    r.hold(Allocation("gamunex", (("lot-b", 3),), D(30), D(5)))
    assert (r.allocated_product_id, r.allocated_grams, r.overfill_grams) == ("gamunex", D(30), D(5))


def test_an_amendment_takes_the_new_dose_and_keeps_the_day() -> None:
    r = reservation()
    request = r.amend(D(40), None, TODAY)
    assert (r.grams, r.needed_on) == (D(40), TODAY)
    assert request.grams == D(40) and request.products == ("privigen",)


def test_every_change_of_a_reservation_is_a_new_revision_at_the_time_of_the_change() -> None:
    later = NOW + dt.timedelta(hours=1)
    r = reservation(state=ReservationState.AT_RISK, at_risk_reason="recalled")
    r.revise(later, ReservationState.ACTIVE)  # held again: the state given
    assert (r.state, r.revision, r.updated_at) == (ReservationState.ACTIVE, 3, later)
    assert r.release()
    r.revise(later)  # the state the change set stays
    assert (r.state, r.revision) == (ReservationState.RELEASED, 4)


def test_an_amendment_to_a_day_already_past_is_refused_and_changes_nothing() -> None:
    r = reservation()
    with pytest.raises(InvalidArgument) as refused:
        r.amend(None, TODAY - dt.timedelta(days=2), TODAY)
    assert fields(refused.value) == ["needed_on"]
    assert r.needed_on == TODAY


def test_a_dispensed_reservation_cannot_be_amended() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        reservation(state=ReservationState.DISPENSED).amend(D(40), None, TODAY)
    assert rules(refused.value) == ["RESERVATION_OPEN"]
    assert "the reservation is DISPENSED" in str(refused.value)


# --- releasing ----------------------------------------------------------------------------------


def test_releasing_an_at_risk_reservation_clears_its_reason() -> None:
    r = reservation(state=ReservationState.AT_RISK, at_risk_reason="short")
    assert r.release() is True
    assert (r.state, r.at_risk_reason) == (ReservationState.RELEASED, "")


def test_releasing_twice_is_a_repeat_not_an_error() -> None:
    r = reservation(state=ReservationState.RELEASED)
    assert r.release() is False


def test_a_dispensed_reservation_cannot_be_released() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        reservation(state=ReservationState.DISPENSED).release()
    assert rules(refused.value) == ["RESERVATION_OPEN"]


# --- dispensing ---------------------------------------------------------------------------------


def test_dispensing_the_held_vials_books_them_from_the_hold() -> None:
    r = reservation()
    done = r.dispense(dispense([("lot-a", 3)], "30"), {"lot-a": lot()}, TODAY)
    [opened] = done.opened
    assert (opened.vials, opened.from_reserved, opened.grams_given, opened.grams_wasted) == (
        3,
        3,
        D(30),
        D(0),
    )
    assert done.unused == {"lot-a": 0}
    assert (r.state, r.lines) == (ReservationState.DISPENSED, [])


def test_what_is_opened_and_not_given_is_waste_on_the_last_vial_spiked() -> None:
    r = reservation(lines=[])
    lots = {"lot-a": lot(balance=Balance(10, 0)), "lot-b": lot("lot-b", balance=Balance(5, 0))}
    done = r.dispense(dispense([("lot-a", 2), ("lot-b", 1)], "26", "4"), lots, TODAY)
    assert [(o.grams_given, o.grams_wasted) for o in done.opened] == [(D(20), D(0)), (D(6), D(4))]


def test_given_plus_wasted_must_add_up_to_what_was_opened() -> None:
    with pytest.raises(InvalidArgument) as refused:
        reservation().dispense(dispense([("lot-a", 3)], "25"), {"lot-a": lot()}, TODAY)
    assert fields(refused.value) == ["grams_wasted"]


def test_held_vials_not_opened_go_back() -> None:
    r = reservation()
    done = r.dispense(dispense([("lot-a", 2)], "20"), {"lot-a": lot()}, TODAY)
    assert done.unused == {"lot-a": 1}


def test_a_dispense_names_the_wrong_patient_appointment_and_lines_together() -> None:
    asked = dispense(
        [("", 0), ("", 1)],
        "30",
        patient_id="someone-else",
        appointment_id="appt-2",
        allow_over_reservation=True,
    )
    with pytest.raises(InvalidArgument) as refused:
        reservation().dispense(asked, {}, TODAY)
    assert fields(refused.value) == [
        "patient_id",
        "appointment_id",
        "vials[0].vials",
        "vials[0].lot_id",
        "vials[1].lot_id",
        "vials",
        "override_reason",
    ]


@pytest.mark.parametrize(
    ("changed", "rule"),
    [
        ({"site_id": "elsewhere"}, "LOT_AT_SITE"),
        ({"state": LotState.QUARANTINED}, "LOT_USABLE"),
        ({"expiry_date": TODAY - dt.timedelta(days=1)}, "LOT_IN_DATE"),
    ],
    ids=["at-another-site", "quarantined", "expired"],
)
def test_a_vial_comes_from_a_lot_at_the_site_usable_and_in_date(
    changed: dict[str, object], rule: str
) -> None:
    r = reservation()
    with pytest.raises(FailedPrecondition) as refused:
        r.dispense(dispense([("lot-a", 3)], "30"), {"lot-a": lot(**changed)}, TODAY)
    assert rules(refused.value) == [rule]
    assert r.state is ReservationState.ACTIVE


def test_a_lot_expiring_on_the_day_of_administration_is_still_in_date() -> None:
    expiring = lot(expiry_date=TODAY)
    done = reservation().dispense(dispense([("lot-a", 3)], "30"), {"lot-a": expiring}, TODAY)
    assert done.opened[0].lot.expiry_date == TODAY


def test_more_than_the_dose_needs_an_override_with_a_reason() -> None:
    lots = {"lot-a": lot(balance=Balance(10, 3))}
    with pytest.raises(FailedPrecondition) as refused:
        reservation().dispense(dispense([("lot-a", 4)], "40"), lots, TODAY)
    assert rules(refused.value) == ["DISPENSE_WITHIN_RESERVATION"]
    asked = dispense(
        [("lot-a", 4)], "40", allow_over_reservation=True, override_reason="weight gain"
    )
    done = reservation().dispense(asked, lots, TODAY)
    assert done.override_reason == "weight gain"
    assert (done.opened[0].vials, done.opened[0].from_reserved) == (4, 3)


def test_vials_beyond_the_hold_come_only_from_what_nobody_else_holds() -> None:
    crowded = {"lot-a": lot(balance=Balance(3, 3))}  # every vial is held, all by this one
    asked = dispense([("lot-a", 4)], "40", allow_over_reservation=True, override_reason="why")
    with pytest.raises(FailedPrecondition) as refused:
        reservation().dispense(asked, crowded, TODAY)
    assert rules(refused.value) == ["VIALS_FREE"]


def test_an_unknown_lot_is_the_callers_mistake() -> None:
    with pytest.raises(InvalidArgument) as refused:
        reservation().dispense(dispense([("nope", 1)], "10"), {"lot-a": lot()}, TODAY)
    assert fields(refused.value) == ["vials"]


def test_a_released_reservation_is_not_dispensed() -> None:
    r = reservation(state=ReservationState.RELEASED, lines=[])
    with pytest.raises(FailedPrecondition) as refused:
        r.dispense(dispense([("lot-a", 1)], "10"), {"lot-a": lot()}, TODAY)
    assert rules(refused.value) == ["RESERVATION_OPEN"]


def test_a_reservation_nothing_covers_any_more_is_at_risk_and_says_so() -> None:
    r = reservation(lines=[], allocated_mg=0, grams_mg=to_mg(D("27.5")))
    event = r.put_at_risk("30 g of Privigen needed...", "RECALLED")
    assert (r.state, r.at_risk_reason) == (ReservationState.AT_RISK, "30 g of Privigen needed...")
    assert event.topic == "STOCK_AT_RISK"
    assert event.payload() == {
        "reservation_id": "res-1",
        "appointment_id": "appt-1",
        "patient_id": "patient-1",
        "site_id": "site",
        "product_id": "privigen",
        "grams": "27.5",
        "needed_on": "2026-11-24",
        "reason": "30 g of Privigen needed...",
        "cause": "RECALLED",
    }


# --- lots: quarantine, release, recall, expiry, counts -----------------------------------------


def test_a_quarantine_is_recorded_as_a_vial_less_movement() -> None:
    a = lot()
    entry = a.quarantine()
    assert (a.state, entry.kind, entry.code, entry.on_hand) == (
        LotState.QUARANTINED,
        MovementKind.QUARANTINE,
        "QUARANTINED",
        0,
    )


def test_a_recalled_lot_cannot_be_quarantined() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        lot(state=LotState.RECALLED).quarantine()
    assert rules(refused.value) == ["LOT_STATE_TRANSITION"]


def test_only_a_quarantined_lot_in_date_is_released() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        lot().release(TODAY)
    assert rules(refused.value) == ["LOT_QUARANTINED"]
    stale = lot(state=LotState.QUARANTINED, expiry_date=TODAY - dt.timedelta(days=1))
    with pytest.raises(FailedPrecondition) as refused:
        stale.release(TODAY)
    assert rules(refused.value) == ["LOT_IN_DATE"]
    held = lot(state=LotState.QUARANTINED)
    assert held.release(TODAY).kind is MovementKind.RELEASE_FROM_QUARANTINE
    assert held.state is LotState.AVAILABLE


def test_a_recall_reaches_an_expired_lot_once() -> None:
    a = lot(state=LotState.EXPIRED)
    entry = a.recall()
    assert entry is not None and entry.kind is MovementKind.RECALL
    assert a.state is LotState.RECALLED
    assert a.recall() is None  # recalled already: nothing more to record


def test_the_daily_check_expires_a_lot_past_its_date_only() -> None:
    assert lot(expiry_date=TODAY).expire(TODAY) is None
    past = lot(expiry_date=TODAY - dt.timedelta(days=1), state=LotState.DEPLETED)
    entry = past.expire(TODAY)
    assert entry is not None and entry.kind is MovementKind.EXPIRY
    assert lot(state=LotState.RECALLED, expiry_date=dt.date(2020, 1, 1)).expire(TODAY) is None


def test_a_count_books_the_difference_and_never_below_what_is_reserved() -> None:
    assert lot().count(10) is None
    entry = lot().count(8)
    assert entry is not None and (entry.kind, entry.on_hand) == (MovementKind.COUNT_ADJUSTMENT, -2)
    with pytest.raises(FailedPrecondition) as refused:
        lot().count(2)  # 3 vials are reserved
    assert rules(refused.value) == ["STOCK_BALANCE"]
    with pytest.raises(InvalidArgument):
        lot().count(-1)


def test_an_empty_lot_is_depleted_and_comes_back_with_stock() -> None:
    a = lot(balance=Balance(0, 0))
    assert a.settle() is True
    assert a.state is LotState.DEPLETED
    a.balance = Balance(2, 0)
    assert a.settle() is True
    assert a.state is LotState.AVAILABLE


def test_every_change_of_a_lots_state_is_a_new_revision_and_only_a_change() -> None:
    a = lot(balance=Balance(0, 0))
    first = a.revision
    a.settle()  # AVAILABLE -> DEPLETED, by the quantities
    assert a.revision == first + 1
    assert a.settle() is False and a.revision == first + 1  # nothing changed
    a.recall()  # DEPLETED -> RECALLED, by a verb
    assert a.revision == first + 2
    assert a.recall() is None and a.revision == first + 2  # recalled already


def test_a_lot_warns_once_per_threshold_it_reaches_while_it_holds_usable_vials() -> None:
    thresholds = (90, 30, 60)
    expiring = lot(expiry_date=TODAY + dt.timedelta(days=45))
    warning = expiring.expiry_warning(TODAY, thresholds)
    assert warning is not None
    assert (warning.days_left, warning.threshold_days) == (45, 60)  # the nearest one reached
    assert warning.dedupe_key == "LOT_EXPIRING:lot-a:60"
    assert warning.payload()["on_hand_vials"] == 10
    assert lot(expiry_date=TODAY + dt.timedelta(days=91)).expiry_warning(TODAY, thresholds) is None
    empty = lot(expiry_date=TODAY, balance=Balance(0, 0))
    assert empty.expiry_warning(TODAY, thresholds) is None
    recalled = lot(expiry_date=TODAY, state=LotState.RECALLED)
    assert recalled.expiry_warning(TODAY, thresholds) is None


def test_waste_takes_only_vials_on_hand_reserved_or_not() -> None:
    a = lot(balance=Balance(4, 4))
    entry = a.waste(4, "DAMAGED")
    assert (entry.kind, entry.code, entry.on_hand) == (MovementKind.WASTE, "DAMAGED", -4)
    assert a.balance == Balance(0, 4)  # the caller moves the reservations off the lot
    with pytest.raises(FailedPrecondition) as refused:
        lot(balance=Balance(2, 0)).waste(3, "DAMAGED")
    assert rules(refused.value) == ["VIALS_ON_HAND"]


def test_only_vials_nobody_holds_go_back_to_the_supplier_or_to_another_site() -> None:
    for give in (lambda a: a.give_back(8), lambda a: a.send(8)):
        with pytest.raises(FailedPrecondition) as refused:
            give(lot(balance=Balance(10, 3)))
        assert rules(refused.value) == ["VIALS_FREE"]
    entry = lot(balance=Balance(10, 3)).give_back(7)
    assert (entry.kind, entry.code, entry.on_hand) == (
        MovementKind.RETURN_TO_SUPPLIER,
        "RETURNED",
        -7,
    )


def test_a_transfer_leaves_an_available_lot_and_never_enters_a_recalled_one() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        lot(state=LotState.QUARANTINED).send(1)
    assert rules(refused.value) == ["LOT_USABLE"]
    with pytest.raises(FailedPrecondition) as refused:
        lot(state=LotState.RECALLED).take_in(1)
    assert rules(refused.value) == ["LOT_USABLE"]
    assert lot(state=LotState.DEPLETED, balance=Balance()).take_in(2).on_hand == 2


def test_a_known_lot_takes_receipts_in_its_own_currency_unless_recalled_or_expired() -> None:
    lot().check_receipt("GBP")
    with pytest.raises(InvalidArgument) as refused:
        lot().check_receipt("EUR")
    assert fields(refused.value) == ["unit_cost.currency_code"]
    with pytest.raises(FailedPrecondition) as closed:
        lot(state=LotState.EXPIRED).check_receipt("GBP")
    assert rules(closed.value) == ["LOT_ACCEPTS_RECEIPTS"]


def movement(kind: MovementKind, on_hand: int, reserved: int = 0) -> Movement:
    return Movement(
        "m-1", "lot-a", "site", kind, on_hand, reserved, D(500), "GBP", "", "", "", "", NOW, 1
    )


def test_a_movement_is_undone_by_its_opposite_once() -> None:
    entry = lot().undo(movement(MovementKind.RECEIPT, 4), reversed_already=False)
    assert (entry.kind, entry.on_hand) == (MovementKind.REVERSAL, -4)
    for kind in (MovementKind.QUARANTINE, MovementKind.REVERSAL):
        with pytest.raises(FailedPrecondition) as refused:
            lot().undo(movement(kind, 0), reversed_already=False)
        assert rules(refused.value) == ["MOVEMENT_REVERSIBLE"]
    with pytest.raises(FailedPrecondition) as twice:
        lot().undo(movement(MovementKind.RECEIPT, 4), reversed_already=True)
    assert "already reversed" in str(twice.value)
    with pytest.raises(FailedPrecondition) as short:
        lot().undo(movement(MovementKind.RECEIPT, 9), reversed_already=False)  # 3 are held
    assert rules(short.value) == ["STOCK_BALANCE"]


# --- purchase orders ----------------------------------------------------------------------------


def order(**kw: object) -> PurchaseOrder:
    line = OrderLine("line-1", 1, "privigen", D(10), 10, 4, D(500), "GBP")
    fields: dict[str, object] = dict(
        id="po-1",
        site_id="site",
        supplier="CSL",
        state=OrderState.PARTIALLY_RECEIVED,
        expected_date=None,
        reference="",
        cancel_reason="",
        revision=3,
        created_at=NOW,
        updated_at=NOW,
        lines=[line],
    )
    fields.update(kw)
    return PurchaseOrder(**fields)  # type: ignore[arg-type]


def delivery(vials: int, **kw: object) -> Delivery:
    return dataclasses.replace(Delivery("line-1", "L9", dt.date(2028, 1, 1), vials), **kw)


def test_a_delivery_of_what_is_still_expected_receives_the_order() -> None:
    po = order()
    assert po.receive([delivery(2), delivery(4)]) == {"line-1": 6}
    assert (po.state, po.lines[0].vials_received) == (OrderState.RECEIVED, 10)


def test_a_delivery_beyond_what_a_line_expects_is_refused() -> None:
    po = order()
    with pytest.raises(FailedPrecondition) as refused:
        po.receive([delivery(7)])
    assert rules(refused.value) == ["PURCHASE_ORDER_LINE_REMAINING"]
    assert po.lines[0].vials_received == 4


def test_a_receipt_names_a_line_whole_vials_and_an_expiry() -> None:
    with pytest.raises(InvalidArgument) as refused:
        order().receive([delivery(0, line_id="other", expiry_date=None)])
    assert fields(refused.value) == [
        "receipts[0].line_id",
        "receipts[0].vials",
        "receipts[0].expiry_date",
    ]


def test_a_cancelled_order_receives_nothing_and_is_not_cancelled_again() -> None:
    po = order()
    po.cancel("supplier out of stock")
    assert (po.state, po.cancel_reason) == (OrderState.CANCELLED, "supplier out of stock")
    for attempt in (lambda: po.receive([delivery(1)]), lambda: po.cancel("again")):
        with pytest.raises(FailedPrecondition) as refused:
            attempt()
        assert rules(refused.value) == ["PURCHASE_ORDER_OPEN"]
