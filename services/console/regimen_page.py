"""The prescriber's regimen work at the console, from the patient page: what the outcomes say
about a plan (each cycle's wearing-off verdict, the expectation over the last cycles) and the
proposal ProposeRegimenAdjustment makes (a shorter interval, a reduction trial, a split over
consecutive days) with its rationale; accepting it with a reason (the next plan version); and
recording an outcome review's decision. Nothing here decides: the scheduler works the proposal
out and checks it again on accepting (docs/regimens.md); the page shows it and asks."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import from_date, to_date
from services.console import reads
from services.console.context import check_csrf, console

MEASURES = {
    "grip": ("grip strength", pb.OUTCOME_MEASURE_GRIP_STRENGTH),
    "mrc": ("MRC sum score", pb.OUTCOME_MEASURE_MRC_SUM_SCORE),
}
HANDS = {"right": pb.HAND_RIGHT, "left": pb.HAND_LEFT}
KINDS = {
    pb.PROPOSAL_KIND_SHORTER_INTERVAL: "Shorter interval",
    pb.PROPOSAL_KIND_REDUCTION_TRIAL: "Dose reduction trial",
    pb.PROPOSAL_KIND_SPLIT_OVER_DAYS: "Split over consecutive days",
}
DECISIONS = {
    "continue": ("Continue", pb.REVIEW_DECISION_KIND_CONTINUE),
    "adjust": ("Adjust", pb.REVIEW_DECISION_KIND_ADJUST),
    "trial_reduction": ("Trial a reduction", pb.REVIEW_DECISION_KIND_TRIAL_REDUCTION),
    "stop": ("Stop", pb.REVIEW_DECISION_KIND_STOP),
}


@dataclass(frozen=True)
class Asked:
    """The inputs a proposal is asked (and accepted) with."""

    as_of: dt.date
    measure: str
    hand: str

    def request(self) -> dict[str, Any]:
        return {
            "as_of": from_date(self.as_of),
            "measure": MEASURES[self.measure][1],
            "hand": HANDS[self.hand] if self.measure == "grip" else pb.HAND_UNSPECIFIED,
        }


def _asked(values: Any, today: dt.date) -> Asked:
    measure = values.get("measure") or "grip"
    hand = values.get("hand") or "right"
    if measure not in MEASURES or hand not in HANDS:
        raise HTTPException(400, "Unknown measure or hand.")
    raw = values.get("as_of") or ""
    try:
        as_of = dt.date.fromisoformat(raw) if raw else today
    except ValueError:
        raise HTTPException(400, f"Not a date: {raw!r} (YYYY-MM-DD).") from None
    return Asked(as_of, measure, hand)


def _plan(calls: Any, request: Request) -> pb.TherapyPlan:
    """The plan the path names, which must be the path's patient's (else 404)."""
    plan: pb.TherapyPlan = calls.scheduler.GetTherapyPlan(
        pb.GetTherapyPlanRequest(id=request.path_params["plan_id"])
    ).therapy_plan
    if plan.patient_id != request.path_params["patient_id"]:
        raise HTTPException(404, "No such plan for this patient.")
    return plan


def proposal(request: Request) -> Response:
    c = console(request)
    user = c.user(request, "patients", permission="scheduler.regimens.propose")
    calls = c.backend.as_user(user.token)
    plan = _plan(calls, request)
    asked = _asked(request.query_params, c.clock.now().date())
    answer = calls.scheduler.ProposeRegimenAdjustment(
        pb.ProposeRegimenAdjustmentRequest(therapy_plan_id=plan.id, **asked.request())
    )
    names = reads.patient_names(calls, [plan.patient_id])
    p = answer.proposal if answer.HasField("proposal") else None
    return c.render(
        request,
        "regimen_proposal.html",
        plan=plan,
        patient_id=plan.patient_id,
        patient=names.get(plan.patient_id, plan.patient_id),
        asked=asked,
        measures={k: v[0] for k, v in MEASURES.items()},
        hands=list(HANDS),
        answer=answer,
        cycles=[
            {
                "start": to_date(x.start_date),
                "end": to_date(x.end_date),
                "verdict": x.verdict.replace("_", " ").lower(),
                "onset_day": x.onset_day or "",
                "explanation": x.explanation,
            }
            for x in answer.cycles
        ],
        proposal=p,
        kind=KINDS.get(p.kind, "") if p else "",
        sealed=base64.urlsafe_b64encode(p.SerializeToString()).decode() if p else "",
        may_accept="scheduler.regimens.accept" in user.permissions(c.roles),
        request_id=str(uuid.uuid4()),
    )


async def accept(request: Request) -> Response:
    c = console(request)
    user = c.user(request, "patients", permission="scheduler.regimens.accept")
    values = await check_csrf(request)
    calls = c.backend.as_user(user.token)
    plan = await run_in_threadpool(_plan, calls, request)
    asked = _asked(values, c.clock.now().date())
    try:
        shown = pb.RegimenProposal.FromString(
            base64.urlsafe_b64decode(values.get("proposal", "").encode())
        )
    except (DecodeError, ValueError):
        raise HTTPException(400, "The proposal sent back is not readable.") from None
    if shown.therapy_plan_id != plan.id:
        raise HTTPException(400, "The proposal is for another plan.")
    reason = values.get("reason", "").strip()
    if not reason:
        raise HTTPException(400, "A reason is required: it is kept with the new plan version.")
    accepted = await run_in_threadpool(
        calls.scheduler.AcceptRegimenProposal,
        pb.AcceptRegimenProposalRequest(
            proposal=shown,
            reason=reason[:1000],
            request_id=f"console-{values.get('request_id') or uuid.uuid4()}"[:128],
            **asked.request(),
        ),
    )
    version = accepted.therapy_plan.version
    return RedirectResponse(
        f"/patients/{plan.patient_id}?accepted={plan.id}:{version}", status_code=303
    )


async def review(request: Request) -> Response:
    c = console(request)
    user = c.user(request, "patients", permission="scheduler.reviews.write")
    values = await check_csrf(request)
    calls = c.backend.as_user(user.token)
    plan = await run_in_threadpool(_plan, calls, request)
    decision = DECISIONS.get(values.get("decision", ""))
    reason = values.get("reason", "").strip()
    if decision is None or not reason:
        raise HTTPException(400, "Choose a decision and give its reason.")
    await run_in_threadpool(
        calls.scheduler.RecordReviewDecision,
        pb.RecordReviewDecisionRequest(
            therapy_plan_id=plan.id,
            decision=decision[1],
            reason=reason[:1000],
            request_id=f"console-{values.get('request_id') or uuid.uuid4()}"[:128],
        ),
    )
    return RedirectResponse(f"/patients/{plan.patient_id}?reviewed={plan.id}", status_code=303)


def routes() -> list[Route]:
    base = "/patients/{patient_id}/plans/{plan_id}"
    return [
        Route(f"{base}/proposal", proposal),
        Route(f"{base}/proposal/accept", accept, methods=["POST"]),
        Route(f"{base}/review", review, methods=["POST"]),
    ]
