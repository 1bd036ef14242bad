"""Outcome records, outcome reviews and regimen proposals (docs/regimens.md): the pure rules of
domain/regimens/ applied to stored state.

- RecordOutcome / ListOutcomes: a patient's dated measures under a plan, scoped by the plan's
  site, recorded_by from the caller's identity.
- Reviews: the next review date is replayed from the therapy's start (the plan's first version),
  its decisions and its route switches (domain/regimens/reviews.py); ListDueReviews lists a
  site's, RecordReviewDecision appends one.
- Proposals: the plan's fulfilled appointments are its administrations, its outcome records the
  series; the wearing-off and proposal rules (wearing_off.py, proposals.py) decide. Accepting a
  proposal works it out again in the write transaction and, when it is still the one the
  clinician saw, makes the plan's next version through Records.update_plan.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PreconditionViolation,
)
from services.common.etag import etag_for
from services.common.identity import current_caller
from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.common.reasons import Rule
from services.scheduler.domain.appointments import AppointmentStatus
from services.scheduler.domain.dosing import ProductSpec, calculate_dose
from services.scheduler.domain.due import CourseKind, split_days
from services.scheduler.domain.plans import DoseBasis, PlanStatus, Route, TherapyPlan
from services.scheduler.domain.regimens.cycles import (
    Administration,
    Measure,
    build_cycles,
    current_cycles,
)
from services.scheduler.domain.regimens.outcomes import (
    Hand,
    OutcomeEntry,
    Scale,
    series,
    validate_outcome,
)
from services.scheduler.domain.regimens.proposals import (
    DEFAULT_MAX_G_PER_KG_DAY,
    NoProposal,
    Proposal,
    ProposalKind,
    Regimen,
    propose,
    split_over_days,
)
from services.scheduler.domain.regimens.reviews import (
    DEFAULT_REVIEW_POLICIES,
    Decision,
    ReviewDecision,
    ReviewPolicies,
    ReviewSchedule,
    ReviewState,
    RouteSwitch,
    review_due,
    review_state,
)
from services.scheduler.domain.regimens.wearing_off import (
    CycleOnset,
    Expectation,
    ExpectedOnset,
    cycle_onset,
    expected_onset,
)
from services.scheduler.domain.regimens.whole_vials import round_to_vials
from services.scheduler.store import outcomes as store
from services.scheduler.store import repository as repo
from services.scheduler.store.codec import plan_of
from services.scheduler.store.models import (
    AppointmentRow,
    PlanRow,
    PlanVersionRow,
    ReviewDecisionRow,
    SiteRow,
)
from services.scheduler.usecases.records import Records, Stored

DOSE_PLACES = Decimal("0.001")  # the plan's maintenance_dose carries 3 decimals


@dataclasses.dataclass(frozen=True)
class DueReview:
    plan_id: str
    patient_id: str
    site_id: str
    due: dt.date | None
    state: ReviewState
    explanation: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ProposalInputs:
    """What a proposal is asked with; the same inputs give the same proposal."""

    as_of: dt.date | None = None
    measure: Measure = Measure.GRIP_STRENGTH_KG
    hand: Hand | None = None
    scale: Scale | None = None
    # the most one day may carry before a split over days is proposed
    max_g_per_kg_day: Decimal = DEFAULT_MAX_G_PER_KG_DAY


@dataclasses.dataclass(frozen=True)
class Analysis:
    plan: TherapyPlan
    as_of: dt.date
    cycles: tuple[CycleOnset, ...]
    expected: ExpectedOnset
    result: Proposal | NoProposal
    regimen: Regimen | None  # None when nothing was proposed before the dose was needed


@dataclasses.dataclass(frozen=True)
class Accepted:
    """The proposal the clinician saw, as it comes back with AcceptRegimenProposal."""

    kind: ProposalKind
    plan_id: str
    plan_version: int
    interval_days: int
    grams: Decimal


def _refuse(rule: Rule, subject: str, text: str) -> FailedPrecondition:
    return FailedPrecondition([PreconditionViolation(rule, subject, text)])


class Outcomes:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        records: Records,
        product_spec: Callable[[str], ProductSpec | None],
        review_policies: ReviewPolicies = DEFAULT_REVIEW_POLICIES,
    ) -> None:
        self.review_policies = review_policies
        self.db = db
        self.clock = clock
        self.records = records
        self._product_spec = product_spec

    def _site_today(self, session: Session, site_id: str) -> dt.date:
        site = repo.site_from_row(repo.site_row(session, site_id))
        return site.local_today(self.clock.now())

    # --- outcome records -----------------------------------------------------------------------

    def record_outcome(
        self, session: Session, entry: OutcomeEntry
    ) -> tuple[OutcomeEntry, dt.datetime]:
        # the record's own fields first (one day of slack: a clinic west of UTC records
        # "today" while UTC is already tomorrow), then what it names
        validate_outcome(entry, self.clock.now().date() + dt.timedelta(days=1)).raise_if_any()
        patient = repo.patient_row(session, entry.patient_id)
        plan = repo.plan_row(session, entry.plan_id)
        v = []
        if plan.patient_id != patient.id:
            v.append(FieldViolation("outcome.therapy_plan_id", "is not a plan of this patient"))
        if entry.appointment_id:
            appointment = session.get(AppointmentRow, entry.appointment_id)
            if appointment is None or appointment.patient_id != patient.id:
                v.append(
                    FieldViolation(
                        "outcome.appointment_id", "is not an appointment of this patient"
                    )
                )
        if entry.recorded_on < patient.birth_date:
            v.append(FieldViolation("outcome.recorded_on", "is before the patient's birth date"))
        if v:
            raise InvalidArgument(v)
        entry = dataclasses.replace(entry, id=new_id(), recorded_by=current_caller().subject)
        row = store.insert_outcome(session, entry, self.clock.now())
        return store.outcome_from_row(row), row.created_at

    def list_outcomes(
        self, patient_id: str, plan_id: str, page: PageRequest
    ) -> list[tuple[OutcomeEntry, dt.datetime]]:
        with self.db.read() as session:
            repo.patient_row(session, patient_id)
            if plan_id:
                plan = repo.plan_row(session, plan_id)
                if plan.patient_id != patient_id:
                    raise InvalidArgument(
                        [FieldViolation("therapy_plan_id", "is not a plan of this patient")]
                    )
            rows = store.list_outcomes(session, patient_id, plan_id, page)
            return [(store.outcome_from_row(r), r.created_at) for r in rows]

    # --- reviews -------------------------------------------------------------------------------

    def due_reviews(self, site_id: str, horizon_days: int) -> tuple[dt.date, list[DueReview]]:
        """The reviews of the site's active plans due up to today + horizon (overdue ones
        included), by due date."""
        with self.db.read() as session:
            today = self._site_today(session, site_id)
            plans = list(
                session.scalars(
                    select(PlanRow).where(
                        PlanRow.site_id == site_id, PlanRow.status == PlanStatus.ACTIVE.value
                    )
                )
            )
            schedules = review_schedules(session, plans, self.review_policies)
        until = today + dt.timedelta(days=horizon_days)
        listed = []
        for plan in plans:
            schedule = schedules.get(plan.id)
            if schedule is None or schedule.due is None or schedule.due > until:
                continue
            listed.append(_due_review(plan, schedule, today))
        listed.sort(key=lambda r: (r.due or dt.date.max, r.plan_id))
        return today, listed

    def record_decision(
        self,
        session: Session,
        plan_id: str,
        decision: Decision,
        reason: str,
        decided_on: dt.date | None,
    ) -> tuple[ReviewDecisionRow, DueReview]:
        plan = repo.plan_row(session, plan_id, for_update=True)
        today = self._site_today(session, plan.site_id)
        day = decided_on or today
        schedule = review_schedules(session, [plan], self.review_policies)[plan.id]
        v = []
        if not reason.strip():
            v.append(FieldViolation("reason", "is required"))
        if day > today:
            v.append(FieldViolation("decided_on", f"{day} is in the future"))
        start = dt.date.fromisoformat(
            str(repo.plan_version(session, plan.id, 1).spec["start_date"])
        )
        if day < start:
            v.append(FieldViolation("decided_on", f"{day} is before the therapy's start {start}"))
        if v:
            raise InvalidArgument(v)
        if schedule.due is None:
            raise _refuse(
                "REVIEW_SCHEDULE_ENDED",
                f"plans/{plan_id}",
                "a review decided to stop this plan's therapy: a restart is a new plan",
            )
        row = store.insert_decision(
            session,
            new_id(),
            plan.id,
            plan.patient_id,
            plan.current_version,
            day,
            decision,
            reason.strip(),
            current_caller().subject,
            self.clock.now(),
        )
        after = review_schedules(session, [plan], self.review_policies)[plan.id]
        return row, _due_review(plan, after, today)

    # --- proposals -----------------------------------------------------------------------------

    def propose(self, plan_id: str, inputs: ProposalInputs) -> Analysis:
        with self.db.read() as session:
            return self.analyse(session, plan_id, inputs)

    def analyse(self, session: Session, plan_id: str, inputs: ProposalInputs) -> Analysis:
        row = repo.plan_row(session, plan_id)
        plan = plan_of(row, repo.plan_version(session, plan_id, row.current_version))
        as_of = inputs.as_of or self._site_today(session, row.site_id)
        entries = [e for e in store.plan_outcomes(session, plan_id) if e.recorded_on <= as_of]
        chosen = series(entries, inputs.measure, inputs.hand, inputs.scale)
        given = session.execute(
            select(
                AppointmentRow.local_date, AppointmentRow.plan_version, AppointmentRow.course_day
            ).where(
                AppointmentRow.plan_id == plan_id,
                AppointmentRow.status == AppointmentStatus.FULFILLED.value,
                AppointmentRow.local_date <= as_of,
            )
        )
        administrations = [
            Administration(day, version, course_day or 1) for day, version, course_day in given
        ]
        cycles = current_cycles(build_cycles(administrations), plan.version)
        onsets = tuple(
            cycle_onset(
                c,
                chosen.records,
                plan.interval_days,
                chosen.measure,
                lower_is_better=chosen.lower_is_better,
            )
            for c in cycles
        )
        expected = expected_onset(onsets)
        result: Proposal | NoProposal
        regimen = None
        split: Proposal | NoProposal = NoProposal("inconclusive", expected.explanation)
        if expected.expectation is not Expectation.INCONCLUSIVE or plan.route is Route.IV:
            try:
                regimen = self._regimen(session, plan, as_of)
            except FailedPrecondition:
                if expected.expectation is not Expectation.INCONCLUSIVE:
                    raise
        if regimen is not None and plan.route is Route.IV:
            # a day above the per-day maximum comes first, whatever the outcomes say: the
            # other rules keep each day's dose (docs/clinical-rules.md#split-over-days)
            split = split_over_days(regimen, inputs.max_g_per_kg_day)
        if isinstance(split, Proposal):
            result = split
        elif regimen is None or expected.expectation is Expectation.INCONCLUSIVE:
            result = NoProposal("inconclusive", expected.explanation)
        else:
            result = propose(regimen, expected)
        if isinstance(result, Proposal):
            lead = f"Series read: {chosen.label}, plan version {plan.version}, as of {as_of}."
            result = dataclasses.replace(result, rationale=(lead, *result.rationale))
        return Analysis(plan, as_of, onsets, expected, result, regimen)

    def _regimen(self, session: Session, plan: TherapyPlan, as_of: dt.date) -> Regimen:
        """The current regimen as the dose calculation gives it on ``as_of``."""
        patient = repo.patient_from_row(repo.patient_row(session, plan.patient_id))
        measured = repo.latest_measurement(session, plan.patient_id, as_of)
        if measured is None:
            raise _refuse(
                "MEASUREMENT_ON_OR_BEFORE_DOSING_DATE",
                f"patients/{plan.patient_id}",
                f"no body measurement on or before {as_of.isoformat()}: record the patient's "
                "weight and height first",
            )
        product = self._product_spec(plan.product_id)
        if product is None:
            raise _refuse(
                "PRODUCT_EXISTS",
                f"products/{plan.product_id}",
                "the plan's product is not in the inventory catalogue",
            )
        dose = calculate_dose(
            plan,
            patient,
            repo.measurement_from_row(measured),
            product,
            as_of,
            CourseKind.MAINTENANCE,
        )
        # a dose split over consecutive days: each day's dose, n times (the plan's
        # maintenance dose is one day's)
        days = split_days(plan.infusion_days) if plan.route is Route.IV else 1
        return Regimen(
            interval_days=plan.interval_days,
            day_grams=tuple(d.vials.dose_grams for d in dose.days) * days,
            dosing_weight_kg=dose.weight.dosing_kg,
            vial_grams=tuple(grams for grams, _ in product.presentations),
            g_per_kg=(
                plan.maintenance_dose * days if plan.dose_basis is DoseBasis.G_PER_KG else None
            ),
            rounding_rule=plan.rounding_rule,
            rounding_band_percent=plan.rounding_band_percent,
        )

    def accept(
        self,
        session: Session,
        seen: Accepted,
        inputs: ProposalInputs,
        reason: str,
        review_decision_id: str,
    ) -> Stored[TherapyPlan]:
        row = repo.plan_row(session, seen.plan_id, for_update=True)
        subject = f"plans/{seen.plan_id}"
        if row.status != PlanStatus.ACTIVE.value:
            raise _refuse("PLAN_ACTIVE", subject, "the plan is paused or stopped")
        cited = ""
        if review_decision_id:
            decision = store.decision_row(session, review_decision_id)
            if decision is None or decision.plan_id != seen.plan_id:
                raise InvalidArgument(
                    [FieldViolation("review_decision_id", "is not a review decision of this plan")]
                )
            cited = (
                f" (review decision {decision.id}: {decision.decision.lower()} on "
                f"{decision.decided_on}, {decision.reason})"
            )
        analysis = self.analyse(session, seen.plan_id, inputs)
        proposal = analysis.result
        if not isinstance(proposal, Proposal):
            raise _refuse("PROPOSAL_CURRENT", subject, f"nothing to accept: {proposal.explanation}")
        now_seen = Accepted(
            ProposalKind(proposal.kind),
            seen.plan_id,
            analysis.plan.version,
            proposal.interval_days,
            proposal.cycle_grams,
        )
        if now_seen != seen:
            raise _refuse(
                "PROPOSAL_CURRENT",
                subject,
                f"the proposal is now {proposal.kind.value.lower()} every "
                f"{proposal.interval_days} days, {proposal.cycle_grams} g on version "
                f"{analysis.plan.version}: ask for it again",
            )
        assert analysis.regimen is not None  # a proposal is made from the regimen
        change = _applied(analysis.plan, proposal, analysis.regimen)
        text = (
            f"accepted proposal {proposal.kind.value.lower()}: every {proposal.interval_days} "
            f"days, {proposal.cycle_grams} g a cycle; {reason.strip()}{cited}"
        )[:1000]
        # the row is locked and the proposal was worked out on its current version just now
        return self.records.update_plan(
            session, seen.plan_id, etag_for(row.revision), lambda _: change, text
        )


def review_schedules(
    session: Session, plans: Sequence[PlanRow], policies: ReviewPolicies = DEFAULT_REVIEW_POLICIES
) -> dict[str, ReviewSchedule]:
    """Each plan's review schedule: its first version's start, its decisions and the first
    dose by each new route, at its organisation's review months."""
    ids = [p.id for p in plans]
    decisions = store.decisions_for(session, ids)
    versions: dict[str, list[PlanVersionRow]] = {}
    if ids:
        for v in session.scalars(
            select(PlanVersionRow)
            .where(PlanVersionRow.plan_id.in_(ids))
            .order_by(PlanVersionRow.plan_id, PlanVersionRow.version)
        ):
            versions.setdefault(v.plan_id, []).append(v)
    switches: dict[str, list[int]] = {}  # plan → the versions that changed the route
    for plan_id, specs in versions.items():
        for before, after in itertools.pairwise(specs):
            if after.spec.get("route") != before.spec.get("route"):
                switches.setdefault(plan_id, []).append(after.version)
    firsts = _first_doses_by_version(session, sorted(switches))
    organisations: dict[str, str] = {}
    if policies.by_organisation and plans:
        organisations = dict(
            session.execute(
                select(SiteRow.id, SiteRow.organisation_id).where(
                    SiteRow.id.in_(sorted({p.site_id for p in plans}))
                )
            ).tuples()
        )
    found: dict[str, ReviewSchedule] = {}
    for plan in plans:
        specs = versions.get(plan.id, [])
        if not specs:
            continue
        start = dt.date.fromisoformat(str(specs[0].spec["start_date"]))
        events: list[ReviewDecision | RouteSwitch] = [
            ReviewDecision(d.decided_on, Decision(d.decision)) for d in decisions.get(plan.id, [])
        ]
        changed = switches.get(plan.id, [])
        for index, first in enumerate(changed):
            until = changed[index + 1] if index + 1 < len(changed) else None
            # the first dose given under this route, before the route changed again
            given = [
                day
                for version, day in firsts.get(plan.id, [])
                if version >= first and (until is None or version < until)
            ]
            if given:
                events.append(RouteSwitch(min(given)))
        months = policies.of(organisations.get(plan.site_id, ""))
        found[plan.id] = review_due(start, events, months)
    return found


