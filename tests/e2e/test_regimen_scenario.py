"""A response-guided regimen end to end (docs/regimens.md): scheduler, inventory and notify as
separate processes on PostgreSQL, TLS with client certificates, tokens checked, notify
delivering to a webhook receiver that checks every signature. The story takes four months, so
the services run on a clock the test moves forward (tests/e2e/moved_clock.py: the real time
plus an offset all three read from one file); every visit is still booked, checked in, started
and completed through the RPCs on its local day, its vials reserved and dispensed by the
inventory.

- **four infusions** of 70 g (1 g/kg, 70 kg) every 28 days, each booked the day before, its
  vials reserved through the outbox and dispensed at completion with the lots scanned;
- **outcomes**: the right hand's grip strength after each of the first three (20 kg on the day,
  30 on day 7, 28 on day 14, 24 on day 24: half the gain lost by day 24), each record naming the
  infusion it follows;
- **the review comes due**: 6 months after the therapy's start, due from 30 days before; the
  scheduler's job raises OUTCOME_REVIEW_DUE once, and it reaches the clinic's staff webhook;
  ListDueReviews shows it DUE;
- **proposal**: ProposeRegimenAdjustment reads three cycles with onset on day 24 → every 21
  days (24 − 2 = 22, whole weeks), 3 days ahead, its rationale written out; the review decides
  ADJUST, and AcceptRegimenProposal citing it makes the plan's version 2 at 21 days;
- **the next booking lands at the new interval**: ListDueInfusions and FindSlots put the next
  dose 21 days after the last one (not 28), and a booking there is reserved;
- **audit**: the new mutations (RecordOutcome, RecordReviewDecision, AcceptRegimenProposal)
  are in the patient's trail, and every mutation has exactly one record in intact chains;
- **the logs**: JSON lines, none naming the patient (the review notice carries her name to the
  staff).

A second story on the same fleet: an IV plan switched to Hizentra at home shows its weekly SC
demand in the inventory's forecast (the scheduler's start-up push), and a home dose recorded
with its lot leaves the shelf, traced to the patient.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.type.date_pb2 import Date

from demo.builder import ALL_DAYS, Builder, pb_date
from infusion.audit.v1 import audit_pb2, audit_pb2_grpc
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from tests.e2e.audit_checks import check_audit
from tests.e2e.harness import Fleet, eventually, notifications, postgres_databases, query
from tests.e2e.moved_clock import OFFSET_FILE, OffsetFileClock, move_clock
from tests.e2e.sinks import WebhookSink, webhook_sink
from tests.e2e.test_scenario import check_logs

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ORG = "e2e-org"
GAMMAGARD = "gammagard-liquid"  # 10 g vials: 70 g = 7 vials
UTC = dt.UTC
CYCLE = ((0, "20"), (7, "30"), (14, "28"), (24, "24"))  # day of the cycle, grip strength (kg)


def rid() -> str:
    return str(uuid.uuid4())


def from_pb(day: Date) -> dt.date:
    return dt.date(day.year, day.month, day.day)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    """An instant of the site's day (the site keeps UTC)."""
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=UTC)


