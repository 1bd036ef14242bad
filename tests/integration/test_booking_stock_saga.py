"""Bookings reach the inventory through the scheduler's outbox: a booking reserves
its vials, a refused reservation marks the appointment at risk (and notifies), a reschedule
amends, a cancellation releases, and redelivering the same rows changes nothing."""

from __future__ import annotations

import datetime as dt

from google.type.date_pb2 import Date
from google.type.money_pb2 import Money
from google.type.timeofday_pb2 import TimeOfDay
from sqlalchemy import text

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.db import Database
from services.common.identity import acting_as, service_caller
from services.scheduler.adapters.inventory_relay import StockRelay
from services.scheduler.adapters.notify_relay import relay_to_notify
from tests.integration.builders import book, patient_plan, site_with_chairs
from tests.integration.conftest import Platform, request_id, stock_site


def test_bookings_reserve_release_amend_and_flag_shortages(
    platform: Platform, database_url: str
) -> None:
    site, chairs = site_with_chairs(platform)
    stock_site(platform, site.id)
    a = patient_plan(platform, site, "MRN-A")
    b = patient_plan(platform, site, "MRN-B")
    product = a.product_id
    platform.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id=site.id,
            product_id=product,
            presentation_grams="10",
            lot_number="ONLY",
            expiry_date=Date(year=2028, month=1, day=31),
            vials=7,  # 70 g: one 70 kg patient's 1 g/kg dose
            unit_cost=Money(currency_code="GBP", units=340),  # £34/g (docs/clinical-rules.md#cost)
            request_id=request_id(),
        )
    )
    url = (
        database_url.replace("test.db", "scheduler.db")
        if database_url.startswith("sqlite")
        else database_url
    )
    db = Database(url)
    channel = platform.issuer.service_channel("scheduler", platform.inventory_address)
    stock = StockRelay(db, platform.clock, channel)
    notify_channel = platform.issuer.service_channel("scheduler", "127.0.0.1:9")
    relay = relay_to_notify(db, platform.clock, notify_channel, stock=stock.deliver)

    def flush() -> None:
        for _ in range(3):
            relay.run_once()

    def appointment(appointment_id: str) -> pb.Appointment:
        return platform.scheduler.GetAppointment(
            pb.GetAppointmentRequest(id=appointment_id)
        ).appointment

    def reservation(appointment_id: str) -> inv.Reservation:
        return platform.inventory.GetReservation(
            inv.GetReservationRequest(appointment_id=appointment_id)
        ).reservation

    try:
        first = book(platform, a, chairs[0], dt.date(2026, 12, 1), 8)
        flush()
        assert reservation(first.id).state == inv.RESERVATION_STATE_ACTIVE
        assert appointment(first.id).stock_status == "RESERVED"

        second = book(platform, b, chairs[1], dt.date(2026, 12, 1), 8)
        flush()
        shown = appointment(second.id)
        assert shown.stock_at_risk and "in date and unreserved: 0 g" in shown.stock_note
        with db.read() as session:
            at_risk = session.execute(
                text("SELECT count(*) FROM scheduler_outbox WHERE topic = 'STOCK_AT_RISK'")
            ).scalar()
        assert at_risk == 1
        # the chair boards hear of both answers: reserved for the first, at risk for the second
        with db.read() as session:
            keys = set(
                session.execute(
                    text("SELECT dedupe_key FROM scheduler_outbox WHERE topic = 'BOARD_CHANGED'")
                ).scalars()
            )
        assert f"BOARD_CHANGED:{first.id}:1:RESERVED" in keys
        assert f"BOARD_CHANGED:{second.id}:1:AT_RISK" in keys

        platform.scheduler.CancelAppointment(
            pb.CancelAppointmentRequest(id=first.id, reason="unwell", request_id=request_id())
        )
        flush()
        assert reservation(first.id).state == inv.RESERVATION_STATE_RELEASED

        platform.scheduler.RescheduleAppointment(
            pb.RescheduleAppointmentRequest(
                id=second.id,
                chair_id=chairs[1].id,
                local_date=Date(year=2026, month=12, day=2),
                local_start=TimeOfDay(hours=8),
                request_id=request_id(),
            )
        )
        flush()  # the amend finds no reservation and reserves: the freed vials cover it
        cleared = appointment(second.id)
        assert (cleared.stock_status, cleared.stock_at_risk) == ("RESERVED", False)
        assert reservation(second.id).needed_on == Date(year=2026, month=12, day=2)

        flush()  # nothing left to do; a repeat changes nothing
        levels = platform.inventory.GetStockLevels(inv.GetStockLevelsRequest(site_id=site.id))
        assert levels.products[0].reserved_vials == 7

        platform.clock.set(dt.datetime(2026, 12, 2, 13, 30, tzinfo=dt.UTC))  # the day it is given
        platform.scheduler.CompleteInfusion(
            pb.CompleteInfusionRequest(
                id=second.id,
                grams_given="68",
                scanned_lots=[pb.ScannedLot(lot_number="ONLY", vials=7)],
                request_id=request_id(),
            )
        )
        flush()
        assert reservation(second.id).state == inv.RESERVATION_STATE_DISPENSED
        assert appointment(second.id).stock_status == "DISPENSED"
        recipients = platform.inventory.ListLotRecipients(
            inv.ListLotRecipientsRequest(product_id=product, lot_number="ONLY")
        ).administrations
        # 7 × 10 g opened, 68 g given: 2 g of the last vial wasted
        assert [(r.appointment_id, r.grams_administered, r.grams_wasted) for r in recipients] == [
            (second.id, "68", "2")
        ]
        report = platform.inventory.ReconcileStock(inv.ReconcileStockRequest(site_id=site.id))
        assert list(report.discrepancies) == []
    finally:
        relay.stop()
        notify_channel.close()
        channel.close()
        db.dispose()


