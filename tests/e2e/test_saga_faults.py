"""The booking → reservation flow survives the inventory dying: the three services
run as processes, over mTLS with each other and with the test; the inventory is killed with
SIGKILL while bookings go on; the bookings succeed, and after the inventory restarts every
booking's reservation arrives through the scheduler's outbox, none lost and none doubled
(checked against the inventory's ledger)."""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.builder import Builder, Pharmacy
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from tests.e2e.harness import Fleet, caller_token, client_tls, holds_within

pytestmark = pytest.mark.e2e
SERVICES = ("inventory", "notify", "scheduler")
WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY")
ORG = "org"


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Fleet]:
    """The three services on SQLite, TLS everywhere with client certificates required."""
    databases = {name: f"sqlite:///{tmp_path / name}.db" for name in SERVICES}
    s = Fleet(tmp_path, databases, tls=True)
    s.run("services.inventory", "seed")
    try:
        for name in SERVICES:
            s.start(name)
        yield s
    finally:
        s.stop_all()


def test_bookings_continue_while_the_inventory_is_down(services: Fleet) -> None:
    sch = scheduler_pb2_grpc.SchedulerServiceStub(services.channel("scheduler", ORG))

    def stock() -> inventory_pb2_grpc.InventoryServiceStub:
        return inventory_pb2_grpc.InventoryServiceStub(services.channel("inventory", ORG))

    build = Builder(sch, stock(), ORG, ids=lambda label: label)
    site = build.site(name="Unit")
    chairs = build.chairs(site.id, 6)
    product = build.product_id("gammagard-liquid")
    build.stock_site(site.id, site.time_zone)
    build.receive(site.id, product, "E2E", dt.date.today() + dt.timedelta(days=400), 100)
    day = dt.date.today() + dt.timedelta(days=7)
    while day.isoweekday() > 5:
        day += dt.timedelta(days=1)
    plans = [
        build.enrol(
            f"E{i}",
            site.id,
            product,
            day,
            measured_on=dt.date(2026, 1, 1),
            height="170",
            given="E2E",
            family=str(i),
            born=dt.date(1970, 1, 1),
            key=str(i),
        )[1]
        for i in range(6)
    ]

    def book(i: int) -> pb.Appointment:
        minute = 0 if i < 2 else 15 * (i // 2)
        return build.book(plans[i].id, chairs[i].id, day, 8, minute, request_id=f"book-{i}")

    def reserved(appointment_ids: list[str]) -> bool:
        found = (
            stock()
            .ListReservations(inv.ListReservationsRequest(site_id=site.id, page_size=100))
            .reservations
        )
        return sorted(r.appointment_id for r in found) == sorted(appointment_ids)

    booked = [book(i) for i in range(3)]
    assert holds_within(lambda: reserved([a.id for a in booked]))

    services.stop("inventory", signal.SIGKILL)  # SIGKILL: no drain, no goodbye
    booked += [book(i) for i in range(3, 6)]  # bookings do not wait for the pharmacy
    assert all(a.status == pb.APPOINTMENT_STATUS_BOOKED for a in booked)

    services.start("inventory")  # same database
    assert holds_within(lambda: reserved([a.id for a in booked]))
    shown = [
        sch.GetAppointment(pb.GetAppointmentRequest(id=a.id)).appointment.stock_status
        for a in booked
    ]
    assert holds_within(
        lambda: all(
            sch.GetAppointment(pb.GetAppointmentRequest(id=a.id)).appointment.stock_status
            == "RESERVED"
            for a in booked
        )
    ), shown
    # none doubled: 6 reservations of 70 g = 42 vials reserved, and the ledger agrees
    level = stock().GetStockLevels(inv.GetStockLevelsRequest(site_id=site.id)).products[0]
    assert level.reserved_vials == 42
    assert list(stock().ReconcileStock(inv.ReconcileStockRequest()).discrepancies) == []


def test_a_recall_reaches_notify_after_it_comes_back(services: Fleet) -> None:
    from demo.centre import load_notify
    from infusion.notify.v1 import notify_pb2 as npb
    from infusion.notify.v1 import notify_pb2_grpc

    load_notify(  # a console subscriber for every topic
        services.address("notify"),
        caller_token(services.issuer, "scheduler", ORG),
        tls=client_tls(services.pki, "notify"),
    )

    def notify() -> notify_pb2_grpc.NotifyServiceStub:
        return notify_pb2_grpc.NotifyServiceStub(services.channel("notify", ORG))

    stock = inventory_pb2_grpc.InventoryServiceStub(services.channel("inventory", ORG))
    pharmacy = Pharmacy(stock, ids=lambda label: label)
    pharmacy.stock_site("s", "UTC", "S")
    product = pharmacy.product_id("privigen")
    pharmacy.receive("s", product, "BAD-1", dt.date.today() + dt.timedelta(days=400), 5)
    services.stop("notify", signal.SIGKILL)
    recall = stock.RecallLot(
        inv.RecallLotRequest(
            product_id=product, lot_number="BAD-1", reason="manufacturer withdrawal", request_id="x"
        )
    )
    assert [lot.state for lot in recall.lots] == [inv.LOT_STATE_RECALLED]  # not held up

    def recalled() -> bool:
        found = (
            notify()
            .ListNotifications(npb.ListNotificationsRequest(topic=npb.TOPIC_LOT_RECALLED))
            .notifications
        )
        return len(found) == 1

    services.start("notify")
    assert holds_within(recalled)
    time.sleep(2)  # a retry after the first delivery must not make a second notification
    assert recalled()