@dataclass
class System:
    processes: Fleet
    webhooks: WebhookSink
    clock_file: Path
    started: float

    def step(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {text}", flush=True)

    def move_to(self, instant: dt.datetime) -> None:
        move_clock(self.clock_file, instant)


@pytest.fixture
def system(postgres_server_url: str, tmp_path: Path) -> Iterator[System]:
    clock_file = tmp_path / "clock-offset"
    # the clinic's webhook receiver lives in the services' time: a signature is fresh by theirs
    moved = OffsetFileClock(clock_file)
    with (
        webhook_sink(lambda: moved.now().timestamp()) as webhooks,
        postgres_databases(postgres_server_url) as databases,
    ):
        processes = Fleet(
            tmp_path,
            databases,
            {
                OFFSET_FILE: str(clock_file),
                "SCHEDULER_JOBS_INTERVAL_SECONDS": "1",
                "NOTIFY_WEBHOOK_ALLOW_LIST": webhooks.allow_list,
                "NOTIFY_RETRY_BASE_SECONDS": "1",
                "NOTIFY_RETRY_MAX_SECONDS": "5",
                "LOG_FORMAT": "json",
            },
            tls=True,
            org=ORG,
            module="tests.e2e.moved_clock",
        )
        processes.run("services.inventory", "seed")
        try:
            processes.start("notify", "inventory", "scheduler")
            yield System(processes, webhooks, clock_file, time.monotonic())
        finally:
            processes.stop_all()
            for name in processes.services:  # shown when the test fails
                print(f"--- {name} log (tail) ---\n{processes.log_tail(name, 25)}")


def test_outcomes_drive_a_shorter_interval_and_the_review_is_notified(system: System) -> None:
    step, processes, webhooks = system.step, system.processes, system.webhooks
    channels = [processes.channel(name) for name in ("scheduler", "inventory", "notify")]
    sch = scheduler_pb2_grpc.SchedulerServiceStub(channels[0])
    stock = inventory_pb2_grpc.InventoryServiceStub(channels[1])
    note = notify_pb2_grpc.NotifyServiceStub(channels[2])
    gammagard = stock.GetProduct(inv.GetProductRequest(id=GAMMAGARD)).product.id

    # The first infusion is two days ahead (booked the day before it, still ahead of the real
    # time); the therapy started earlier, so that its first review (start + 6 months, due from
    # 30 days before) comes due after the fourth infusion: start = review − 6 months, the
    # review 118 days after the first infusion (a day of the month every month has).
    first = dt.datetime.now(UTC).date() + dt.timedelta(days=2)
    infusions = [first + dt.timedelta(days=28 * i) for i in range(4)]
    review = first + dt.timedelta(days=118)
    review = review.replace(day=min(review.day, 28))
    start = review.replace(
        year=review.year - (review.month <= 6), month=(review.month - 7) % 12 + 1
    )
    assert (start.year * 12 + start.month) + 6 == review.year * 12 + review.month
    due_from = review - dt.timedelta(days=30)
    assert infusions[3] < due_from <= infusions[3] + dt.timedelta(days=4)

    # --- the clinic, its stock, its staff subscriber, the patient and her plan ----------------
    build = Builder(sch, stock, ORG)
    site = build.site(name="Regimen Day Unit", tz="Etc/GMT", days=ALL_DAYS)
    (chair,) = build.chairs(site.id, 1)
    build.stock_site(site.id, "Etc/GMT", "Regimen Pharmacy")
    build.receive(site.id, gammagard, "GL-RG-1", first + dt.timedelta(days=700), 40)
    note.CreateSubscriber(
        npb.CreateSubscriberRequest(
            request_id=rid(),
            subscriber=npb.Subscriber(
                external_ref="neuro-clinic",
                display_name="Neuromuscular clinic",
                time_zone="Etc/GMT",
                webhook_url=webhooks.register("clinic", "whsec-clinic"),
                webhook_secret="whsec-clinic",
                site_ids=[site.id],
                preferences=[
                    npb.Preference(
                        topic=npb.TOPIC_OUTCOME_REVIEW_DUE, channels=[npb.CHANNEL_WEBHOOK]
                    )
                ],
                kind=npb.SUBSCRIBER_KIND_STAFF,
            ),
        )
    )
    patient, plan = build.enrol(  # weighed when the therapy started
        "MRN-rg", site.id, gammagard, start, measured_on=start, weight="70", given="Rhea"
    )
    assert (plan.interval_days, plan.version) == (28, 1)
    step(f"clinic, stock and plan made; therapy from {start}, infusions from {first}")

    # --- four infusions, 28 days apart, through the chair's RPCs -------------------------------
    def reserved(appointment: pb.Appointment) -> inv.Reservation | None:
        found = stock.ListReservations(
            inv.ListReservationsRequest(site_id=site.id, page_size=100)
        ).reservations
        mine = [r for r in found if r.appointment_id == appointment.id]
        return mine[0] if mine and mine[0].state == inv.RESERVATION_STATE_ACTIVE else None

    def give(day: dt.date) -> pb.Appointment:
        system.move_to(at(day - dt.timedelta(days=1), 12))
        booked = build.book(plan.id, chair.id, day, 9)
        assert booked.status == pb.APPOINTMENT_STATUS_BOOKED
        reservation = eventually(f"the {day} visit's vials reserved", lambda: reserved(booked))
        assert sum(line.vials for line in reservation.lines) == 7
        system.move_to(at(day, 8, 45))
        sch.CheckIn(pb.CheckInRequest(id=booked.id, request_id=rid()))
        system.move_to(at(day, 9, 5))
        sch.StartInfusion(pb.StartInfusionRequest(id=booked.id, request_id=rid()))
        system.move_to(at(day, 14, 10))
        done = sch.CompleteInfusion(
            pb.CompleteInfusionRequest(
                id=booked.id,
                grams_given="70",
                scanned_lots=[
                    pb.ScannedLot(lot_number=x.lot_number, vials=x.vials) for x in reservation.lines
                ],
                request_id=rid(),
            )
        )
        assert done.appointment.status == pb.APPOINTMENT_STATUS_FULFILLED
        assert from_pb(done.next_due.due_date) == day + dt.timedelta(days=28)
        fulfilled: pb.Appointment = done.appointment
        return fulfilled

    given = [give(day) for day in infusions]
    step(f"four infusions given, the last on {infusions[-1]}")
    assert webhooks.calls("clinic", "OUTCOME_REVIEW_DUE") == []  # not due yet

    # --- outcomes: grip strength falls back on day 24 of each cycle ---------------------------
    recorded = []
    for visit, day in zip(given[:3], infusions[:3], strict=True):
        for offset, kg in CYCLE:
            recorded.append(
                sch.RecordOutcome(
                    pb.RecordOutcomeRequest(
                        outcome=pb.OutcomeRecord(
                            patient_id=patient.id,
                            therapy_plan_id=plan.id,
                            recorded_on=pb_date(day + dt.timedelta(days=offset)),
                            measure=pb.OUTCOME_MEASURE_GRIP_STRENGTH,
                            hand=pb.HAND_RIGHT,
                            value=kg,
                            appointment_id=visit.id,
                        ),
                        request_id=rid(),
                    )
                ).outcome
            )
    listed = sch.ListOutcomes(
        pb.ListOutcomesRequest(patient_id=patient.id, therapy_plan_id=plan.id, page_size=100)
    ).outcomes
    assert sorted(o.id for o in listed) == sorted(o.id for o in recorded)
    assert len(listed) == 12 and from_pb(listed[0].recorded_on) == infusions[2] + dt.timedelta(24)
    step("12 grip-strength records made")

    # --- the review comes due, and the clinic is told once -------------------------------------
    reviews = sch.ListDueReviews(pb.ListDueReviewsRequest(site_id=site.id, horizon_days=366))
    assert [(r.therapy_plan_id, from_pb(r.due_date), r.state) for r in reviews.due_reviews] == [
        (plan.id, review, pb.REVIEW_STATE_NOT_YET)
    ]
    decision_day = due_from + dt.timedelta(days=1)
    system.move_to(at(decision_day, 9))
    reviews = sch.ListDueReviews(pb.ListDueReviewsRequest(site_id=site.id))
    assert [
        (r.therapy_plan_id, r.patient_id, from_pb(r.due_date), r.state) for r in reviews.due_reviews
    ] == [(plan.id, patient.id, review, pb.REVIEW_STATE_DUE)]
    told = eventually(
        "OUTCOME_REVIEW_DUE at the clinic's webhook",
        lambda: webhooks.calls("clinic", "OUTCOME_REVIEW_DUE"),
    )
    assert told[0].payload["therapy_plan_id"] == plan.id
    assert told[0].payload["patient_id"] == patient.id
    assert told[0].payload["patient_name"] == "Rhea Example"
    assert told[0].payload["due_date"] == {
        "year": review.year,
        "month": review.month,
        "day": review.day,
    }
    step(f"review of {review} came due on {decision_day}; the clinic told")

    # --- the proposal: every 21 days, with its rationale --------------------------------------
    asked = sch.ProposeRegimenAdjustment(
        pb.ProposeRegimenAdjustmentRequest(therapy_plan_id=plan.id)
    )
    assert (asked.expectation, asked.patient_id) == ("WEARING_OFF", patient.id)
    assert [(c.verdict, c.onset_day) for c in asked.cycles] == [
        ("ONSET", 24),
        ("ONSET", 24),
        ("ONSET", 24),
        ("NO_POST_INFUSION_VALUE", 0),  # the fourth cycle: nothing measured since its day 0
    ]
    proposal = asked.proposal
    assert proposal.kind == pb.PROPOSAL_KIND_SHORTER_INTERVAL
    assert (proposal.interval_days, proposal.expected_onset_day, proposal.lead_days) == (21, 24, 3)
    assert (proposal.grams, proposal.plan_version) == ("70", 1)
    # 70 g every 4 weeks = 17.5 g a week; every 3 weeks = 23.33 g a week
    assert (proposal.grams_per_week_before, proposal.grams_per_week_after) == ("17.5", "23.33")
    rationale = "\n".join(proposal.rationale)
    assert "grip strength, right hand" in rationale
    assert "Expected onset day 24 − 2 days' margin = 22 days" in rationale
    assert "every 21 days instead of every 28" in rationale

    decided = sch.RecordReviewDecision(
        pb.RecordReviewDecisionRequest(
            therapy_plan_id=plan.id,
            decision=pb.REVIEW_DECISION_KIND_ADJUST,
            reason="grip strength wears off on day 24",
            request_id=rid(),
        )
    )
    assert from_pb(decided.review_decision.decided_on) == decision_day
    # the next review: 12 months after the decision
    next_review = decision_day.replace(year=decision_day.year + 1)
    assert (from_pb(decided.next_review.due_date), decided.next_review.state) == (
        next_review,
        pb.REVIEW_STATE_NOT_YET,
    )
    accepted = sch.AcceptRegimenProposal(
        pb.AcceptRegimenProposalRequest(
            proposal=proposal,
            reason="weakness before each dose",
            review_decision_id=decided.review_decision.id,
            request_id=rid(),
        )
    ).therapy_plan
    assert (accepted.version, accepted.interval_days, accepted.maintenance_dose) == (2, 21, "1")
    ((version_reason,),) = query(
        processes.env["SCHEDULER_DATABASE_URL"],
        "SELECT reason FROM therapy_plan_versions WHERE plan_id = :plan AND version = 2",
        plan=plan.id,
    )
    assert version_reason.startswith("accepted proposal shorter_interval")
    assert f"review decision {decided.review_decision.id}: adjust" in version_reason
    step("proposal of every 21 days accepted after the review decided to adjust: version 2")

    # --- the next dose: 21 days after the last, found and booked there -------------------------
    next_day = infusions[3] + dt.timedelta(days=21)
    due = sch.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=site.id, horizon_days=60)
    ).due_infusions
    assert [(d.therapy_plan_id, d.plan_version, from_pb(d.due_date)) for d in due] == [
        (plan.id, 2, next_day)
    ]
    slots = sch.FindSlots(
        pb.FindSlotsRequest(
            therapy_plan_id=plan.id,
            site_id=site.id,
            start_date=pb_date(next_day - dt.timedelta(days=3)),
            end_date=pb_date(next_day + dt.timedelta(days=3)),
            max_results=5,
        )
    )
    assert from_pb(slots.due_date) == next_day
    on_due = [s for s in slots.slots if s.days_from_due == 0]
    assert on_due and all(from_pb(s.local_date) == next_day for s in on_due)
    booked = build.book(plan.id, on_due[0].chair_id, next_day, on_due[0].local_start.hours)
    assert (from_pb(booked.local_date), booked.plan_version) == (next_day, 2)
    eventually("the 21-day booking's vials reserved", lambda: reserved(booked))
    due = sch.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=site.id, horizon_days=60)
    ).due_infusions
    assert [(from_pb(d.due_date), d.booked_appointment_id) for d in due] == [(next_day, booked.id)]
    step(f"next dose due and booked on {next_day}, 21 days after the last")

    # --- told once; the audit trail has the new mutations --------------------------------------
    review_notices = notifications(note, npb.TOPIC_OUTCOME_REVIEW_DUE)
    assert [n.payload.outcome_review_due.therapy_plan_id for n in review_notices] == [plan.id]
    assert len(webhooks.calls("clinic", "OUTCOME_REVIEW_DUE")) == 1
    assert webhooks.rejected == []
    auditor_channel = processes.channel_as("scheduler", "auditor")
    trail = (
        audit_pb2_grpc.AuditServiceStub(auditor_channel)
        .ListAuditEvents(audit_pb2.ListAuditEventsRequest(patient_id=patient.id, page_size=500))
        .audit_events
    )
    calls = [e.method.rpartition("/")[2] for e in trail]
    assert calls.count("RecordOutcome") == 12
    assert calls.count("RecordReviewDecision") == 1
    assert calls.count("AcceptRegimenProposal") == 1
    assert calls.count("CompleteInfusion") == 4
    assert calls.count("BookAppointment") == 5
    # the stock: 5 bookings of 7 vials reserved, 4 dispensed
    shelf = stock.GetStockLevels(
        inv.GetStockLevelsRequest(site_id=site.id, product_id=gammagard)
    ).products[0]
    assert (shelf.on_hand_vials, shelf.reserved_vials) == (40 - 28, 7)
    for channel in (*channels, auditor_channel):
        channel.close()
    processes.stop_all()  # every record written
    trails = check_audit(processes)
    step(f"audit trails {trails}: every mutation once, chains intact")
    # the review notice names the patient to the staff; no log line does
    birth = f"{patient.birth_date.year:04d}-{patient.birth_date.month:02d}-"
    birth += f"{patient.birth_date.day:02d}"
    words = [rf"\b{re.escape(n)}\b" for n in (patient.given_name, patient.family_name)]
    lines = check_logs(processes, [*words, *map(re.escape, (birth, patient.mrn, "whsec-clinic"))])
    step(f"{lines} log lines: JSON, and none names the patient")


