"""The whole system, end to end: scheduler, inventory and notify as separate
processes, each on its own PostgreSQL database, notify delivering through its real adapters to
an SMTP server and a webhook receiver that checks every signature. One run of a day at an
infusion centre proves that the flows between the services happen, once each, with nothing
lost or doubled:

- **plan**: a therapy plan's dose is calculated from the patient's weight (1 g/kg: 70 g);
- **book → reserve**: two patients booked at the same time on two chairs get their vials
  reserved through the scheduler's outbox, first expiry first; the appointments show RESERVED;
- **a refused reservation**: a third patient's product is out of stock: the appointment is
  STOCK AT_RISK in GetAppointment, ListAppointments and the chair board, and the pharmacy gets
  STOCK_AT_RISK by email and by webhook;
- **cancel**: cancelling the second booking releases its reservation (vials back on the
  shelf), cancels the reminder its booking scheduled (the appointment shows it CANCELLED),
  tells that patient (APPOINTMENT_CHANGED), and no reminder for it ever arrives;
- **reorder**: reorder policies give suggestions; a purchase order for the missing product is
  placed and received; moving the at-risk appointment reserves it and clears AT_RISK; after an
  inventory restart its start-up daily check sends the pharmacy REORDER_DUE;
- **remind**: the first patient's APPOINTMENT_REMINDER arrives by email and webhook at the
  moment the reminder offset falls due (a real instant, ~60 s after start: the offset is set
  from the appointment's start), and not before;
- **complete → dispense**: CompleteInfusion with the lots scanned at the chair dispenses the
  reservation at the inventory, records who got which lot and moves the next due date on by
  the plan's interval;
- **recall**: recalling a lot the patient received sends LOT_RECALLED to the pharmacy naming
  that patient, by email and webhook;
- **at the end**: every appointment has exactly one reservation, in the state its booking
  calls for; the stock ledger reconciles, reserved each booking's vials once and released the
  cancelled one's once; every email and webhook delivery notify recorded arrived exactly once,
  and nothing else arrived;
- **the logs** (LOG_FORMAT=json, as deployed): every line each service wrote is a JSON object
  with the documented keys, one access line per call, and no line names a patient, their birth
  date, MRN or contact address.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money
from google.type.timeofday_pb2 import TimeOfDay

from demo.builder import ALL_DAYS, Builder, pb_date, shifts
from infusion.audit.v1 import audit_pb2, audit_pb2_grpc
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.clock import zone_where_the_day_begins
from tests.e2e.audit_checks import ResponseRecorder, check_audit
from tests.e2e.harness import Fleet, eventually, every_page, notifications, postgres_databases
from tests.e2e.sinks import (
    ReceivedEmail,
    SmtpSink,
    WebhookCall,
    WebhookSink,
    smtp_sink,
    webhook_sink,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

# The services run on the real clock, and a visit is checked in, started and completed only on
# its local day (docs/scheduling.md): the site is in a zone where the day has just begun, open
# every day, and the visits are booked for 09:00 that day, hours ahead.
# The reminder falls due this long after the services are started: long enough for the
# bookings to be made before it (a reminder is only sent for a booking older than its time).
REMINDER_LEAD = dt.timedelta(seconds=60)
GAMMAGARD_CODE, PRIVIGEN_CODE = "gammagard-liquid", "privigen"  # catalogue codes
PHARMACY_EMAIL = "pharmacy@hospital.example"
PHARMACY_TOPICS = (
    npb.TOPIC_STOCK_AT_RISK,
    npb.TOPIC_LOT_RECALLED,
    npb.TOPIC_REORDER_DUE,
    npb.TOPIC_LOW_STOCK,
    npb.TOPIC_LOT_EXPIRING,
)
BOTH = [npb.CHANNEL_EMAIL, npb.CHANNEL_WEBHOOK]


def rid() -> str:
    return str(uuid.uuid4())


def from_pb(day: Date) -> dt.date:
    return dt.date(day.year, day.month, day.day)


@dataclass
class System:
    processes: Fleet
    smtp: SmtpSink
    webhooks: WebhookSink
    zone: str  # the site's IANA time zone
    start: dt.datetime  # the booked start of the reminded appointments (site-local, aware)
    reminder_at: dt.datetime  # when their reminder falls due (UTC)
    started: float  # time.monotonic() at start-up, for the step log
    channels: list[grpc.Channel] = field(default_factory=list)
    answers: ResponseRecorder = field(default_factory=ResponseRecorder)  # every Get/List's

    def step(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {text}", flush=True)

    def channel(self, name: str) -> grpc.Channel:
        """A new channel to a service (closed at the end): after a restart, a fresh one
        connects at once instead of waiting out the old one's reconnect backoff."""
        self.channels.append(self.processes.channel(name))
        return grpc.intercept_channel(self.channels[-1], self.answers)