def _first_doses_by_version(
    session: Session, plan_ids: Sequence[str]
) -> dict[str, list[tuple[int, dt.date]]]:
    found: dict[str, list[tuple[int, dt.date]]] = {}
    if not plan_ids:
        return found
    rows = session.execute(
        select(AppointmentRow.plan_id, AppointmentRow.plan_version, AppointmentRow.local_date)
        .where(
            AppointmentRow.plan_id.in_(sorted(set(plan_ids))),
            AppointmentRow.status == AppointmentStatus.FULFILLED.value,
        )
        .order_by(AppointmentRow.local_date)
    )
    for plan_id, version, day in rows:
        found.setdefault(plan_id, []).append((version, day))
    return found


def _applied(plan: TherapyPlan, proposal: Proposal, regimen: Regimen) -> TherapyPlan:
    """The plan with the proposal in it: a shorter interval, or a new dose for each day (the
    reduced one, or the cycle's dose over more days, then on days 0, 1, … of each interval).
    A g/kg plan keeps its basis when each day's g/kg (3 places) rounds to the proposed grams;
    otherwise (the "largest whole-vial amount below" case) it takes them as a fixed dose."""
    if proposal.kind is ProposalKind.SHORTER_INTERVAL:
        return dataclasses.replace(plan, interval_days=proposal.interval_days)
    days = len(proposal.day_grams)
    grams = proposal.day_grams[0]  # every day of a cycle is rounded alike
    changed = dataclasses.replace(
        plan,
        infusion_days=tuple(range(days)) if days > 1 else plan.infusion_days,
        dose_basis=DoseBasis.FIXED_GRAMS,
        maintenance_dose=grams,
    )
    if plan.dose_basis is DoseBasis.G_PER_KG:
        g_per_kg = (proposal.g_per_kg / days).quantize(DOSE_PLACES, ROUND_HALF_UP)
        again = round_to_vials(
            g_per_kg * regimen.dosing_weight_kg,
            regimen.vial_grams,
            plan.rounding_rule,
            plan.rounding_band_percent,
        )
        if again.dose_grams == grams:
            return dataclasses.replace(
                changed, dose_basis=DoseBasis.G_PER_KG, maintenance_dose=g_per_kg
            )
    return changed


def _due_review(plan: PlanRow, schedule: ReviewSchedule, today: dt.date) -> DueReview:
    return DueReview(
        plan.id,
        plan.patient_id,
        plan.site_id,
        schedule.due,
        review_state(schedule.due, today),
        schedule.explanation,
    )
