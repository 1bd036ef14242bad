"""A dose given at home leaves the pharmacy (docs/regimens.md, "Home administration"), through
gRPC on SQLite and PostgreSQL: a plan switched to Hizentra at home is in the forecast pushed to
the inventory; RecordHomeInfusion writes HOME_DISPENSE to the scheduler's outbox and the relay
reserves and dispenses the recorded lots, once however often it is delivered, so stock on hand
falls and the lot's recall trace names the patient; a lot the site does not hold is
dead-lettered, nothing dispensed."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money
from sqlalchemy import text

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.db import Database
from services.common.identity import acting_as, service_caller
from services.common.outbox import OutgoingEvent
from services.common.outbox_relay import PermanentFailure
from services.scheduler.adapters.inventory_forecast import ForecastPush
from services.scheduler.adapters.inventory_products import InventoryProducts
from services.scheduler.adapters.inventory_relay import StockRelay
from services.scheduler.adapters.notify_relay import relay_to_notify
from services.scheduler.usecases.bookings import Bookings
from services.scheduler.usecases.doses import Doses
from services.scheduler.usecases.records import Records
from tests.integration.builders import date, site_with_chairs
from tests.integration.conftest import Platform, request_id, scheduler_database_url, stock_site
from tests.integration.test_regimen_conversion import convert, iv_plan


@dataclass
class Wired:
    db: Database
    stock: StockRelay
    relay: object
    forecast: ForecastPush


@pytest.fixture
def wired(platform: Platform, database_url: str) -> Iterator[Wired]:
    db = Database(scheduler_database_url(database_url))
    channel = platform.issuer.service_channel("scheduler", platform.inventory_address)
    notify_channel = platform.issuer.service_channel("scheduler", "127.0.0.1:9")
    stock = StockRelay(db, platform.clock, channel)
    relay = relay_to_notify(db, platform.clock, notify_channel, stock=stock.deliver)
    products = InventoryProducts(channel)
    records = Records(db, platform.clock, products.exists)
    bookings = Bookings(db, platform.clock, records, Doses(records, products.spec))
    try:
        yield Wired(db, stock, relay, ForecastPush(db, platform.clock, records, bookings))
    finally:
        relay.stop()
        notify_channel.close()
        channel.close()
        db.dispose()


def home_events(db: Database) -> list[OutgoingEvent]:
    with db.read() as session:
        rows = session.execute(
            text(
                "SELECT seq, id, topic, dedupe_key, payload, created_at, delivered_at "
                "FROM scheduler_outbox WHERE topic = 'HOME_DISPENSE' ORDER BY seq"
            )
        ).all()
    return [
        OutgoingEvent(
            seq=row.seq,
            id=row.id,
            topic=row.topic,
            dedupe_key=row.dedupe_key,
            # the JSON column reads back as text through a raw query on SQLite
            payload=json.loads(row.payload) if isinstance(row.payload, str) else row.payload,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
        )
        for row in rows
    ]


def test_a_home_dose_leaves_the_pharmacy_with_its_lots(platform: Platform, wired: Wired) -> None:
    site, _ = site_with_chairs(platform)
    stock_site(platform, site.id)
    plan = iv_plan(platform, "MRN-H", site=site)
    home = convert(platform, plan, home_administration=True).therapy_plan  # 35 g weekly
    platform.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id=site.id,
            product_id=home.product_id,
            presentation_grams="10",
            lot_number="LOT-H1",
            expiry_date=Date(year=2028, month=1, day=31),
            vials=10,
            unit_cost=Money(currency_code="GBP", units=500),
            request_id=request_id(),
        )
    )

    # the forecast of unbooked doses: 35 g each Friday from the first SC date, 27 November
    with acting_as(service_caller("scheduler")):
        assert wired.forecast.push(horizon_days=20) == 1
    wired.relay.run_once()  # type: ignore[attr-defined]
    days = platform.inventory.GetStockForecast(
        inv.GetStockForecastRequest(site_id=site.id, product_id=home.product_id, horizon_days=20)
    ).days
    demand = {d.date.day: d.forecast_demand_grams for d in days if d.forecast_demand_grams != "0"}
    assert demand == {27: "35", 4: "35", 11: "35"}

    platform.clock.set(dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.UTC))
    given = platform.scheduler.RecordHomeInfusion(
        pb.RecordHomeInfusionRequest(
            therapy_plan_id=plan.id,
            given_on=date(2026, 11, 27),
            grams_given="35",
            scanned_lots=[pb.ScannedLot(lot_number="LOT-H1", vials=4)],
            request_id=request_id(),
        )
    ).home_infusion
    (event,) = home_events(wired.db)
    wired.relay.run_once()  # type: ignore[attr-defined]
    wired.stock.deliver(event)  # delivered again (a crash before it was marked): no change

    levels = platform.inventory.GetStockLevels(inv.GetStockLevelsRequest(site_id=site.id))
    (product,) = [p for p in levels.products if p.product_id == home.product_id]
    assert (product.on_hand_vials, product.reserved_vials) == (6, 0)  # 10 - 4
    reservation = platform.inventory.GetReservation(
        inv.GetReservationRequest(appointment_id=given.id)
    ).reservation
    assert reservation.state == inv.RESERVATION_STATE_DISPENSED
    recipients = platform.inventory.ListLotRecipients(
        inv.ListLotRecipientsRequest(product_id=home.product_id, lot_number="LOT-H1")
    ).administrations
    # 4 × 10 g opened, 35 g given: 5 g of the last vial wasted; given at noon, site time
    assert [
        (r.patient_id, r.appointment_id, r.vials, r.grams_administered, r.grams_wasted)
        for r in recipients
    ] == [(plan.patient_id, given.id, 4, "35", "5")]
    assert recipients[0].administered_time.ToDatetime() == dt.datetime(2026, 11, 27, 12, 0)
    report = platform.inventory.ReconcileStock(inv.ReconcileStockRequest(site_id=site.id))
    assert list(report.discrepancies) == []

    # a lot the site does not hold: nothing dispensed, the row dead-lettered for the pharmacy
    platform.clock.set(dt.datetime(2026, 12, 4, 18, 0, tzinfo=dt.UTC))
    platform.scheduler.RecordHomeInfusion(
        pb.RecordHomeInfusionRequest(
            therapy_plan_id=plan.id,
            given_on=date(2026, 12, 4),
            grams_given="35",
            scanned_lots=[pb.ScannedLot(lot_number="ELSEWHERE", vials=4)],
            request_id=request_id(),
        )
    )
    second = home_events(wired.db)[1]
    with pytest.raises(PermanentFailure, match="lot 'ELSEWHERE' is not at the site"):
        wired.stock.deliver(second)
    levels = platform.inventory.GetStockLevels(inv.GetStockLevelsRequest(site_id=site.id))
    assert [p.on_hand_vials for p in levels.products if p.product_id == home.product_id] == [6]