@pytest.fixture
def system(postgres_server_url: str, tmp_path: Path) -> Iterator[System]:
    now = dt.datetime.now(dt.UTC)
    zone = ZoneInfo(zone_where_the_day_begins(now))
    day = now.astimezone(zone).date()
    start = dt.datetime.combine(day, dt.time(9), tzinfo=zone)
    reminder_at = now + REMINDER_LEAD
    # Offsets are hours on the site's wall clock (docs/notify.md): measured on the wall too.
    wall_at = reminder_at.astimezone(zone).replace(tzinfo=None)
    hours = (start.replace(tzinfo=None) - wall_at) / dt.timedelta(hours=1)
    back = (start.replace(tzinfo=None) - dt.timedelta(hours=hours)).replace(tzinfo=zone)
    assert abs(back.astimezone(dt.UTC) - reminder_at) < dt.timedelta(milliseconds=1)
    with (
        smtp_sink() as smtp,
        webhook_sink() as webhooks,
        postgres_databases(postgres_server_url) as databases,
    ):
        processes = Fleet(
            tmp_path,
            databases,
            {
                "SCHEDULER_REMINDER_OFFSETS_HOURS": repr(hours),
                "SCHEDULER_JOBS_INTERVAL_SECONDS": "1",
                "NOTIFY_SMTP_HOST": smtp.host,
                "NOTIFY_SMTP_PORT": str(smtp.port),
                "NOTIFY_SMTP_FROM": "notify@hospital.example",
                "NOTIFY_WEBHOOK_ALLOW_LIST": webhooks.allow_list,
                "NOTIFY_RETRY_BASE_SECONDS": "1",
                "NOTIFY_RETRY_MAX_SECONDS": "5",
                "LOG_FORMAT": "json",
            },
            tls=True,  # TLS everywhere, client certificates required (harness.Pki)
            org="e2e-org",
        )
        system = System(processes, smtp, webhooks, zone.key, start, reminder_at, time.monotonic())
        processes.run("services.inventory", "seed")
        try:
            processes.start("notify", "inventory", "scheduler")
            yield system
        finally:
            for channel in system.channels:
                channel.close()
            processes.stop_all()
            for name in processes.services:  # shown when the test fails
                print(f"--- {name} log (tail) ---\n{processes.log_tail(name, 25)}")