def test_the_forecast_push_reaches_the_inventory(platform: Platform, database_url: str) -> None:
    from services.scheduler.adapters.inventory_forecast import ForecastPush
    from services.scheduler.usecases.records import Records

    site, _ = site_with_chairs(platform)
    stock_site(platform, site.id)
    plan = patient_plan(platform, site, "MRN-F")  # 70 kg, 1 g/kg = 70 g, due 1 Dec, every 28 days
    url = (
        database_url.replace("test.db", "scheduler.db")
        if database_url.startswith("sqlite")
        else database_url
    )
    db = Database(url)
    channel = platform.issuer.service_channel("scheduler", platform.inventory_address)
    stock = StockRelay(db, platform.clock, channel)
    notify_channel = platform.issuer.service_channel("scheduler", "127.0.0.1:9")
    relay = relay_to_notify(db, platform.clock, notify_channel, stock=stock.deliver)
    try:
        from services.scheduler.adapters.inventory_products import InventoryProducts
        from services.scheduler.usecases.bookings import Bookings
        from services.scheduler.usecases.doses import Doses

        products = InventoryProducts(
            platform.issuer.service_channel("scheduler", platform.inventory_address)
        )
        records = Records(db, platform.clock, products.exists)
        bookings = Bookings(db, platform.clock, records, Doses(records, products.spec))
        push = ForecastPush(db, platform.clock, records, bookings)
        with acting_as(service_caller("scheduler")):  # as the nightly job does
            assert push.push(horizon_days=60) == 1
            assert push.push(horizon_days=60) == 0  # once a day per site
        relay.run_once()
        forecast = platform.inventory.GetStockForecast(
            inv.GetStockForecastRequest(
                site_id=site.id, product_id=plan.product_id, horizon_days=40
            )
        ).days
        by_day = {(d.date.month, d.date.day): d.forecast_demand_grams for d in forecast}
        # due 1 Dec, then every 28 days: 29 Dec; nothing in between
        assert (by_day[(12, 1)], by_day[(12, 29)], by_day[(12, 15)]) == ("70", "70", "0")
        products.close()
    finally:
        relay.stop()
        notify_channel.close()
        channel.close()
        db.dispose()


def test_find_slots_flags_or_skips_days_without_stock(platform: Platform) -> None:
    site, _ = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-S")  # 70 g due 1 Dec; window 27 Nov–5 Dec
    no_site = platform.scheduler.FindSlots(pb.FindSlotsRequest(therapy_plan_id=plan.id))
    assert not no_site.stock_checked and not any(s.stock_short for s in no_site.slots)
    stock_site(platform, site.id)
    platform.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id=site.id,
            product_id=plan.product_id,
            presentation_grams="10",
            lot_number="S1",
            expiry_date=Date(year=2028, month=1, day=31),
            vials=7,
            unit_cost=Money(currency_code="GBP", units=340),
            request_id=request_id(),
        )
    )
    enough = platform.scheduler.FindSlots(pb.FindSlotsRequest(therapy_plan_id=plan.id))
    assert enough.stock_checked and enough.slots and not any(s.stock_short for s in enough.slots)
    # another patient's booking takes the 70 g on 26 November: nothing is left in the window
    platform.inventory.ReserveStock(
        inv.ReserveStockRequest(
            appointment_id="other",
            site_id=site.id,
            patient_id="other",
            product_id=plan.product_id,
            grams="70",
            needed_on=Date(year=2026, month=11, day=26),
        )
    )
    flagged = platform.scheduler.FindSlots(pb.FindSlotsRequest(therapy_plan_id=plan.id))
    assert flagged.slots and all(s.stock_short for s in flagged.slots)
    assert "Gammagard" in flagged.slots[0].stock_note and "0 g" in flagged.slots[0].stock_note
    skipped = platform.scheduler.FindSlots(
        pb.FindSlotsRequest(therapy_plan_id=plan.id, skip_without_stock=True)
    )
    assert skipped.stock_checked and not skipped.slots


def test_plan_schedule_flags_proposals_without_stock(platform: Platform) -> None:
    site, _ = site_with_chairs(platform)
    stock_site(platform, site.id)  # a stock site with nothing on the shelf
    patient_plan(platform, site, "MRN-P")
    proposal = platform.scheduler.PlanSchedule(
        pb.PlanScheduleRequest(
            site_id=site.id, horizon_days=14, mode=pb.PLAN_MODE_PROPOSE, time_limit_seconds=2
        )
    )
    assert proposal.stock_checked and len(proposal.proposals) == 1
    slot = proposal.proposals[0].slot
    assert slot.stock_short and "0 g" in slot.stock_note
