"""The demo infusion centre `make run` loads once its services are up, through their public
gRPC APIs as a client would: a scheduler site with opening hours, nurses and six chairs;
twelve patients with measurements and therapy plans coming due over the next weeks (one with an
induction course); the same site as an inventory stock site with lots of the plans' products;
and a few booked appointments with their vials reserved. FindSlots, BookAppointment,
PlanSchedule, GetChairBoard and the inventory's forecast then show something real.

Idempotent: it does nothing if the demo organisation already has a site. It calls as the
demo's operator, whose token (``tokens``) holds the roles these steps need.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from demo.builder import Builder, shifts
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.auth.tokens import TokenSource
from services.common.channels import open_channel
from services.common.tls import ClientTls

ORG = "demo-org"


@dataclass(frozen=True)
class DemoPatient:
    mrn: str
    given: str
    family: str
    sex: pb.SexAtBirth
    born: tuple[int, int, int]
    weight_kg: str
    height_cm: str
    product: str
    g_per_kg: str
    interval_days: int
    due_in_days: int  # the first infusion is due this many days from today
    induction_days: int = 0


# Doses and intervals within docs/clinical-rules.md#regimen (MMN maintenance 1–2 g/kg every 2–6
# weeks; an induction of 2 g/kg over 2–5 days) and weights within the bands of
# docs/clinical-rules.md#validation-bands.
PATIENTS = (
    DemoPatient(
        "D-1001",
        "Ada",
        "Lovelace",
        pb.SEX_AT_BIRTH_FEMALE,
        (1968, 3, 4),
        "62",
        "165",
        "gammagard-liquid",
        "1",
        28,
        1,
    ),
    DemoPatient(
        "D-1002",
        "Ben",
        "Okafor",
        pb.SEX_AT_BIRTH_MALE,
        (1975, 7, 9),
        "84",
        "181",
        "privigen",
        "1",
        21,
        2,
    ),
    DemoPatient(
        "D-1003",
        "Chloe",
        "Martin",
        pb.SEX_AT_BIRTH_FEMALE,
        (1982, 1, 22),
        "71",
        "170",
        "panzyga",
        "0.8",
        28,
        3,
    ),
    DemoPatient(
        "D-1004",
        "Dev",
        "Patel",
        pb.SEX_AT_BIRTH_MALE,
        (1960, 11, 30),
        "95",
        "176",
        "gammagard-liquid",
        "1",
        35,
        4,
    ),
    DemoPatient(
        "D-1005",
        "Eve",
        "Nowak",
        pb.SEX_AT_BIRTH_FEMALE,
        (1990, 5, 15),
        "58",
        "160",
        "privigen",
        "1",
        28,
        6,
    ),
    DemoPatient(
        "D-1006",
        "Finn",
        "Murphy",
        pb.SEX_AT_BIRTH_MALE,
        (1971, 9, 2),
        "102",
        "188",
        "octagam-10",
        "1",
        28,
        7,
    ),
    DemoPatient(
        "D-1007",
        "Grace",
        "Hughes",
        pb.SEX_AT_BIRTH_FEMALE,
        (1955, 4, 18),
        "67",
        "158",
        "gammagard-liquid",
        "0.6",
        21,
        8,
    ),
    DemoPatient(
        "D-1008",
        "Hugo",
        "Silva",
        pb.SEX_AT_BIRTH_MALE,
        (1986, 12, 1),
        "78",
        "179",
        "panzyga",
        "1",
        28,
        9,
    ),
    DemoPatient(
        "D-1009",
        "Iris",
        "Chen",
        pb.SEX_AT_BIRTH_FEMALE,
        (1979, 8, 27),
        "54",
        "157",
        "privigen",
        "2",
        42,
        10,
    ),
    DemoPatient(
        "D-1010",
        "Jonas",
        "Berg",
        pb.SEX_AT_BIRTH_MALE,
        (1964, 2, 11),
        "88",
        "183",
        "gammagard-liquid",
        "1",
        28,
        13,
    ),
    DemoPatient(
        "D-1011",
        "Kemi",
        "Adeyemi",
        pb.SEX_AT_BIRTH_FEMALE,
        (1993, 6, 6),
        "64",
        "168",
        "octagam-10",
        "1",
        28,
        15,
    ),
    DemoPatient(
        "D-1012",
        "Liam",
        "Walsh",
        pb.SEX_AT_BIRTH_MALE,
        (1958, 10, 19),
        "76",
        "175",
        "gammagard-liquid",
        "0",
        28,
        5,
        induction_days=5,
    ),
)
LOTS = (  # product, vial grams, lot number, months to expiry, vials
    ("gammagard-liquid", "10", "GL-DEMO-01", 2, 12),
    ("gammagard-liquid", "10", "GL-DEMO-02", 18, 60),
    ("gammagard-liquid", "5", "GL-DEMO-03", 20, 20),
    ("gammagard-liquid", "20", "GL-DEMO-04", 24, 20),
    ("privigen", "10", "PV-DEMO-01", 14, 40),
    ("privigen", "20", "PV-DEMO-02", 26, 12),
    ("panzyga", "10", "PZ-DEMO-01", 16, 30),
    ("panzyga", "5", "PZ-DEMO-02", 3, 10),
    ("octagam-10", "10", "OC-DEMO-01", 22, 30),
    ("octagam-10", "5", "OC-DEMO-02", 22, 10),
)


def plan_fields(p: DemoPatient) -> dict[str, object]:
    """What a demo patient's plan has besides the builder's defaults: their dose and interval,
    and an induction course (2 g/kg over its days) where they start with one."""
    fields: dict[str, object] = {
        "maintenance_dose": p.g_per_kg if p.g_per_kg != "0" else "1",
        "interval_days": p.interval_days,
    }
    if p.induction_days:
        fields["induction"] = pb.InductionCourse(total_g_per_kg="2", days=p.induction_days)
    return fields


def load(
    scheduler_address: str,
    inventory_address: str,
    today: dt.date,
    notify_address: str = "",
    *,
    tokens: TokenSource,
) -> list[str]:
    """Create the demo centre; returns lines saying what was made (empty if already there).
    With ``notify_address``, first make sure the console subscriber exists (load_notify), so
    the due notices and stock alerts raised from here on reach it."""
    sch = scheduler_pb2_grpc.SchedulerServiceStub(open_channel(scheduler_address, None, tokens))
    stock = inventory_pb2_grpc.InventoryServiceStub(open_channel(inventory_address, None, tokens))
    notes = load_notify(notify_address, tokens) if notify_address else []
    if sch.ListSites(pb.ListSitesRequest(organisation_id=ORG)).sites:
        return notes
    build = Builder(sch, stock, ORG, ids=lambda label: f"demo-{label}-{uuid.uuid4()}")
    site = build.site(
        name="Demo infusion centre",
        capacity=pb.SiteCapacity(
            nurse_shifts=shifts(2) + shifts(1, start=10, end=16),
            nurse_ratio=4,
            start_limit=2,
            turnover_minutes=15,
            holiday_country="GB",
            holiday_subdivision="ENG",
        ),
    )
    chairs = build.chairs(site.id, 6)
    build.stock_site(
        site.id,
        site.time_zone,
        "Demo infusion centre pharmacy",
        request_id=f"demo-stock-site-{site.id}",
    )
    products = {code: build.product_id(code) for code in {p.product for p in PATIENTS}}
    for code, grams, lot, months, vials in LOTS:
        build.receive(
            site.id,
            products[code],
            lot,
            today + dt.timedelta(days=30 * months),
            vials,
            grams=grams,
            supplier="Demo wholesaler",
            actor="demo",
            request_id=f"demo-{site.id}-{lot}",
        )
    # A reorder policy whose safety stock the shelf is under: the first reorder check (shortly
    # after start) raises REORDER_DUE and LOW_STOCK, which `make run` prints on the console.
    stock.SetReorderPolicy(
        inv.SetReorderPolicyRequest(
            request_id=f"demo-policy-{site.id}",
            policy=inv.ReorderPolicy(
                site_id=site.id,
                product_id=products["privigen"],
                lead_time_days=14,
                safety_stock_grams="800",
                review_period_days=7,
                order_presentation_grams="10",
                case_vials=10,
                maximum_grams="2000",
            ),
        )
    )
    plans = []
    for p in PATIENTS:
        _, plan = build.enrol(
            p.mrn,
            site.id,
            products[p.product],
            today + dt.timedelta(days=p.due_in_days),
            measured_on=today - dt.timedelta(days=7),
            weight=p.weight_kg,
            height=p.height_cm,
            given=p.given,
            family=p.family,
            born=dt.date(*p.born),
            sex=p.sex,
            plan=plan_fields(p),
        )
        plans.append(plan)
    booked = []
    for plan in plans[:3]:  # the first three patients are booked already, stock reserved
        slots = sch.FindSlots(pb.FindSlotsRequest(therapy_plan_id=plan.id, max_results=1)).slots
        if not slots:
            continue
        start = slots[0].local_start
        appointment = build.book(
            plan.id, slots[0].chair_id, slots[0].local_date, start.hours, start.minutes
        )
        stock.ReserveStock(
            inv.ReserveStockRequest(
                appointment_id=appointment.id,
                site_id=site.id,
                patient_id=plan.patient_id,
                product_id=plan.product_id,
                grams=appointment.dose_grams,
                needed_on=appointment.local_date,
            )
        )
        booked.append(appointment)
    return notes + [
        f"demo centre: site {site.id} ({len(chairs)} chairs, 2–3 nurses on weekdays)",
        f"  {len(plans)} patients with plans due over the next weeks; {len(booked)} booked",
        f"  {len(LOTS)} lots received at the site; stock reserved for the booked appointments",
        f"  a plan to try FindSlots with: {plans[3].id}",
    ]


# --- notify -------------------------------------------------------------------------------------

CONSOLE_REF = "demo-console"


def load_notify(
    notify_address: str, tokens: TokenSource, *, tls: ClientTls | None = None
) -> list[str]:
    """The "pharmacy and day-unit console" subscriber: every topic on the CONSOLE channel, for
    every site (no site filter), so `make run` prints the scheduler's due notices, reminders
    and missed infusions and the inventory's reorder, low-stock, expiry and recall alerts.
    Broadcasts reach the subscribers that exist when they are published, so this runs first.
    Idempotent: found by its external reference. ``tls``: notify serves TLS (the e2e tests)."""
    from infusion.notify.v1 import notify_pb2 as npb
    from infusion.notify.v1 import notify_pb2_grpc

    channel = open_channel(notify_address, tls, tokens)
    try:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        found = stub.ListSubscribers(npb.ListSubscribersRequest(external_ref=CONSOLE_REF))
        if found.subscribers:
            return []
        # every topic but the stream-only BOARD_CHANGED, which no channel delivers (the live
        # chair board listens to it through Subscribe)
        topics = [
            t
            for t in npb.Topic.values()
            if t not in (npb.TOPIC_UNSPECIFIED, npb.TOPIC_BOARD_CHANGED)
        ]
        made = stub.CreateSubscriber(
            npb.CreateSubscriberRequest(
                request_id=f"demo-notify-{CONSOLE_REF}",
                subscriber=npb.Subscriber(
                    external_ref=CONSOLE_REF,
                    display_name="Pharmacy and day-unit console",
                    time_zone="Europe/London",
                    kind=npb.SUBSCRIBER_KIND_STAFF,
                    preferences=[
                        npb.Preference(topic=t, channels=[npb.CHANNEL_CONSOLE])  # type: ignore[arg-type]
                        for t in topics
                    ],
                ),
            )
        ).subscriber
        return [f"notify: console subscriber {made.id} for all {len(topics)} delivered topics"]
    finally:
        channel.close()