def test_a_day_at_the_infusion_centre(system: System) -> None:
    step = system.step
    processes = system.processes
    smtp, webhooks = system.smtp, system.webhooks
    sch = scheduler_pb2_grpc.SchedulerServiceStub(system.channel("scheduler"))
    note = notify_pb2_grpc.NotifyServiceStub(system.channel("notify"))
    stock = inventory_pb2_grpc.InventoryServiceStub(system.channel("inventory"))
    # the catalogue's ids (a code is an alias some reads do not resolve)
    gammagard = stock.GetProduct(inv.GetProductRequest(id=GAMMAGARD_CODE)).product.id
    privigen = stock.GetProduct(inv.GetProductRequest(id=PRIVIGEN_CODE)).product.id
    zone = system.zone
    today = dt.datetime.now(ZoneInfo(zone)).date()
    day = system.start.date()
    assert day == today  # the visits are today's: checked in, started and completed below
    later_day = day + dt.timedelta(days=7)
    step(f"services up; appointments on {day} 09:00 {zone}, reminder at {system.reminder_at}")

    # --- the centre: a site and its chairs, the pharmacy with the same id, stock ----------------
    build = Builder(sch, stock, "e2e-org")
    site = build.site(
        name="E2E Day Unit",
        tz=zone,
        days=ALL_DAYS,
        capacity=pb.SiteCapacity(nurse_shifts=shifts(2, ALL_DAYS)),
    )
    chairs = build.chairs(site.id, 2)
    build.stock_site(site.id, zone, "E2E Pharmacy")
    for lot_number, days, vials in (("GL-E2E-A", 180, 5), ("GL-E2E-B", 600, 40)):
        expiry = today + dt.timedelta(days=days)
        build.receive(site.id, gammagard, lot_number, expiry, vials, supplier="Wholesaler")

    # --- who is told: the pharmacy (stock topics, site-filtered) and each patient -------------
    note.CreateSubscriber(
        npb.CreateSubscriberRequest(
            request_id=rid(),
            subscriber=npb.Subscriber(
                external_ref="pharmacy",
                display_name="E2E Pharmacy",
                time_zone=zone,
                email=PHARMACY_EMAIL,
                webhook_url=webhooks.register("pharmacy", "whsec-pharmacy"),
                webhook_secret="whsec-pharmacy",
                site_ids=[site.id],
                preferences=[npb.Preference(topic=t, channels=BOTH) for t in PHARMACY_TOPICS],
                kind=npb.SUBSCRIBER_KIND_STAFF,
            ),
        )
    )

    @dataclass
    class Person:
        key: str
        email: str
        patient: pb.Patient
        plan: pb.TherapyPlan

    def person(key: str, given: str, product: str, weight: str, due: dt.date) -> Person:
        address = f"{key}@patients.example"
        subscriber = note.CreateSubscriber(
            npb.CreateSubscriberRequest(
                request_id=rid(),
                subscriber=npb.Subscriber(
                    external_ref=f"MRN-{key}",
                    display_name=f"{given} Example",
                    time_zone=zone,
                    email=address,
                    webhook_url=webhooks.register(key, f"whsec-{key}"),
                    webhook_secret=f"whsec-{key}",
                    # Reminders and changes chosen on both channels: as a PATIENT this
                    # subscriber gets only its own, never the staff broadcast naming another
                    # patient. Due notices are off: whether one goes before the booking is a
                    # race here.
                    preferences=[
                        npb.Preference(topic=npb.TOPIC_APPOINTMENT_REMINDER, channels=BOTH),
                        npb.Preference(topic=npb.TOPIC_APPOINTMENT_CHANGED, channels=BOTH),
                        npb.Preference(topic=npb.TOPIC_INFUSION_DUE, channels=[]),
                        npb.Preference(topic=npb.TOPIC_MISSED_INFUSION, channels=[]),
                    ],
                    kind=npb.SUBSCRIBER_KIND_PATIENT,
                ),
            )
        ).subscriber
        patient, plan = build.enrol(
            f"MRN-{key}",
            site.id,
            product,
            due,
            measured_on=today,
            weight=weight,
            given=given,
            notify_subscriber_id=subscriber.id,
        )
        return Person(key, address, patient, plan)

    # --- plan --------------------------------------------------------------------------------
    ada = person("ada", "Ada", gammagard, "70", day)  # reminded, treated, her lot recalled
    ben = person("ben", "Ben", gammagard, "70", day)  # booked, then cancelled
    cleo = person("cleo", "Cleo", privigen, "60", later_day)  # no Privigen in stock
    dose = sch.CalculateDose(
        pb.CalculateDoseRequest(therapy_plan_id=ada.plan.id, dosing_date=pb_date(day))
    ).calculation
    assert Decimal(dose.total_grams) == 70
    assert sum(Decimal(v.grams) * v.count for v in dose.days[0].vials) == 70
    # secrets are write-only: a subscriber says it has a webhook secret, never what it is
    ada_subscriber = note.GetSubscriber(
        npb.GetSubscriberRequest(id=ada.patient.notify_subscriber_id)
    ).subscriber
    assert (ada_subscriber.webhook_secret, ada_subscriber.webhook_secret_set) == ("", True)
    listed = note.ListSubscribers(npb.ListSubscribersRequest(page_size=100)).subscribers
    assert listed and not any(s.webhook_secret for s in listed)
    step("site, stock, subscribers, patients and plans made")

    # --- book --------------------------------------------------------------------------------
    def book(who: Person, chair: pb.Chair, on: dt.date, hour: int) -> pb.Appointment:
        appointment = build.book(who.plan.id, chair.id, on, hour)
        assert appointment.status == pb.APPOINTMENT_STATUS_BOOKED
        return appointment

    ada_visit = book(ada, chairs[0], day, 9)
    ben_visit = book(ben, chairs[1], day, 9)
    cleo_visit = book(cleo, chairs[0], later_day, 10)
    assert ada_visit.start_time.ToDatetime(dt.UTC) == system.start
    for visit in (ada_visit, ben_visit):  # the booking scheduled its reminder, due at T
        assert [r.status for r in visit.reminders] == [pb.REMINDER_STATUS_SCHEDULED]
        due = visit.reminders[0].due_time.ToDatetime(dt.UTC)
        assert abs(due - system.reminder_at) < dt.timedelta(seconds=1)
    left = (system.reminder_at - dt.datetime.now(dt.UTC)).total_seconds()
    assert left > 5, f"setup too slow: booked {-left:.0f} s after the reminder time"
    step(f"booked 3 appointments, {left:.0f} s before the reminder falls due")

    # --- reserve: through the scheduler's outbox, first expiry first --------------------------
    def appointment(visit: pb.Appointment) -> pb.Appointment:
        shown: pb.Appointment = sch.GetAppointment(
            pb.GetAppointmentRequest(id=visit.id)
        ).appointment
        return shown

    def reservation(visit: pb.Appointment) -> inv.Reservation:
        held: inv.Reservation = stock.GetReservation(
            inv.GetReservationRequest(appointment_id=visit.id)
        ).reservation
        return held

    def stock_status(visit: pb.Appointment, wanted: str) -> pb.Appointment | None:
        shown = appointment(visit)
        return shown if shown.stock_status == wanted else None

    eventually("Ada's booking RESERVED", lambda: stock_status(ada_visit, "RESERVED"))
    eventually("Ben's booking RESERVED", lambda: stock_status(ben_visit, "RESERVED"))
    ada_reserved = reservation(ada_visit)
    assert ada_reserved.state == inv.RESERVATION_STATE_ACTIVE
    assert {(x.lot_number, x.vials) for x in ada_reserved.lines} == {
        ("GL-E2E-A", 5),
        ("GL-E2E-B", 2),
    }
    assert {(x.lot_number, x.vials) for x in reservation(ben_visit).lines} == {("GL-E2E-B", 7)}
    levels = stock.GetStockLevels(inv.GetStockLevelsRequest(site_id=site.id, product_id=gammagard))
    assert (levels.products[0].on_hand_vials, levels.products[0].reserved_vials) == (45, 14)
    step("both Gammagard bookings reserved, first expiry first")

    # --- a refused reservation: STOCK AT_RISK, and the pharmacy is told -----------------------
    at_risk = eventually(
        "Cleo's Privigen booking AT_RISK", lambda: stock_status(cleo_visit, "AT_RISK")
    )
    assert at_risk.stock_at_risk and at_risk.stock_note
    listed = sch.ListAppointments(
        pb.ListAppointmentsRequest(
            site_id=site.id, start_date=pb_date(later_day), end_date=pb_date(later_day)
        )
    ).appointments
    assert [(a.id, a.stock_status, a.stock_at_risk) for a in listed] == [
        (cleo_visit.id, "AT_RISK", True)
    ]
    board = sch.GetChairBoard(
        pb.GetChairBoardRequest(site_id=site.id, local_date=pb_date(later_day))
    )
    on_board = [
        item.appointment
        for chair in board.chairs
        for item in chair.items
        if item.appointment.id == cleo_visit.id
    ]
    assert [(a.stock_status, a.stock_at_risk) for a in on_board] == [("AT_RISK", True)]
    with pytest.raises(grpc.RpcError) as refused:
        reservation(cleo_visit)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was set aside

    topic = "STOCK_AT_RISK"
    mail = eventually(
        "STOCK_AT_RISK by email to the pharmacy",
        lambda: smtp.emails(topic, PHARMACY_EMAIL),
    )
    hook = eventually(
        "STOCK_AT_RISK by webhook to the pharmacy",
        lambda: webhooks.calls("pharmacy", topic),
    )
    assert cleo_visit.id in mail[0].text
    assert "60 g of Privigen needed" in mail[0].text  # the inventory's refusal, readable
    assert hook[0].payload["appointment_id"] == cleo_visit.id
    assert hook[0].payload["site_id"] == site.id
    step("Privigen booking AT_RISK everywhere; the pharmacy told by email and webhook")

    # --- cancel: the reservation is released, the patient told --------------------------------
    cancelled = sch.CancelAppointment(
        pb.CancelAppointmentRequest(id=ben_visit.id, reason="patient unwell", request_id=rid())
    ).appointment
    assert cancelled.status == pb.APPOINTMENT_STATUS_CANCELLED
    eventually(
        "the cancelled booking's reservation RELEASED",
        lambda: reservation(ben_visit).state == inv.RESERVATION_STATE_RELEASED,
    )
    levels = stock.GetStockLevels(inv.GetStockLevelsRequest(site_id=site.id, product_id=gammagard))
    assert levels.products[0].reserved_vials == 7  # Ada's only
    assert [r.status for r in appointment(ben_visit).reminders] == [pb.REMINDER_STATUS_CANCELLED]
    told = eventually(
        "APPOINTMENT_CHANGED (cancelled) by email to Ben",
        lambda: smtp.emails("APPOINTMENT_CHANGED", ben.email),
    )
    assert "cancelled" in told[0].text
    hooked = eventually(
        "APPOINTMENT_CHANGED (cancelled) by webhook to Ben",
        lambda: webhooks.calls("ben", "APPOINTMENT_CHANGED"),
    )
    assert hooked[0].payload["cancelled"] is True
    step("Ben cancelled: reservation released, Ben told")

    # --- reorder: policies, suggestions, a purchase order received, AT_RISK cleared -----------
    for product, safety in ((privigen, "100"), (gammagard, "1000")):
        stock.SetReorderPolicy(
            inv.SetReorderPolicyRequest(
                request_id=rid(),
                policy=inv.ReorderPolicy(
                    site_id=site.id,
                    product_id=product,
                    lead_time_days=7,
                    safety_stock_grams=safety,
                    review_period_days=7,
                    order_presentation_grams="10",
                    case_vials=10,
                    maximum_grams="0",
                ),
            )
        )
    suggestions = {
        s.product_id: s
        for s in stock.ListReorderSuggestions(
            inv.ListReorderSuggestionsRequest(site_id=site.id)
        ).suggestions
    }
    assert set(suggestions) == {privigen, gammagard}
    order = suggestions[privigen]
    assert order.vials > 0 and order.vials % 10 == 0 and order.presentation_grams == "10"
    po = stock.CreatePurchaseOrder(
        inv.CreatePurchaseOrderRequest(
            request_id=rid(),
            purchase_order=inv.PurchaseOrder(
                site_id=site.id,
                supplier="Wholesaler",
                expected_date=pb_date(today + dt.timedelta(days=1)),
                lines=[
                    inv.PurchaseOrderLine(
                        product_id=privigen,
                        presentation_grams=order.presentation_grams,
                        vials_ordered=order.vials,
                        unit_cost=Money(currency_code="GBP", units=340),
                    )
                ],
            ),
        )
    ).purchase_order
    received = stock.ReceivePurchaseOrder(
        inv.ReceivePurchaseOrderRequest(
            purchase_order_id=po.id,
            request_id=rid(),
            receipts=[
                inv.PurchaseOrderReceipt(
                    line_id=po.lines[0].id,
                    lot_number="PV-E2E-1",
                    expiry_date=pb_date(today + dt.timedelta(days=400)),
                    vials=order.vials,
                )
            ],
        )
    )
    assert received.purchase_order.state == inv.PURCHASE_ORDER_STATE_RECEIVED
    moved = sch.RescheduleAppointment(
        pb.RescheduleAppointmentRequest(
            id=cleo_visit.id,
            chair_id=chairs[0].id,
            local_date=pb_date(later_day),
            local_start=TimeOfDay(hours=11),
            etag=at_risk.etag,
            request_id=rid(),
        )
    ).appointment
    assert moved.local_start.hours == 11
    cleared = eventually(
        "Cleo's moved booking RESERVED", lambda: stock_status(cleo_visit, "RESERVED")
    )
    assert not cleared.stock_at_risk
    assert reservation(cleo_visit).state == inv.RESERVATION_STATE_ACTIVE
    eventually(
        "APPOINTMENT_CHANGED (moved) to Cleo",
        lambda: (
            smtp.emails("APPOINTMENT_CHANGED", cleo.email)
            and webhooks.calls("cleo", "APPOINTMENT_CHANGED")
        ),
    )
    step(f"reorder: {order.vials} Privigen vials ordered and received; Cleo moved and reserved")

    # The daily check (expiry, then reorder) runs shortly after the inventory starts: restart
    # it, as a deploy would, and the pharmacy gets today's REORDER_DUE for both products.
    processes.restart("inventory")
    stock = inventory_pb2_grpc.InventoryServiceStub(system.channel("inventory"))
    step("inventory restarted")

    def reorder_due() -> bool:
        mailed = {m.subject for m in smtp.emails("REORDER_DUE", PHARMACY_EMAIL)}
        hooked = {c.payload["product_id"] for c in webhooks.calls("pharmacy", "REORDER_DUE")}
        return len(mailed) >= 2 and hooked >= {privigen, gammagard}

    eventually("REORDER_DUE for both products at the pharmacy", reorder_due, seconds=90)
    step("REORDER_DUE for both products reached the pharmacy")

    # --- remind: Ada's reminder arrives when it falls due, Ben's never ------------------------
    wait = max((system.reminder_at - dt.datetime.now(dt.UTC)).total_seconds(), 0) + 60

    def ada_reminded() -> tuple[list[ReceivedEmail], list[WebhookCall]] | None:
        mails = smtp.emails("APPOINTMENT_REMINDER", ada.email)
        hooks = webhooks.calls("ada", "APPOINTMENT_REMINDER")
        return (mails, hooks) if mails and hooks else None

    mails, hooks = eventually("Ada's reminder by email and webhook", ada_reminded, seconds=wait)
    due_at = system.reminder_at.timestamp()
    assert mails[0].received_at >= due_at - 1  # not before its time
    assert hooks[0].received_at >= due_at - 1
    step(f"Ada reminded {mails[0].received_at - due_at:.1f} s after the reminder fell due")
    assert f"{system.start:%a %d %b %Y %H:%M}" in mails[0].subject
    assert "E2E Day Unit" in mails[0].text
    assert hooks[0].payload["appointment_id"] == ada_visit.id
    assert [r.status for r in appointment(ada_visit).reminders] == [pb.REMINDER_STATUS_RAISED]
    time.sleep(5)  # the job runs every second: anything more would have come by now
    assert len(smtp.emails("APPOINTMENT_REMINDER", ada.email)) == 1
    assert len(webhooks.calls("ada", "APPOINTMENT_REMINDER")) == 1
    assert smtp.emails("APPOINTMENT_REMINDER", ben.email) == []
    assert webhooks.calls("ben", "APPOINTMENT_REMINDER") == []
    reminders = notifications(note, npb.TOPIC_APPOINTMENT_REMINDER)
    reminded_ids = Counter(n.payload.appointment_reminder.appointment_id for n in reminders)
    assert reminded_ids == {ada_visit.id: 2}  # the staff broadcast and Ada's own copy

    # --- complete → dispense: the lot trace and the next due date -----------------------------
    sch.CheckIn(pb.CheckInRequest(id=ada_visit.id, request_id=rid()))
    sch.StartInfusion(pb.StartInfusionRequest(id=ada_visit.id, request_id=rid()))
    done = sch.CompleteInfusion(
        pb.CompleteInfusionRequest(
            id=ada_visit.id,
            grams_given=dose.total_grams,
            scanned_lots=[
                pb.ScannedLot(lot_number=x.lot_number, vials=x.vials) for x in ada_reserved.lines
            ],
            request_id=rid(),
        )
    )
    assert done.appointment.status == pb.APPOINTMENT_STATUS_FULFILLED
    assert from_pb(done.next_due.due_date) == day + dt.timedelta(days=28)
    eventually(
        "Ada's appointment DISPENSED",
        lambda: appointment(ada_visit).stock_status == "DISPENSED",
    )
    assert reservation(ada_visit).state == inv.RESERVATION_STATE_DISPENSED
    trace = stock.ListLotRecipients(
        inv.ListLotRecipientsRequest(product_id=gammagard, lot_number="GL-E2E-A")
    ).administrations
    assert [(a.patient_id, a.appointment_id, a.vials) for a in trace] == [
        (ada.patient.id, ada_visit.id, 5)
    ]
    step("Ada's infusion completed and dispensed; next due in 28 days")

    # --- recall: the pharmacy is told which patient got the lot -------------------------------
    recall = stock.RecallLot(
        inv.RecallLotRequest(
            product_id=gammagard,
            lot_number="GL-E2E-A",
            reason="manufacturer withdrawal",
            request_id=rid(),
        )
    )
    assert [lot.state for lot in recall.lots] == [inv.LOT_STATE_RECALLED]
    assert recall.recipients == 1
    recalled_mail = eventually(
        "LOT_RECALLED by email to the pharmacy",
        lambda: smtp.emails("LOT_RECALLED", PHARMACY_EMAIL),
    )
    recalled_hook = eventually(
        "LOT_RECALLED by webhook to the pharmacy",
        lambda: webhooks.calls("pharmacy", "LOT_RECALLED"),
    )
    assert "GL-E2E-A" in recalled_mail[0].subject
    assert ada.patient.id in recalled_mail[0].text
    recipients = recalled_hook[0].payload["recipients"]
    assert [(r["patient_id"], r["appointment_id"]) for r in recipients] == [
        (ada.patient.id, ada_visit.id)
    ]
    step("LOT_RECALLED naming Ada reached the pharmacy")

    # --- at the end: one reservation per booking, a ledger that adds up -----------------------
    appointments = {
        a.id: a
        for a in sch.ListAppointments(
            pb.ListAppointmentsRequest(
                site_id=site.id, start_date=pb_date(day), end_date=pb_date(later_day)
            )
        ).appointments
    }
    assert {a.id: a.status for a in appointments.values()} == {
        ada_visit.id: pb.APPOINTMENT_STATUS_FULFILLED,
        ben_visit.id: pb.APPOINTMENT_STATUS_CANCELLED,
        cleo_visit.id: pb.APPOINTMENT_STATUS_BOOKED,
    }
    reservations = list(
        stock.ListReservations(
            inv.ListReservationsRequest(site_id=site.id, page_size=100)
        ).reservations
    )
    assert Counter(r.appointment_id for r in reservations) == {
        ada_visit.id: 1,
        ben_visit.id: 1,
        cleo_visit.id: 1,
    }
    states = {r.appointment_id: r.state for r in reservations}
    assert states == {
        ada_visit.id: inv.RESERVATION_STATE_DISPENSED,
        ben_visit.id: inv.RESERVATION_STATE_RELEASED,
        cleo_visit.id: inv.RESERVATION_STATE_ACTIVE,
    }
    assert list(stock.ReconcileStock(inv.ReconcileStockRequest()).discrepancies) == []
    movements = every_page(
        stock.ListMovements,
        inv.ListMovementsRequest(site_id=site.id, page_size=100),
        "movements",
    )
    by_kind: Counter[int] = Counter()
    for m in movements:
        by_kind[m.kind] += m.reserved_delta_vials
    cleo_vials = sum(x.vials for x in reservation(cleo_visit).lines)
    # reserved once each: Ada 7, Ben 7, Cleo hers; Ben's released once; Ada's dispensed once
    assert by_kind[inv.MOVEMENT_KIND_RESERVATION] == 7 + 7 + cleo_vials
    assert by_kind[inv.MOVEMENT_KIND_RELEASE] == -7
    assert by_kind[inv.MOVEMENT_KIND_DISPENSE] == -7
    shelf = stock.GetStockLevels(
        inv.GetStockLevelsRequest(site_id=site.id, product_id=gammagard)
    ).products[0]
    assert (shelf.on_hand_vials, shelf.reserved_vials) == (38, 0)

    # --- every delivery notify recorded arrived once, and nothing else arrived ----------------
    check_deliveries(note, smtp, webhooks)
    assert webhooks.rejected == []
    pharmacy_topics = Counter(m.topic for m in smtp.emails(to=PHARMACY_EMAIL))
    assert pharmacy_topics["STOCK_AT_RISK"] == 1 and pharmacy_topics["LOT_RECALLED"] == 1
    allowed = {npb.Topic.Name(t).removeprefix("TOPIC_") for t in PHARMACY_TOPICS}
    assert set(pharmacy_topics) <= allowed
    assert Counter(m.topic for m in smtp.emails(to=ada.email)) == {"APPOINTMENT_REMINDER": 1}
    assert Counter(m.topic for m in smtp.emails(to=ben.email)) == {"APPOINTMENT_CHANGED": 1}
    assert Counter(m.topic for m in smtp.emails(to=cleo.email)) == {"APPOINTMENT_CHANGED": 1}
    step("ledger, reservations and deliveries agree")

    # --- the audit trail: an auditor of the organisation reads Ada's ------------------------------
    system.channels.append(processes.channel_as("scheduler", "auditor"))
    auditor = audit_pb2_grpc.AuditServiceStub(
        grpc.intercept_channel(system.channels[-1], system.answers)
    )
    ada_trail = auditor.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(patient_id=ada.patient.id, page_size=500)
    ).audit_events
    ada_calls = {e.method.rpartition("/")[2] for e in ada_trail}
    assert {"CreatePatient", "CreateTherapyPlan", "CalculateDose", "BookAppointment"} <= ada_calls
    assert all(e.organisation_id == "e2e-org" for e in ada_trail)

    # --- the logs: JSON lines, ids only ---------------------------------------------------------
    processes.stop_all()  # every line written
    trails = check_audit(processes)
    step(f"audit trails {trails}: every mutation once, every patient read once, chains intact")
    secrets = [
        "whsec-pharmacy",
        *(f"whsec-{who.key}" for who in (ada, ben, cleo)),
        *(v for k, v in processes.env.items() if k.endswith("_CLIENT_SECRET") and v),
    ]
    answers = system.answers.check(secrets)
    step(f"{answers} Get/List answers, none with a secret")
    identifying = [*map(re.escape, secrets)]
    for who in (ada, ben, cleo):
        p = who.patient
        birth = f"{p.birth_date.year:04d}-{p.birth_date.month:02d}-{p.birth_date.day:02d}"
        words = [rf"\b{re.escape(n)}\b" for n in (p.given_name, p.family_name)]
        identifying += [*words, *map(re.escape, (birth, p.mrn, who.email))]
    lines = check_logs(processes, identifying)
    step(f"{lines} log lines: JSON, and none names a patient")


