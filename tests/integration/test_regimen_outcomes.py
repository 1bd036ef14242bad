"""Outcome records, outcome reviews and regimen proposals through gRPC (docs/regimens.md), on
SQLite and PostgreSQL: bad input answers INVALID_ARGUMENT naming the field, other
organisations' patients NOT_FOUND, retries the first result; the hand-worked case of
docs/regimens.md ("grip strength falls on day 24 of a 28-day interval → every 21 days") from
recorded infusions and outcomes to the accepted plan version and the due list that follows it;
OUTCOME_REVIEW_DUE raised once per review date by the scheduler's job."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.type.date_pb2 import Date
from sqlalchemy import select

from infusion.notify.v1 import notify_pb2 as npb
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.db import Database
from services.common.outbox import OutgoingEvent
from services.scheduler.adapters.notify_relay import publish_request
from services.scheduler.jobs import JobSettings, SchedulerJobs
from services.scheduler.store.models import PlanVersionRow, outbox
from tests.integration.builders import book, date, give, patient_plan, site_with_chairs
from tests.integration.conftest import Platform, request_id, scheduler_database_url
from tests.integration.errors import error_reason, field_violations, precondition_types

UTC = dt.UTC


def pbd(day: dt.date) -> Date:
    return date(day.year, day.month, day.day)


def outcome(
    patient_id: str,
    plan_id: str,
    day: dt.date,
    measure: int = pb.OUTCOME_MEASURE_GRIP_STRENGTH,
    value: str = "",
    **kw: object,
) -> pb.OutcomeRecord:
    fields: dict[str, object] = dict(
        patient_id=patient_id,
        therapy_plan_id=plan_id,
        recorded_on=pbd(day),
        measure=measure,
        value=value,
    )
    if measure == pb.OUTCOME_MEASURE_GRIP_STRENGTH and "hand" not in kw:
        fields["hand"] = pb.HAND_RIGHT
    fields.update(kw)
    return pb.OutcomeRecord(**fields)  # type: ignore[arg-type]


def record(p: Platform, o: pb.OutcomeRecord, rid: str = "") -> pb.OutcomeRecord:
    made: pb.OutcomeRecord = p.scheduler.RecordOutcome(
        pb.RecordOutcomeRequest(outcome=o, request_id=rid or request_id())
    ).outcome
    return made


def invalid(p: Platform, o: pb.OutcomeRecord) -> list[str]:
    with pytest.raises(grpc.RpcError) as bad:
        record(p, o)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return field_violations(bad.value)


@pytest.fixture
def scheduler_db(platform: Platform, database_url: str) -> Iterator[Database]:
    db = Database(scheduler_database_url(database_url))
    try:
        yield db
    finally:
        db.dispose()


# --- outcome records -----------------------------------------------------------------------------


def test_record_and_list_outcomes_with_bands_scope_and_retry(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1")
    other = patient_plan(platform, site, "MRN-2")
    pid = plan.patient_id
    day = dt.date(2026, 11, 20)

    first = outcome(pid, plan.id, day, value="31.5", note="dynamometer, 3 tries")
    made = record(platform, first, rid="outcome-1")
    assert made.id and made.recorded_by == "test-operator"  # the caller, not the request
    assert (made.value, made.hand, made.note) == ("31.5", pb.HAND_RIGHT, "dynamometer, 3 tries")
    assert record(platform, first, rid="outcome-1").id == made.id  # a retry: the first result
    record(platform, outcome(pid, plan.id, day, pb.OUTCOME_MEASURE_MRC_SUM_SCORE, "52"))
    record(
        platform,
        outcome(
            pid,
            plan.id,
            dt.date(2026, 11, 22),
            pb.OUTCOME_MEASURE_DISABILITY_SCORE,
            "3",
            scale=pb.DISABILITY_SCALE_ONLS,
        ),
    )
    record(
        platform,
        outcome(
            pid,
            plan.id,
            dt.date(2026, 11, 23),
            pb.OUTCOME_MEASURE_WEARING_OFF,
            "",
            wearing_off_none=True,
        ),
    )
    listed = platform.scheduler.ListOutcomes(pb.ListOutcomesRequest(patient_id=pid)).outcomes
    assert [o.recorded_on.day for o in listed] == [23, 22, 20, 20]  # newest first
    assert listed[0].wearing_off_none and listed[0].value == ""
    paged = platform.scheduler.ListOutcomes(
        pb.ListOutcomesRequest(patient_id=pid, therapy_plan_id=plan.id, page_size=3)
    )
    rest = platform.scheduler.ListOutcomes(
        pb.ListOutcomesRequest(
            patient_id=pid, therapy_plan_id=plan.id, page_size=3, page_token=paged.next_page_token
        )
    )
    assert len(paged.outcomes) == 3 and len(rest.outcomes) == 1
    assert {o.id for o in paged.outcomes} | {o.id for o in rest.outcomes} == {o.id for o in listed}

    # out of band, missing or misplaced fields: every bad field named
    assert invalid(platform, outcome(pid, plan.id, day, value="150.5")) == ["outcome.value"]
    assert invalid(platform, outcome(pid, plan.id, day, value="30", hand=pb.HAND_UNSPECIFIED)) == [
        "outcome.hand"
    ]
    assert invalid(
        platform, outcome(pid, plan.id, day, pb.OUTCOME_MEASURE_MRC_SUM_SCORE, "61")
    ) == ["outcome.value"]
    assert invalid(
        platform, outcome(pid, plan.id, day, pb.OUTCOME_MEASURE_MRC_SUM_SCORE, "40.5")
    ) == ["outcome.value"]
    assert invalid(
        platform,
        outcome(
            pid,
            plan.id,
            day,
            pb.OUTCOME_MEASURE_DISABILITY_SCORE,
            "11",
            scale=pb.DISABILITY_SCALE_INCAT,
        ),
    ) == ["outcome.value"]
    assert invalid(
        platform, outcome(pid, plan.id, day, pb.OUTCOME_MEASURE_DISABILITY_SCORE, "2")
    ) == ["outcome.scale"]
    assert sorted(
        invalid(
            platform,
            outcome(pid, plan.id, dt.date(2026, 12, 30), pb.OUTCOME_MEASURE_WEARING_OFF, "3"),
        )
    ) == ["outcome.recorded_on", "outcome.value"]
    assert invalid(platform, outcome(pid, other.id, day, value="30")) == ["outcome.therapy_plan_id"]
    assert invalid(platform, pb.OutcomeRecord(patient_id=pid)) == [
        "outcome.therapy_plan_id",
        "outcome.recorded_on",
        "outcome.measure",
    ]
    # an appointment of another patient is not one this record can follow
    theirs = book(platform, other, chairs[0], dt.date(2026, 12, 1), 9)
    assert invalid(platform, outcome(pid, plan.id, day, value="30", appointment_id=theirs.id)) == [
        "outcome.appointment_id"
    ]
    mine = book(platform, plan, chairs[1], dt.date(2026, 12, 1), 9)
    linked = record(platform, outcome(pid, plan.id, day, value="30", appointment_id=mine.id))
    assert linked.appointment_id == mine.id

    with pytest.raises(grpc.RpcError) as unknown:
        record(platform, outcome(pid, "no-such-plan", day, value="30"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    # another organisation sees neither the patient nor the plan
    token = platform.issuer.operator_token("org-2")
    stranger = scheduler_pb2_grpc.SchedulerServiceStub(
        platform.issuer.channel(platform.scheduler_address, token)
    )
    for call in (
        lambda: stranger.ListOutcomes(pb.ListOutcomesRequest(patient_id=pid)),
        lambda: stranger.RecordOutcome(
            pb.RecordOutcomeRequest(
                outcome=outcome(pid, plan.id, day, value="30"), request_id=request_id()
            )
        ),
        lambda: stranger.ProposeRegimenAdjustment(
            pb.ProposeRegimenAdjustmentRequest(therapy_plan_id=plan.id)
        ),
        lambda: stranger.RecordReviewDecision(
            pb.RecordReviewDecisionRequest(
                therapy_plan_id=plan.id,
                decision=pb.REVIEW_DECISION_KIND_CONTINUE,
                reason="fine",
                request_id=request_id(),
            )
        ),
    ):
        with pytest.raises(grpc.RpcError) as hidden:
            call()
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND


# --- the hand-worked proposal ---------------------------------------------------------------------

INFUSIONS = [
    dt.date(2026, 12, 1),
    dt.date(2026, 12, 29),
    dt.date(2027, 1, 26),
    dt.date(2027, 2, 23),
]


def test_grip_falling_on_day_24_of_28_gives_every_21_days_and_the_due_list_follows(
    platform: Platform,
) -> None:
    """docs/regimens.md, "Shorter interval": 70 kg on 1 g/kg (70 g) every 28 days; in each of
    three cycles grip strength is 20 kg on day 0, peaks at 30 kg on day 7 and is 24 kg on day 24:
    24 ≤ 30 − 0.5 × (30 − 20) = 25, so the onset is day 24 in all three; E = 24 → 24 − 2 = 22 →
    down to whole weeks = 21 days, 3 days ahead; 70 g × 7 ÷ 28 = 17.5 g a week → 70 × 7 ÷ 21 =
    23.33 g a week."""
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1")
    pid = plan.patient_id
    for day in INFUSIONS:
        assert give(platform, plan, chairs[0], day).status == pb.APPOINTMENT_STATUS_FULFILLED
    for start in INFUSIONS[:3]:
        for offset, kg in ((0, "20"), (7, "30"), (14, "28"), (24, "24")):
            record(platform, outcome(pid, plan.id, start + dt.timedelta(days=offset), value=kg))
        # the left hand, read less often, is not the series read
        record(
            platform,
            outcome(pid, plan.id, start + dt.timedelta(days=7), value="10", hand=pb.HAND_LEFT),
        )

    asked = platform.scheduler.ProposeRegimenAdjustment(
        pb.ProposeRegimenAdjustmentRequest(therapy_plan_id=plan.id)
    )
    assert (asked.expectation, asked.patient_id) == ("WEARING_OFF", pid)
    assert [(c.verdict, c.onset_day) for c in asked.cycles] == [
        ("ONSET", 24),
        ("ONSET", 24),
        ("ONSET", 24),
        ("NO_POST_INFUSION_VALUE", 0),  # under way, nothing measured since day 0
    ]
    proposal = asked.proposal
    assert proposal.kind == pb.PROPOSAL_KIND_SHORTER_INTERVAL
    assert (proposal.interval_days, proposal.expected_onset_day, proposal.lead_days) == (21, 24, 3)
    assert (proposal.grams, proposal.plan_version) == ("70", 1)
    assert (proposal.grams_per_week_before, proposal.grams_per_week_after) == ("17.5", "23.33")
    text = "\n".join(proposal.rationale)
    assert "grip strength, right hand" in text
    assert "Expected onset day 24 − 2 days' margin = 22 days" in text
    assert "every 21 days instead of every 28" in text
    assert "Lead 24 − 21 = 3 days" in text
    # read-only: the plan is still version 1
    assert (
        platform.scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan.id)).therapy_plan.version
        == 1
    )

    # a proposal that is not the one worked out is refused, naming why
    forged = pb.RegimenProposal()
    forged.CopyFrom(proposal)
    forged.interval_days = 14
    with pytest.raises(grpc.RpcError) as stale:
        platform.scheduler.AcceptRegimenProposal(
            pb.AcceptRegimenProposalRequest(proposal=forged, reason="x", request_id=request_id())
        )
    assert precondition_types(stale.value) == ["PROPOSAL_CURRENT"]
    with pytest.raises(grpc.RpcError) as no_reason:
        platform.scheduler.AcceptRegimenProposal(
            pb.AcceptRegimenProposalRequest(proposal=proposal, request_id=request_id())
        )
    assert field_violations(no_reason.value) == ["reason"]

    accept = pb.AcceptRegimenProposalRequest(
        proposal=proposal, reason="weakness before each dose", request_id="accept-1"
    )
    accepted = platform.scheduler.AcceptRegimenProposal(accept).therapy_plan
    assert (accepted.version, accepted.interval_days, accepted.maintenance_dose) == (2, 21, "1")
    assert platform.scheduler.AcceptRegimenProposal(accept).therapy_plan.version == 2  # retry
    # the last dose was 23 Feb: the next is due 21 days later, not 28
    due = platform.scheduler.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=site.id, horizon_days=60)
    ).due_infusions
    assert [(d.therapy_plan_id, d.due_date) for d in due] == [(plan.id, date(2027, 3, 16))]
    # the new version has no cycles yet: nothing to propose, and the old proposal is stale
    again = platform.scheduler.ProposeRegimenAdjustment(
        pb.ProposeRegimenAdjustmentRequest(therapy_plan_id=plan.id)
    )
    assert not again.HasField("proposal") and again.no_proposal_code == "inconclusive"
    with pytest.raises(grpc.RpcError) as gone:
        platform.scheduler.AcceptRegimenProposal(
            pb.AcceptRegimenProposalRequest(proposal=proposal, reason="x", request_id=request_id())
        )
    assert precondition_types(gone.value) == ["PROPOSAL_CURRENT"]


def test_a_stable_patient_on_every_3_weeks_gets_a_reduction_trial(
    platform: Platform, scheduler_db: Database
) -> None:
    """docs/regimens.md, "Reduction trial": 70 kg on 1 g/kg (70 g) every 21 days, no
    wearing-off in three cycles (20 → 30 kg, still 29 kg on day 18) → 0.9 g/kg = 63 g every 21
    days; accepting it with a review decision makes version 2 at 0.9 g/kg citing it."""
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1", interval_days=21)
    pid = plan.patient_id
    days = [dt.date(2026, 12, 1), dt.date(2026, 12, 22), dt.date(2027, 1, 12), dt.date(2027, 2, 2)]
    for day in days:
        give(platform, plan, chairs[0], day)
    for start in days[:3]:
        for offset, kg in ((0, "20"), (7, "30"), (18, "29")):
            record(platform, outcome(pid, plan.id, start + dt.timedelta(days=offset), value=kg))
    asked = platform.scheduler.ProposeRegimenAdjustment(
        pb.ProposeRegimenAdjustmentRequest(therapy_plan_id=plan.id)
    )
    assert asked.expectation == "STABLE"
    proposal = asked.proposal
    assert proposal.kind == pb.PROPOSAL_KIND_REDUCTION_TRIAL
    assert (proposal.interval_days, proposal.grams, proposal.g_per_kg) == (21, "63", "0.9")
    decided = platform.scheduler.RecordReviewDecision(
        pb.RecordReviewDecisionRequest(
            therapy_plan_id=plan.id,
            decision=pb.REVIEW_DECISION_KIND_TRIAL_REDUCTION,
            reason="stable a year",
            request_id=request_id(),
        )
    ).review_decision
    accepted = platform.scheduler.AcceptRegimenProposal(
        pb.AcceptRegimenProposalRequest(
            proposal=proposal,
            reason="trial of a lower dose",
            review_decision_id=decided.id,
            request_id=request_id(),
        )
    ).therapy_plan
    assert (accepted.version, accepted.maintenance_dose, accepted.interval_days) == (2, "0.9", 21)
    calculation = platform.scheduler.CalculateDose(
        pb.CalculateDoseRequest(therapy_plan_id=plan.id, dosing_date=date(2027, 2, 23))
    ).calculation
    assert (calculation.plan_version, calculation.total_grams) == (2, "63")
    with scheduler_db.read() as session:  # the version's reason cites the decision
        reason = session.scalar(
            select(PlanVersionRow.reason).where(
                PlanVersionRow.plan_id == plan.id, PlanVersionRow.version == 2
            )
        )
    assert reason is not None and reason.startswith("accepted proposal reduction_trial")
    assert f"review decision {decided.id}: trial_reduction" in reason


def test_two_g_per_kg_on_one_day_is_split_over_two_and_booked_as_a_course(
    platform: Platform,
) -> None:
    """docs/regimens.md, "Split over days": 70 kg on 2 g/kg (140 g) in one day every 28 days is
    above 1 g/kg a day → ⌈2 ÷ 1⌉ = 2 consecutive days of 140 ÷ 2 = 70 g; accepted, version 2 is
    1 g/kg on days 0 and 1 of each interval, due and booked as a two-day course; the days after
    the first do not start a cycle of their own."""
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1", maintenance_dose="2")
    pid = plan.patient_id
    give(platform, plan, chairs[0], dt.date(2026, 12, 1))

    with pytest.raises(grpc.RpcError) as bad:
        platform.scheduler.ProposeRegimenAdjustment(
            pb.ProposeRegimenAdjustmentRequest(therapy_plan_id=plan.id, max_g_per_kg_day="2.5")
        )
    assert field_violations(bad.value) == ["max_g_per_kg_day"]
    # with 2 g/kg allowed a day there is nothing to split, and no outcomes to read
    allowed = platform.scheduler.ProposeRegimenAdjustment(
        pb.ProposeRegimenAdjustmentRequest(therapy_plan_id=plan.id, max_g_per_kg_day="2")
    )
    assert not allowed.HasField("proposal") and allowed.no_proposal_code == "inconclusive"

    asked = platform.scheduler.ProposeRegimenAdjustment(
        pb.ProposeRegimenAdjustmentRequest(therapy_plan_id=plan.id)
    )
    assert asked.expectation == "INCONCLUSIVE"  # the split does not wait for outcomes
    proposal = asked.proposal
    assert proposal.kind == pb.PROPOSAL_KIND_SPLIT_OVER_DAYS
    assert (proposal.interval_days, proposal.grams, list(proposal.day_grams)) == (
        28,
        "140",
        ["70", "70"],
    )
    assert (proposal.grams_per_week_before, proposal.grams_per_week_after) == ("35", "35")
    text = "\n".join(proposal.rationale)
    assert "⌈2 ÷ 1⌉ = 2 consecutive days" in text
    assert "140 g over 2 days = 70 g a day" in text

    accepted = platform.scheduler.AcceptRegimenProposal(
        pb.AcceptRegimenProposalRequest(
            proposal=proposal, reason="headache after 140 g in one day", request_id="split-1"
        )
    ).therapy_plan
    assert (accepted.version, accepted.maintenance_dose, list(accepted.infusion_days)) == (
        2,
        "1",
        [0, 1],
    )
    # 1 Dec + 28 = 29 Dec, day 2 on 30 Dec
    due = platform.scheduler.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=site.id, horizon_days=60)
    ).due_infusions
    assert [(d.course_day, d.due_date) for d in due] == [
        (1, date(2026, 12, 29)),
        (2, date(2026, 12, 30)),
    ]
    dose = platform.scheduler.CalculateDose(
        pb.CalculateDoseRequest(therapy_plan_id=plan.id, dosing_date=date(2026, 12, 29))
    ).calculation
    assert dose.total_grams == "70"
    first = give(platform, plan, chairs[0], dt.date(2026, 12, 29))
    second = give(platform, plan, chairs[0], dt.date(2026, 12, 30))
    assert (first.course_day, second.course_day) == (1, 2)
    due = platform.scheduler.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=site.id, horizon_days=60)
    ).due_infusions
    # the next course: 29 Dec + 28 = 26 Jan, then 27 Jan
    assert [(d.course_day, d.due_date) for d in due] == [
        (1, date(2027, 1, 26)),
        (2, date(2027, 1, 27)),
    ]
    # within the maximum now; one cycle under version 2, from its first day
    again = platform.scheduler.ProposeRegimenAdjustment(
        pb.ProposeRegimenAdjustmentRequest(therapy_plan_id=plan.id)
    )
    assert again.no_proposal_code == "inconclusive"
    assert [c.start_date for c in again.cycles] == [date(2026, 12, 29)]
    assert pid == again.patient_id


# --- reviews --------------------------------------------------------------------------------------


def review_events(db: Database) -> list[OutgoingEvent]:
    with db.read() as session:
        rows = session.execute(
            select(outbox).where(outbox.c.topic == "OUTCOME_REVIEW_DUE").order_by(outbox.c.seq)
        ).all()
    return [
        OutgoingEvent(r.seq, r.id, r.topic, r.dedupe_key, r.payload, r.created_at, None)
        for r in rows
    ]


def test_reviews_come_due_are_notified_once_and_follow_decisions(
    platform: Platform, scheduler_db: Database
) -> None:
    """Start 1 December 2026 → first review 1 June 2027, due from 2 May; a decision to continue
    on 10 May 2027 → next 10 May 2028; a stop ends the schedule."""
    site, _ = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1")
    s = platform.scheduler
    jobs = SchedulerJobs(scheduler_db, platform.clock, JobSettings())

    def listed(horizon: int = 0) -> list[tuple[str, Date, int]]:
        answer = s.ListDueReviews(pb.ListDueReviewsRequest(site_id=site.id, horizon_days=horizon))
        return [(r.therapy_plan_id, r.due_date, r.state) for r in answer.due_reviews]

    assert listed() == []  # 24 November 2026: not within 30 days
    assert listed(366) == [(plan.id, date(2027, 6, 1), pb.REVIEW_STATE_NOT_YET)]
    assert jobs.reviews() == 0

    platform.clock.set(dt.datetime(2027, 5, 2, 6, 0, tzinfo=UTC))
    assert listed() == [(plan.id, date(2027, 6, 1), pb.REVIEW_STATE_DUE)]
    assert jobs.reviews() == 1
    platform.clock.advance(dt.timedelta(hours=2))
    assert jobs.reviews() == 0  # the same review date: notified once
    again = SchedulerJobs(scheduler_db, platform.clock, JobSettings())
    platform.clock.advance(dt.timedelta(hours=2))
    assert again.reviews() == 0  # another replica too
    events = review_events(scheduler_db)
    assert [e.dedupe_key for e in events] == [f"OUTCOME_REVIEW_DUE:{plan.id}:2027-06-01"]
    published = publish_request(events[0])  # what the relay sends notify
    assert published.topic == npb.TOPIC_OUTCOME_REVIEW_DUE
    assert published.payload.outcome_review_due.due_date == date(2027, 6, 1)
    assert list(published.subscriber_ids) == []  # the staff who opted in, not the patient

    with pytest.raises(grpc.RpcError) as bad:
        s.RecordReviewDecision(
            pb.RecordReviewDecisionRequest(
                therapy_plan_id=plan.id, decided_on=date(2027, 6, 9), request_id=request_id()
            )
        )
    assert field_violations(bad.value) == ["decision", "reason"]
    with pytest.raises(grpc.RpcError) as future:
        s.RecordReviewDecision(
            pb.RecordReviewDecisionRequest(
                therapy_plan_id=plan.id,
                decision=pb.REVIEW_DECISION_KIND_CONTINUE,
                reason="good response",
                decided_on=date(2027, 6, 9),
                request_id=request_id(),
            )
        )
    assert field_violations(future.value) == ["decided_on"]

    platform.clock.set(dt.datetime(2027, 5, 10, 10, 0, tzinfo=UTC))
    decide = pb.RecordReviewDecisionRequest(
        therapy_plan_id=plan.id,
        decision=pb.REVIEW_DECISION_KIND_CONTINUE,
        reason="grip and MRC stable",
        request_id="review-1",
    )
    answer = s.RecordReviewDecision(decide)
    assert answer.review_decision.decided_on == date(2027, 5, 10)
    assert answer.review_decision.decided_by == "test-operator"
    assert answer.review_decision.patient_id == plan.patient_id
    assert (answer.next_review.due_date, answer.next_review.state) == (
        date(2028, 5, 10),
        pb.REVIEW_STATE_NOT_YET,
    )
    assert s.RecordReviewDecision(decide).review_decision.id == answer.review_decision.id
    assert listed() == []

    s.RecordReviewDecision(
        pb.RecordReviewDecisionRequest(
            therapy_plan_id=plan.id,
            decision=pb.REVIEW_DECISION_KIND_STOP,
            reason="no response",
            request_id=request_id(),
        )
    )
    assert listed(366) == []
    with pytest.raises(grpc.RpcError) as ended:
        s.RecordReviewDecision(
            pb.RecordReviewDecisionRequest(
                therapy_plan_id=plan.id,
                decision=pb.REVIEW_DECISION_KIND_CONTINUE,
                reason="restart",
                request_id=request_id(),
            )
        )
    assert precondition_types(ended.value) == ["REVIEW_SCHEDULE_ENDED"]
    assert error_reason(ended.value) == "REVIEW_SCHEDULE_ENDED"
    with pytest.raises(grpc.RpcError) as unknown:
        s.ListDueReviews(pb.ListDueReviewsRequest(site_id="no-such-site"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_nurse_records_outcomes_at_her_sites_only(platform: Platform) -> None:
    """The nurse's token names one site: she records and lists outcomes under that site's plan;
    the same patient's plan at another site is missing to her, and proposals are not hers."""
    mine_site, _ = site_with_chairs(platform)
    other_site, _ = site_with_chairs(platform)
    mine = patient_plan(platform, mine_site, "MRN-1")
    theirs = platform.scheduler.CreateTherapyPlan(
        pb.CreateTherapyPlanRequest(
            therapy_plan=pb.TherapyPlan(
                patient_id=mine.patient_id,
                site_id=other_site.id,
                indication=pb.INDICATION_MMN,
                route=pb.ROUTE_IV,
                product_id=mine.product_id,
                dose_basis=pb.DOSE_BASIS_G_PER_KG,
                maintenance_dose="1",
                interval_days=28,
                start_date=date(2026, 12, 1),
            ),
            request_id=request_id(),
        )
    ).therapy_plan
    token = platform.issuer.issuer.user_token(["nurse"], "org-1", sites=[mine_site.id])
    nurse = scheduler_pb2_grpc.SchedulerServiceStub(
        platform.issuer.channel(platform.scheduler_address, token)
    )
    day = dt.date(2026, 11, 20)
    made = nurse.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome=outcome(mine.patient_id, mine.id, day, value="28"), request_id=request_id()
        )
    ).outcome
    record(platform, outcome(mine.patient_id, theirs.id, day, value="29"))  # by the operator
    with pytest.raises(grpc.RpcError) as elsewhere:
        nurse.RecordOutcome(
            pb.RecordOutcomeRequest(
                outcome=outcome(mine.patient_id, theirs.id, day, value="28"),
                request_id=request_id(),
            )
        )
    assert elsewhere.value.code() == grpc.StatusCode.NOT_FOUND
    listed = nurse.ListOutcomes(pb.ListOutcomesRequest(patient_id=mine.patient_id)).outcomes
    assert [o.id for o in listed] == [made.id]  # not the record under the other site's plan
    with pytest.raises(grpc.RpcError) as not_hers:
        nurse.ProposeRegimenAdjustment(pb.ProposeRegimenAdjustmentRequest(therapy_plan_id=mine.id))
    assert not_hers.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_route_switch_brings_the_review_forward(platform: Platform) -> None:
    """Start 1 December 2026, IV; continue decided on 5 January 2027 → next review 5 January
    2028. The plan moves to SC (version 2) and its first SC dose is given on 2 February 2027:
    + 6 months = 2 August 2027, earlier, so that is the review date."""
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1")
    s = platform.scheduler
    give(platform, plan, chairs[0], dt.date(2026, 12, 1))
    platform.clock.set(dt.datetime(2027, 1, 5, 10, 0, tzinfo=UTC))
    s.RecordReviewDecision(
        pb.RecordReviewDecisionRequest(
            therapy_plan_id=plan.id,
            decision=pb.REVIEW_DECISION_KIND_CONTINUE,
            reason="responding",
            request_id=request_id(),
        )
    )

    def due() -> Date:
        listed = s.ListDueReviews(pb.ListDueReviewsRequest(site_id=site.id, horizon_days=366))
        return listed.due_reviews[0].due_date

    assert due() == date(2028, 1, 5)
    current = s.GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan.id)).therapy_plan
    switched = s.UpdateTherapyPlan(
        pb.UpdateTherapyPlanRequest(
            therapy_plan=pb.TherapyPlan(id=plan.id, route=pb.ROUTE_SC, etag=current.etag),
            update_mask=FieldMask(paths=["route"]),
            reason="moving to home SC",
            request_id=request_id(),
        )
    ).therapy_plan
    assert switched.version == 2
    assert due() == date(2028, 1, 5)  # no dose by the new route yet
    give(platform, switched, chairs[0], dt.date(2027, 2, 2))
    assert due() == date(2027, 8, 2)
