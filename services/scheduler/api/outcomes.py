"""Outcome records, reviews and regimen proposals: protobuf ⇄ domain values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import decimal_str, from_date, from_datetime, parse_date, parse_decimal
from services.common.errors import Violations
from services.scheduler.domain.plans import MAX_G_PER_KG_ONE_DAY
from services.scheduler.domain.regimens.cycles import Measure
from services.scheduler.domain.regimens.outcomes import Hand, OutcomeEntry, Scale
from services.scheduler.domain.regimens.proposals import (
    DEFAULT_MAX_G_PER_KG_DAY,
    Proposal,
    ProposalKind,
)
from services.scheduler.domain.regimens.reviews import Decision, ReviewState
from services.scheduler.domain.regimens.whole_vials import grams_text
from services.scheduler.usecases.outcomes import Accepted, Analysis, DueReview, ProposalInputs

MEASURE_IN = {
    pb.OUTCOME_MEASURE_GRIP_STRENGTH: Measure.GRIP_STRENGTH_KG,
    pb.OUTCOME_MEASURE_MRC_SUM_SCORE: Measure.MRC_SUM_SCORE,
    pb.OUTCOME_MEASURE_DISABILITY_SCORE: Measure.DISABILITY_SCORE,
    pb.OUTCOME_MEASURE_WEARING_OFF: Measure.WEARING_OFF,
}
MEASURE_OUT = {v: k for k, v in MEASURE_IN.items()}
HAND_IN = {pb.HAND_LEFT: Hand.LEFT, pb.HAND_RIGHT: Hand.RIGHT}
HAND_OUT = {v: k for k, v in HAND_IN.items()}
SCALE_IN = {
    pb.DISABILITY_SCALE_INCAT: Scale.INCAT,
    pb.DISABILITY_SCALE_ONLS: Scale.ONLS,
    pb.DISABILITY_SCALE_I_RODS: Scale.I_RODS,
}
SCALE_OUT = {v: k for k, v in SCALE_IN.items()}
DECISION_IN = {
    pb.REVIEW_DECISION_KIND_CONTINUE: Decision.CONTINUE,
    pb.REVIEW_DECISION_KIND_ADJUST: Decision.ADJUST,
    pb.REVIEW_DECISION_KIND_TRIAL_REDUCTION: Decision.TRIAL_REDUCTION,
    pb.REVIEW_DECISION_KIND_STOP: Decision.STOP,
}
DECISION_OUT = {v: k for k, v in DECISION_IN.items()}
STATE_OUT = {
    ReviewState.NOT_YET: pb.REVIEW_STATE_NOT_YET,
    ReviewState.DUE: pb.REVIEW_STATE_DUE,
    ReviewState.OVERDUE: pb.REVIEW_STATE_OVERDUE,
    ReviewState.ENDED: pb.REVIEW_STATE_ENDED,
}
KIND_IN = {
    pb.PROPOSAL_KIND_SHORTER_INTERVAL: ProposalKind.SHORTER_INTERVAL,
    pb.PROPOSAL_KIND_REDUCTION_TRIAL: ProposalKind.REDUCTION_TRIAL,
    pb.PROPOSAL_KIND_SPLIT_OVER_DAYS: ProposalKind.SPLIT_OVER_DAYS,
}
KIND_OUT = {v: k for k, v in KIND_IN.items()}


def outcome_in(m: pb.OutcomeRecord, v: Violations) -> OutcomeEntry:
    p = "outcome"
    for name in ("patient_id", "therapy_plan_id"):
        if not getattr(m, name):
            v.add(f"{p}.{name}", "is required")
    day = parse_date(m.recorded_on, f"{p}.recorded_on", v)
    measure = MEASURE_IN.get(m.measure)
    if measure is None:
        v.add(f"{p}.measure", "is required")
    value = None
    if m.value:
        value = parse_decimal(m.value, f"{p}.value", v)
    return OutcomeEntry(
        id="",
        patient_id=m.patient_id,
        plan_id=m.therapy_plan_id,
        recorded_on=day or dt.date.min,
        measure=measure or Measure.GRIP_STRENGTH_KG,
        value=value,
        hand=HAND_IN.get(m.hand),
        scale=SCALE_IN.get(m.scale),
        wearing_off_none=m.wearing_off_none,
        appointment_id=m.appointment_id,
        note=m.note,
    )


def outcome_out(e: OutcomeEntry, created: dt.datetime) -> pb.OutcomeRecord:
    return pb.OutcomeRecord(
        id=e.id,
        patient_id=e.patient_id,
        therapy_plan_id=e.plan_id,
        appointment_id=e.appointment_id,
        recorded_on=from_date(e.recorded_on),
        measure=MEASURE_OUT[e.measure],
        value=decimal_str(e.value),
        hand=HAND_OUT.get(e.hand, pb.HAND_UNSPECIFIED) if e.hand else pb.HAND_UNSPECIFIED,
        scale=SCALE_OUT[e.scale] if e.scale else pb.DISABILITY_SCALE_UNSPECIFIED,
        wearing_off_none=e.wearing_off_none,
        note=e.note,
        recorded_by=e.recorded_by,
        create_time=from_datetime(created),
    )


def due_review_out(r: DueReview) -> pb.DueReview:
    return pb.DueReview(
        therapy_plan_id=r.plan_id,
        patient_id=r.patient_id,
        site_id=r.site_id,
        due_date=from_date(r.due),
        state=STATE_OUT[r.state],
        explanation=list(r.explanation),
    )


def decision_out(
    decision_id: str,
    plan_id: str,
    patient_id: str,
    plan_version: int,
    decided_on: dt.date,
    decision: str,
    reason: str,
    decided_by: str,
    created: dt.datetime,
) -> pb.ReviewDecision:
    return pb.ReviewDecision(
        id=decision_id,
        therapy_plan_id=plan_id,
        patient_id=patient_id,
        plan_version=plan_version,
        decided_on=from_date(decided_on),
        decision=DECISION_OUT[Decision(decision)],
        reason=reason,
        decided_by=decided_by,
        create_time=from_datetime(created),
    )


def proposal_inputs(
    request: pb.ProposeRegimenAdjustmentRequest | pb.AcceptRegimenProposalRequest,
    v: Violations,
) -> ProposalInputs:
    """The inputs both proposing and accepting read, so an accept re-derives what was offered."""
    as_of, measure, hand, scale = request.as_of, request.measure, request.hand, request.scale
    max_g_per_kg_day = request.max_g_per_kg_day
    day = parse_date(as_of, "as_of", v, required=False)
    chosen = Measure.GRIP_STRENGTH_KG
    if measure != pb.OUTCOME_MEASURE_UNSPECIFIED:
        chosen = MEASURE_IN[measure]
        if chosen is Measure.WEARING_OFF:
            v.add("measure", "must be a measured value (reported days are always read)")
    picked_scale = SCALE_IN.get(scale)
    if chosen is Measure.DISABILITY_SCORE and picked_scale is None:
        v.add("scale", "is required for a disability score")
    most = DEFAULT_MAX_G_PER_KG_DAY
    if max_g_per_kg_day:
        given = parse_decimal(max_g_per_kg_day, "max_g_per_kg_day", v)
        if given is not None and not 0 < given <= MAX_G_PER_KG_ONE_DAY:
            v.add("max_g_per_kg_day", f"must be above 0 and at most {MAX_G_PER_KG_ONE_DAY} g/kg")
        elif given is not None:
            most = given
    return ProposalInputs(day, chosen, HAND_IN.get(hand), picked_scale, most)


def proposal_out(plan_id: str, version: int, p: Proposal) -> pb.RegimenProposal:
    return pb.RegimenProposal(
        kind=KIND_OUT[p.kind],
        therapy_plan_id=plan_id,
        plan_version=version,
        interval_days=p.interval_days,
        grams=decimal_str(p.cycle_grams),
        g_per_kg=grams_text(p.g_per_kg),
        grams_per_week_before=grams_text(p.grams_per_week_before),
        grams_per_week_after=grams_text(p.grams_per_week_after),
        flags=list(p.flags),
        rules_applied=list(p.rules_applied),
        rationale=list(p.rationale),
        expected_onset_day=p.expected_onset_day or 0,
        lead_days=p.lead_days or 0,
        day_grams=[decimal_str(g) for g in p.day_grams],
    )


def analysis_out(a: Analysis) -> pb.ProposeRegimenAdjustmentResponse:
    out = pb.ProposeRegimenAdjustmentResponse(
        patient_id=a.plan.patient_id,
        expectation=a.expected.expectation.value,
        cycles=[
            pb.CycleFinding(
                start_date=from_date(o.cycle.start),
                end_date=from_date(o.cycle.end),
                verdict=o.verdict.value,
                onset_day=o.onset_day or 0,
                explanation=o.explanation,
            )
            for o in a.cycles
        ],
    )
    if isinstance(a.result, Proposal):
        out.proposal.CopyFrom(proposal_out(a.plan.id, a.plan.version, a.result))
    else:
        out.no_proposal_code = a.result.code
        out.no_proposal_explanation = a.result.explanation
    return out


def accepted_in(m: pb.RegimenProposal, v: Violations) -> Accepted:
    p = "proposal"
    if not m.therapy_plan_id:
        v.add(f"{p}.therapy_plan_id", "is required")
    kind = KIND_IN.get(m.kind)
    if kind is None:
        v.add(f"{p}.kind", "is required")
    if m.plan_version < 1:
        v.add(f"{p}.plan_version", "is required")
    if m.interval_days < 1:
        v.add(f"{p}.interval_days", "is required")
    grams = parse_decimal(m.grams, f"{p}.grams", v)
    return Accepted(
        kind or ProposalKind.SHORTER_INTERVAL,
        m.therapy_plan_id,
        m.plan_version,
        m.interval_days,
        grams if grams is not None else Decimal(0),
    )