LOG_KEYS = ["time", "level", "service", "logger", "message"]  # docs/operations.md


def check_logs(processes: Fleet, identifying: list[str]) -> int:
    """Every line of every service's log is a JSON object that starts with the documented
    keys and names its service; access lines have their fields; no line matches any of the
    ``identifying`` patterns. Returns how many lines were read."""
    pattern = re.compile("|".join(identifying))
    read = 0
    for name in processes.services:
        calls = 0
        for text in processes.log_path(name).read_text().splitlines():
            read += 1
            found = pattern.search(text)
            assert found is None, f"{name} logged {found.group()!r}: {text}"
            line = json.loads(text)
            assert list(line)[:5] == LOG_KEYS, text
            assert line["service"] == name, text
            if line["logger"] == "grpc.access":
                calls += 1
                assert {"method", "code", "duration_ms", "request_id", "peer"} <= set(line)
        assert calls > 0, f"no access lines from {name}"
    return read


def check_deliveries(
    note: notify_pb2_grpc.NotifyServiceStub, smtp: SmtpSink, webhooks: WebhookSink
) -> None:
    """Every email and webhook delivery at notify is DELIVERED and arrived at its sink exactly
    once (the delivery id is the Message-ID and the Idempotency-Key), and the sinks hold
    nothing notify did not send."""
    expected = {npb.CHANNEL_EMAIL: Counter[str](), npb.CHANNEL_WEBHOOK: Counter[str]()}
    for n in notifications(note):
        for d in n.deliveries:
            if d.channel in expected:
                assert d.status == npb.DELIVERY_STATUS_DELIVERED, (n.dedupe_key, d)
                expected[d.channel][d.id] += 1
    mailed = Counter(m.delivery_id for m in smtp.emails())
    hooked = Counter(c.delivery_id for c in webhooks.calls())
    assert mailed == expected[npb.CHANNEL_EMAIL]
    assert hooked == expected[npb.CHANNEL_WEBHOOK]
    assert all(count == 1 for count in [*mailed.values(), *hooked.values()])