def test_a_switch_to_sc_at_home_shows_in_the_forecast_and_a_home_dose_leaves_the_shelf(
    system: System,
) -> None:
    """An IV plan (2 g/kg of 70 kg, Gammagard every 28 days, the last dose 7 days ago) switched
    to Hizentra at home: MMN 1:1, 140 g ÷ 4 = 35 g a week from today. The scheduler's start-up
    forecast push (30 s after it starts, through the outbox) shows the inventory 35 g each
    week at the site; a home dose recorded with its lot is dispensed there (4 × 10 g opened,
    5 g waste), stock on hand falls and the lot's recall trace names the patient."""
    step, processes = system.step, system.processes
    channels = [processes.channel(name) for name in ("scheduler", "inventory")]
    sch = scheduler_pb2_grpc.SchedulerServiceStub(channels[0])
    stock = inventory_pb2_grpc.InventoryServiceStub(channels[1])
    gammagard = stock.GetProduct(inv.GetProductRequest(id=GAMMAGARD)).product.id
    hizentra = stock.GetProduct(inv.GetProductRequest(id="hizentra")).product.id
    # The site keeps UTC. The services' clock is moved to noon of tomorrow, so that the test's
    # "today" stays the site's today however close to midnight the run starts.
    today = dt.datetime.now(UTC).date() + dt.timedelta(days=1)
    system.move_to(at(today, 12))
    last_iv = today - dt.timedelta(days=7)

    build = Builder(sch, stock, ORG)
    site = build.site(name="Home Therapy Unit", tz="Etc/GMT", days=ALL_DAYS)
    build.stock_site(site.id, "Etc/GMT", "Home Pharmacy")
    build.receive(site.id, hizentra, "HZ-HOME-1", today + dt.timedelta(days=700), 20)
    patient, iv = build.enrol(
        "MRN-home", site.id, gammagard, last_iv - dt.timedelta(days=84),
        measured_on=last_iv, weight="70", given="Hana", plan={"maintenance_dose": "2"},
    )  # fmt: skip
    switched = sch.ConvertRegimen(
        pb.ConvertRegimenRequest(
            therapy_plan_id=iv.id,
            etag=iv.etag,
            route=pb.ROUTE_SC,
            product_id=hizentra,
            last_dose_date=pb_date(last_iv),
            reason="home therapy",
            home_administration=True,
            request_id=rid(),
        )
    )
    c = switched.conversion
    assert (c.factor, c.cycle_grams, c.weekly_grams) == ("1", "140", "35")
    assert from_pb(c.first_date) == today
    assert switched.therapy_plan.home_administration
    step("IV plan switched to Hizentra at home: 35 g a week from today")

    # --- the inventory's forecast: the weekly SC demand at the site ----------------------------
    def weekly_demand() -> dict[dt.date, str] | None:
        days = stock.GetStockForecast(
            inv.GetStockForecastRequest(
                site_id=site.id, product_id=hizentra, start_date=pb_date(today), horizon_days=22
            )
        ).days
        found = {from_pb(d.date): d.forecast_demand_grams for d in days}
        return {k: v for k, v in found.items() if v != "0"} or None

    demand = eventually("the forecast of the home doses at the inventory", weekly_demand, 90)
    assert demand == {today + dt.timedelta(days=7 * n): "35" for n in range(4)}
    step("the inventory forecasts 35 g of Hizentra each week at the site")

    # --- a home dose with its lot: off the shelf, traced to the patient ------------------------
    given = sch.RecordHomeInfusion(
        pb.RecordHomeInfusionRequest(
            therapy_plan_id=iv.id,
            given_on=pb_date(today),
            grams_given="35",
            scanned_lots=[pb.ScannedLot(lot_number="HZ-HOME-1", vials=4)],
            request_id=rid(),
        )
    )
    assert from_pb(given.next_due.due_date) == today + dt.timedelta(days=7)

    def traced() -> list[inv.Administration] | None:
        found = stock.ListLotRecipients(
            inv.ListLotRecipientsRequest(product_id=hizentra, lot_number="HZ-HOME-1")
        ).administrations
        return list(found) or None

    (trace,) = eventually("the home dose dispensed at the inventory", traced)
    assert (trace.patient_id, trace.appointment_id, trace.vials) == (
        patient.id,
        given.home_infusion.id,
        4,
    )
    assert (trace.grams_administered, trace.grams_wasted) == ("35", "5")
    shelf = stock.GetStockLevels(
        inv.GetStockLevelsRequest(site_id=site.id, product_id=hizentra)
    ).products[0]
    assert (shelf.on_hand_vials, shelf.reserved_vials) == (20 - 4, 0)
    step("the home dose left the shelf: 16 vials on hand, the lot traced to the patient")
    for channel in channels:
        channel.close()


def test_the_offset_clock_is_shared_and_moves_forward_only(tmp_path: Path) -> None:
    """What the scenario relies on: two readers of one file agree, a move reaches a reader
    that has read before, and a move back is refused."""
    path = tmp_path / "offset"
    one, two = OffsetFileClock(path), OffsetFileClock(path)
    assert abs(one.now() - dt.datetime.now(UTC)) < dt.timedelta(seconds=5)  # no file: real time
    target = dt.datetime.now(UTC) + dt.timedelta(days=30)
    move_clock(path, target)
    assert abs(one.now() - target) < dt.timedelta(seconds=5)
    assert abs(two.now() - target) < dt.timedelta(seconds=5)
    later = target + dt.timedelta(days=28)
    move_clock(path, later)
    assert abs(one.now() - later) < dt.timedelta(seconds=5)
    with pytest.raises(AssertionError):
        move_clock(path, target)
