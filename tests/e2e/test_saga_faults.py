"""The booking → reservation flow survives the inventory dying: the three services
run as processes, over mTLS with each other and with the test; the inventory is killed with
SIGKILL while bookings go on; the bookings succeed, and after the inventory restarts every
booking's reservation arrives through the scheduler's outbox, none lost and none doubled
(checked against the inventory's ledger)."""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.dayofweek_pb2 import DayOfWeek
from google.type.money_pb2 import Money
from google.type.timeofday_pb2 import TimeOfDay

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from tests.e2e.harness import Processes, caller_token, client_tls

pytestmark = pytest.mark.e2e
SERVICES = ("inventory", "notify", "scheduler")
WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY")
ORG = "org"


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Processes]:
    """The three services on SQLite, TLS everywhere with client certificates required."""
    databases = {name: f"sqlite:///{tmp_path / name}.db" for name in SERVICES}
    s = Processes(tmp_path, databases, services=SERVICES, tls=True)
    s.seed_inventory()
    try:
        for name in SERVICES:
            s.start(name)
        yield s
    finally:
        s.stop_all()


def eventually(check: Callable[[], bool], seconds: float = 40) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    return False


def test_bookings_continue_while_the_inventory_is_down(services: Processes) -> None:
    sch = scheduler_pb2_grpc.SchedulerServiceStub(services.channel("scheduler", ORG))

    def stock() -> inventory_pb2_grpc.InventoryServiceStub:
        return inventory_pb2_grpc.InventoryServiceStub(services.channel("inventory", ORG))

    site = sch.CreateSite(
        pb.CreateSiteRequest(
            request_id="site",
            site=pb.Site(
                organisation_id="org",
                display_name="Unit",
                time_zone="Europe/London",
                opening_hours=[
                    pb.OpeningHours(
                        day=DayOfWeek.Value(d), open=TimeOfDay(hours=8), close=TimeOfDay(hours=18)
                    )
                    for d in WEEKDAYS
                ],
            ),
        )
    ).site
    chairs = [
        sch.CreateChair(
            pb.CreateChairRequest(
                request_id=f"chair-{i}",
                chair=pb.Chair(site_id=site.id, display_name=f"Chair {i}", active=True),
            )
        ).chair
        for i in range(6)
    ]
    product = stock().GetProduct(inv.GetProductRequest(id="gammagard-liquid")).product.id
    stock().CreateStockSite(
        inv.CreateStockSiteRequest(
            request_id="stock-site",
            site=inv.StockSite(id=site.id, display_name="Pharmacy", time_zone="Europe/London"),
        )
    )
    expiry = dt.date.today() + dt.timedelta(days=400)
    stock().ReceiveStock(
        inv.ReceiveStockRequest(
            request_id="receive",
            site_id=site.id,
            product_id=product,
            presentation_grams="10",
            lot_number="E2E",
            expiry_date=Date(year=expiry.year, month=expiry.month, day=expiry.day),
            vials=100,
            # £34/g × 10 g (docs/clinical-rules.md#cost)
            unit_cost=Money(currency_code="GBP", units=340),
        )
    )
    day = dt.date.today() + dt.timedelta(days=7)
    while day.isoweekday() > 5:
        day += dt.timedelta(days=1)
    plans = []
    for i in range(6):
        patient = sch.CreatePatient(
            pb.CreatePatientRequest(
                request_id=f"patient-{i}",
                patient=pb.Patient(
                    organisation_id="org",
                    mrn=f"E{i}",
                    given_name="E2E",
                    family_name=str(i),
                    birth_date=Date(year=1970, month=1, day=1),
                    sex_at_birth=pb.SEX_AT_BIRTH_FEMALE,
                ),
            )
        ).patient
        sch.RecordMeasurement(
            pb.RecordMeasurementRequest(
                request_id=f"measure-{i}",
                measurement=pb.Measurement(
                    patient_id=patient.id,
                    measured_on=Date(year=2026, month=1, day=1),
                    weight_kg="70",
                    height_cm="170",
                ),
            )
        )
        plans.append(
            sch.CreateTherapyPlan(
                pb.CreateTherapyPlanRequest(
                    request_id=f"plan-{i}",
                    therapy_plan=pb.TherapyPlan(
                        patient_id=patient.id,
                        site_id=site.id,
                        indication=pb.INDICATION_MMN,
                        route=pb.ROUTE_IV,
                        product_id=product,
                        dose_basis=pb.DOSE_BASIS_G_PER_KG,
                        maintenance_dose="1",
                        interval_days=28,
                        start_date=Date(year=day.year, month=day.month, day=day.day),
                    ),
                )
            ).therapy_plan
        )

    def book(i: int) -> pb.Appointment:
        return sch.BookAppointment(
            pb.BookAppointmentRequest(
                request_id=f"book-{i}",
                therapy_plan_id=plans[i].id,
                chair_id=chairs[i].id,
                local_date=Date(year=day.year, month=day.month, day=day.day),
                local_start=TimeOfDay(hours=8, minutes=0 if i < 2 else 15 * (i // 2)),
            )
        ).appointment

    def reserved(appointment_ids: list[str]) -> bool:
        found = (
            stock()
            .ListReservations(inv.ListReservationsRequest(site_id=site.id, page_size=100))
            .reservations
        )
        return sorted(r.appointment_id for r in found) == sorted(appointment_ids)

    booked = [book(i) for i in range(3)]
    assert eventually(lambda: reserved([a.id for a in booked]))

    services.stop("inventory", signal.SIGKILL)  # SIGKILL: no drain, no goodbye
    booked += [book(i) for i in range(3, 6)]  # bookings do not wait for the pharmacy
    assert all(a.status == pb.APPOINTMENT_STATUS_BOOKED for a in booked)

    services.start("inventory")  # same database
    assert eventually(lambda: reserved([a.id for a in booked]))
    shown = [
        sch.GetAppointment(pb.GetAppointmentRequest(id=a.id)).appointment.stock_status
        for a in booked
    ]
    assert eventually(
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


def test_a_recall_reaches_notify_after_it_comes_back(services: Processes) -> None:
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
    stock.CreateStockSite(
        inv.CreateStockSiteRequest(
            request_id="s", site=inv.StockSite(id="s", display_name="S", time_zone="UTC")
        )
    )
    product = stock.GetProduct(inv.GetProductRequest(id="privigen")).product.id
    expiry = dt.date.today() + dt.timedelta(days=400)
    stock.ReceiveStock(
        inv.ReceiveStockRequest(
            request_id="r",
            site_id="s",
            product_id=product,
            presentation_grams="10",
            lot_number="BAD-1",
            expiry_date=Date(year=expiry.year, month=expiry.month, day=expiry.day),
            vials=5,
            unit_cost=Money(currency_code="GBP", units=340),
        )
    )
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
    assert eventually(recalled)
    time.sleep(2)  # a retry after the first delivery must not make a second notification
    assert recalled()
