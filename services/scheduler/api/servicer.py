"""SchedulerService's servicer: every RPC of the service, in the order of the proto.

Each method reads its request into domain values (the translations live beside this file),
calls one use case, and writes the result back as protobuf. No rules live here. Mutations go
through ``mutations`` (services/common/crud.py), which runs them once per request_id in one
write transaction with the idempotency record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message

from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from services.common.clock import Clock
from services.common.convert import from_date, parse_date, to_datetime
from services.common.crud import Mutations, listed, parsed
from services.common.errors import FieldViolation, InvalidArgument, Violations, required
from services.common.pagination import PageRequest
from services.scheduler.api import bookings as booking
from services.scheduler.api import regimens as regimen
from services.scheduler.api.doses import COURSE_IN, dose_out
from services.scheduler.api.outcomes import (
    DECISION_IN,
    accepted_in,
    analysis_out,
    decision_out,
    due_review_out,
    outcome_in,
    outcome_out,
    proposal_inputs,
)
from services.scheduler.api.resources import (
    CHAIR_MUTABLE,
    PATIENT_MUTABLE,
    PLAN_MUTABLE,
    SITE_MUTABLE,
    chair_in,
    chair_out,
    enum_in,
    measurement_in,
    measurement_out,
    patch,
    patient_in,
    patient_out,
    plan_in,
    plan_out,
    site_in,
    site_out,
)
from services.scheduler.api.schedules import (
    DEFAULT_TIME_LIMIT_SECONDS,
    board_out,
    objective_in,
    planned_out,
)
from services.scheduler.domain.appointments import Appointment
from services.scheduler.domain.due import DueItem
from services.scheduler.domain.plans import PlanStatus
from services.scheduler.usecases.bookings import Bookings
from services.scheduler.usecases.doses import Doses
from services.scheduler.usecases.outcomes import Outcomes
from services.scheduler.usecases.records import Records
from services.scheduler.usecases.regimens import Regimens
from services.scheduler.usecases.schedules import Schedules

DEFAULT_HORIZON_DAYS = 28
MAX_HORIZON_DAYS = 366
DEFAULT_REVIEW_HORIZON_DAYS = 30  # a review shows as due 30 days ahead (domain/regimens/reviews)
R = TypeVar("R", bound=Message)
Context = grpc.ServicerContext


class SchedulerServicer(pb_grpc.SchedulerServiceServicer):
    def __init__(
        self,
        records: Records,
        doses: Doses,
        bookings: Bookings,
        schedules: Schedules,
        outcomes: Outcomes,
        regimens: Regimens,
        mutations: Mutations,
        clock: Clock,
    ) -> None:
        self.outcomes = outcomes
        self.records = records
        self.doses = doses
        self.bookings = bookings
        self.schedules = schedules
        self.regimens = regimens
        self.mutate = mutations
        self.clock = clock

    # --- sites ----------------------------------------------------------------------------------

    def CreateSite(self, request: pb.CreateSiteRequest, context: Context) -> Any:
        site = parsed(site_in, request.site)
        return self.mutate(
            "CreateSite",
            request,
            pb.CreateSiteResponse,
            lambda s: pb.CreateSiteResponse(site=site_out(self.records.create_site(s, site))),
        )

    def GetSite(self, request: pb.GetSiteRequest, context: Context) -> Any:
        site_id = required(request.id, "id")
        return pb.GetSiteResponse(site=site_out(self.records.get_site(site_id)))

    def ListSites(self, request: pb.ListSitesRequest, context: Context) -> Any:
        organisation = request.organisation_id
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=f"sites:{organisation}",
            fetch=lambda page: self.records.list_sites(organisation, page),
            key=lambda s: [s.value.id],
        )
        return pb.ListSitesResponse(sites=[site_out(s) for s in rows], next_page_token=token)

    def UpdateSite(self, request: pb.UpdateSiteRequest, context: Context) -> Any:
        site_id = required(request.site.id, "site.id")
        change = patch(
            site_out, site_in, request.site, request.update_mask, SITE_MUTABLE, prefix="site"
        )
        return self.mutate(
            "UpdateSite",
            request,
            pb.UpdateSiteResponse,
            lambda s: pb.UpdateSiteResponse(
                site=site_out(self.records.update_site(s, site_id, request.site.etag, change))
            ),
        )

    # --- chairs ---------------------------------------------------------------------------------

    def CreateChair(self, request: pb.CreateChairRequest, context: Context) -> Any:
        chair = parsed(chair_in, request.chair)
        return self.mutate(
            "CreateChair",
            request,
            pb.CreateChairResponse,
            lambda s: pb.CreateChairResponse(chair=chair_out(self.records.create_chair(s, chair))),
        )

    def GetChair(self, request: pb.GetChairRequest, context: Context) -> Any:
        chair_id = required(request.id, "id")
        return pb.GetChairResponse(chair=chair_out(self.records.get_chair(chair_id)))

    def ListChairs(self, request: pb.ListChairsRequest, context: Context) -> Any:
        site_id = required(request.site_id, "site_id")
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=f"chairs:{site_id}:{request.active_only}",
            fetch=lambda page: self.records.list_chairs(site_id, request.active_only, page),
            key=lambda c: [c.value.id],
        )
        return pb.ListChairsResponse(chairs=[chair_out(c) for c in rows], next_page_token=token)

    def UpdateChair(self, request: pb.UpdateChairRequest, context: Context) -> Any:
        chair_id = required(request.chair.id, "chair.id")
        change = patch(
            chair_out, chair_in, request.chair, request.update_mask, CHAIR_MUTABLE, prefix="chair"
        )
        return self.mutate(
            "UpdateChair",
            request,
            pb.UpdateChairResponse,
            lambda s: pb.UpdateChairResponse(
                chair=chair_out(self.records.update_chair(s, chair_id, request.chair.etag, change))
            ),
        )

    # --- patients -------------------------------------------------------------------------------

    def CreatePatient(self, request: pb.CreatePatientRequest, context: Context) -> Any:
        patient = parsed(patient_in, request.patient)
        return self.mutate(
            "CreatePatient",
            request,
            pb.CreatePatientResponse,
            lambda s: pb.CreatePatientResponse(
                patient=patient_out(self.records.create_patient(s, patient))
            ),
        )

    def GetPatient(self, request: pb.GetPatientRequest, context: Context) -> Any:
        patient_id = required(request.id, "id")
        return pb.GetPatientResponse(patient=patient_out(self.records.get_patient(patient_id)))

    def ListPatients(self, request: pb.ListPatientsRequest, context: Context) -> Any:
        organisation, mrn, ids = request.organisation_id, request.mrn, sorted(set(request.ids))
        # the token names the id filter by a digest: 500 ids would not fit in it
        chosen = hashlib.sha256(",".join(ids).encode()).hexdigest()[:16] if ids else ""
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=f"patients:{organisation}:{mrn}:{chosen}",
            fetch=lambda page: self.records.list_patients(organisation, mrn, page, ids),
            key=lambda p: [p.value.id],
        )
        return pb.ListPatientsResponse(
            patients=[patient_out(p) for p in rows], next_page_token=token
        )

    def UpdatePatient(self, request: pb.UpdatePatientRequest, context: Context) -> Any:
        patient_id = required(request.patient.id, "patient.id")
        change = patch(
            patient_out,
            patient_in,
            request.patient,
            request.update_mask,
            PATIENT_MUTABLE,
            prefix="patient",
        )
        return self.mutate(
            "UpdatePatient",
            request,
            pb.UpdatePatientResponse,
            lambda s: pb.UpdatePatientResponse(
                patient=patient_out(
                    self.records.update_patient(s, patient_id, request.patient.etag, change)
                )
            ),
        )

    def RecordMeasurement(self, request: pb.RecordMeasurementRequest, context: Context) -> Any:
        measurement = parsed(measurement_in, request.measurement)

        def record(session: Any) -> pb.RecordMeasurementResponse:
            saved, created = self.records.record_measurement(session, measurement)
            return pb.RecordMeasurementResponse(measurement=measurement_out(saved, created))

        return self.mutate("RecordMeasurement", request, pb.RecordMeasurementResponse, record)

    def ListMeasurements(self, request: pb.ListMeasurementsRequest, context: Context) -> Any:
        patient_id = required(request.patient_id, "patient_id")
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=f"measurements:{patient_id}",
            fetch=lambda page: self.records.list_measurements(patient_id, page),
            key=lambda pair: [pair[0].measured_on.isoformat(), pair[0].id],
        )
        return pb.ListMeasurementsResponse(
            measurements=[measurement_out(m, c) for m, c in rows], next_page_token=token
        )

    # --- therapy plans --------------------------------------------------------------------------

    def CreateTherapyPlan(self, request: pb.CreateTherapyPlanRequest, context: Context) -> Any:
        plan = parsed(plan_in, request.therapy_plan)
        return self.mutate(
            "CreateTherapyPlan",
            request,
            pb.CreateTherapyPlanResponse,
            lambda s: pb.CreateTherapyPlanResponse(
                therapy_plan=plan_out(self.records.create_plan(s, plan, "created"))
            ),
        )

    def GetTherapyPlan(self, request: pb.GetTherapyPlanRequest, context: Context) -> Any:
        plan_id = required(request.id, "id")
        if request.version < 0:
            raise InvalidArgument([FieldViolation("version", "must not be negative")])
        return pb.GetTherapyPlanResponse(
            therapy_plan=plan_out(self.records.get_plan(plan_id, request.version))
        )

    def ListTherapyPlans(self, request: pb.ListTherapyPlansRequest, context: Context) -> Any:
        v = Violations()
        status = (
            None
            if request.status == pb.PLAN_STATUS_UNSPECIFIED
            else enum_in(request.status, pb.PlanStatus, PlanStatus, "status", v)
        )
        v.raise_if_any()
        patient_id, site_id = request.patient_id, request.site_id
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=f"plans:{patient_id}:{site_id}:{request.status}",
            fetch=lambda page: self.records.list_plans(patient_id, site_id, status, page),
            key=lambda p: [p.value.id],
        )
        return pb.ListTherapyPlansResponse(
            therapy_plans=[plan_out(p) for p in rows], next_page_token=token
        )

    def UpdateTherapyPlan(self, request: pb.UpdateTherapyPlanRequest, context: Context) -> Any:
        plan_id = required(request.therapy_plan.id, "therapy_plan.id")
        change = patch(
            plan_out,
            plan_in,
            request.therapy_plan,
            request.update_mask,
            PLAN_MUTABLE,
            prefix="therapy_plan",
        )
        etag, reason = request.therapy_plan.etag, request.reason
        return self.mutate(
            "UpdateTherapyPlan",
            request,
            pb.UpdateTherapyPlanResponse,
            lambda s: pb.UpdateTherapyPlanResponse(
                therapy_plan=plan_out(self.records.update_plan(s, plan_id, etag, change, reason))
            ),
        )

    # --- outcomes, reviews and regimen proposals -------------------------------------------------

    def RecordOutcome(self, request: pb.RecordOutcomeRequest, context: Context) -> Any:
        entry = parsed(outcome_in, request.outcome)

        def record(session: Any) -> pb.RecordOutcomeResponse:
            saved, created = self.outcomes.record_outcome(session, entry)
            return pb.RecordOutcomeResponse(outcome=outcome_out(saved, created))

        return self.mutate("RecordOutcome", request, pb.RecordOutcomeResponse, record)

    def ListOutcomes(self, request: pb.ListOutcomesRequest, context: Context) -> Any:
        patient_id = required(request.patient_id, "patient_id")
        plan_id = request.therapy_plan_id
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=f"outcomes:{patient_id}:{plan_id}",
            fetch=lambda page: self.outcomes.list_outcomes(patient_id, plan_id, page),
            key=lambda pair: [pair[0].recorded_on.isoformat(), pair[0].id],
        )
        return pb.ListOutcomesResponse(
            outcomes=[outcome_out(e, c) for e, c in rows], next_page_token=token
        )

    def ListDueReviews(self, request: pb.ListDueReviewsRequest, context: Context) -> Any:
        site_id = required(request.site_id, "site_id")
        horizon = request.horizon_days or DEFAULT_REVIEW_HORIZON_DAYS
        if not 0 < horizon <= MAX_HORIZON_DAYS:
            raise InvalidArgument(
                [FieldViolation("horizon_days", f"must be 1 to {MAX_HORIZON_DAYS}")]
            )
        today, reviews = self.outcomes.due_reviews(site_id, horizon)
        return pb.ListDueReviewsResponse(
            as_of=from_date(today), due_reviews=[due_review_out(r) for r in reviews]
        )

    def RecordReviewDecision(
        self, request: pb.RecordReviewDecisionRequest, context: Context
    ) -> Any:
        v = Violations()
        if not request.therapy_plan_id:
            v.add("therapy_plan_id", "is required")
        decision = DECISION_IN.get(request.decision)
        if decision is None:
            v.add("decision", "is required")
        if not request.reason.strip():
            v.add("reason", "is required")
        day = parse_date(request.decided_on, "decided_on", v, required=False)
        v.raise_if_any()
        assert decision is not None

        def record(session: Any) -> pb.RecordReviewDecisionResponse:
            row, due = self.outcomes.record_decision(
                session, request.therapy_plan_id, decision, request.reason, day
            )
            return pb.RecordReviewDecisionResponse(
                review_decision=decision_out(
                    row.id,
                    row.plan_id,
                    row.patient_id,
                    row.plan_version,
                    row.decided_on,
                    row.decision,
                    row.reason,
                    row.decided_by,
                    row.created_at,
                ),
                next_review=due_review_out(due),
            )

        return self.mutate("RecordReviewDecision", request, pb.RecordReviewDecisionResponse, record)

    def ProposeRegimenAdjustment(
        self, request: pb.ProposeRegimenAdjustmentRequest, context: Context
    ) -> Any:
        v = Violations()
        if not request.therapy_plan_id:
            v.add("therapy_plan_id", "is required")
        inputs = proposal_inputs(request, v)
        v.raise_if_any()
        return analysis_out(self.outcomes.propose(request.therapy_plan_id, inputs))

    def AcceptRegimenProposal(
        self, request: pb.AcceptRegimenProposalRequest, context: Context
    ) -> Any:
        v = Violations()
        seen = accepted_in(request.proposal, v)
        inputs = proposal_inputs(request, v)
        if not request.reason.strip():
            v.add("reason", "is required")
        v.raise_if_any()

        def accept(session: Any) -> pb.AcceptRegimenProposalResponse:
            plan = self.outcomes.accept(
                session, seen, inputs, request.reason, request.review_decision_id
            )
            return pb.AcceptRegimenProposalResponse(therapy_plan=plan_out(plan))

        return self.mutate(
            "AcceptRegimenProposal", request, pb.AcceptRegimenProposalResponse, accept
        )

    # --- dose and due list ----------------------------------------------------------------------

    def CalculateDose(self, request: pb.CalculateDoseRequest, context: Context) -> Any:
        v = Violations()
        if not request.therapy_plan_id:
            v.add("therapy_plan_id", "is required")
        if request.plan_version < 0:
            v.add("plan_version", "must not be negative")
        day = parse_date(request.dosing_date, "dosing_date", v)
        if request.course not in COURSE_IN and request.course != pb.COURSE_KIND_UNSPECIFIED:
            v.add("course", "is not a known course kind")
        v.raise_if_any()
        assert day is not None
        result = self.doses.calculate(
            request.therapy_plan_id, request.plan_version, day, COURSE_IN.get(request.course)
        )
        return pb.CalculateDoseResponse(calculation=dose_out(result))

    def ListDueInfusions(self, request: pb.ListDueInfusionsRequest, context: Context) -> Any:
        site_id = required(request.site_id, "site_id")
        horizon = request.horizon_days or DEFAULT_HORIZON_DAYS
        if not 1 <= horizon <= MAX_HORIZON_DAYS:
            raise InvalidArgument(
                [FieldViolation("horizon_days", f"must be 1–{MAX_HORIZON_DAYS} days")]
            )
        as_of: list[dt.date] = []

        def due(page: PageRequest) -> list[DueItem]:
            today, items = self.records.due_list(site_id, horizon)
            as_of.append(today)
            return booking.due_after(items, page)

        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=f"due:{site_id}:{horizon}",
            fetch=due,
            key=booking.due_key,
        )
        states = self.regimens.states(rows)
        return pb.ListDueInfusionsResponse(
            due_infusions=[
                booking.due_out(
                    i,
                    regimen.state_out(*states[(i.plan_id, i.due_date)], i.due_date)
                    if (i.plan_id, i.due_date) in states
                    else None,
                )
                for i in rows
            ],
            next_page_token=token,
            as_of=from_date(as_of[0]),
        )

    # --- chair blocks ---------------------------------------------------------------------------

    def CreateChairBlock(self, request: pb.CreateChairBlockRequest, context: Context) -> Any:
        b = request.chair_block
        start, end = parsed(booking.block_times_in, b)
        return self.mutate(
            "CreateChairBlock",
            request,
            pb.CreateChairBlockResponse,
            lambda s: pb.CreateChairBlockResponse(
                chair_block=booking.block_out(
                    self.bookings.create_block(s, b.chair_id, start, end, b.reason)
                )
            ),
        )

    def ListChairBlocks(self, request: pb.ListChairBlocksRequest, context: Context) -> Any:
        v = Violations()
        first = parse_date(request.start_date, "start_date", v)
        last = parse_date(request.end_date, "end_date", v)
        if not request.site_id:
            v.add("site_id", "is required")
        v.raise_if_any()
        assert first is not None and last is not None
        blocks = self.bookings.list_blocks(request.site_id, first, last)
        return pb.ListChairBlocksResponse(chair_blocks=[booking.block_out(b) for b in blocks])

    def DeleteChairBlock(self, request: pb.DeleteChairBlockRequest, context: Context) -> Any:
        def delete(session: Any) -> pb.DeleteChairBlockResponse:
            self.bookings.delete_block(session, request.id)
            return pb.DeleteChairBlockResponse()

        return self.mutate("DeleteChairBlock", request, pb.DeleteChairBlockResponse, delete)

    # --- slots and booking ----------------------------------------------------------------------

    def FindSlots(self, request: pb.FindSlotsRequest, context: Context) -> Any:
        v = Violations()
        first = parse_date(request.start_date, "start_date", v, required=False)
        last = parse_date(request.end_date, "end_date", v, required=False)
        if not 0 <= request.max_results <= 100:
            v.add("max_results", "must be 0 to 100")
        v.raise_if_any()
        found = self.bookings.find_slots(
            request.therapy_plan_id,
            request.site_id,
            first,
            last,
            booking.morning_in(request.preferences),
            request.preferences.same_chair_as_last,
            request.max_results,
            request.skip_without_stock,
        )
        site = self.bookings.site(request.site_id or found.need.plan.site_id)
        return booking.slots_out(found, site.zone)

    def HoldSlot(self, request: pb.HoldSlotRequest, context: Context) -> Any:
        day, start = parsed(booking.when_in, request)
        assert day is not None and start is not None
        plan_id, chair_id = request.therapy_plan_id, request.chair_id
        return self._changed(
            "HoldSlot",
            request,
            pb.HoldSlotResponse,
            lambda s: self.bookings.hold(s, plan_id, chair_id, day, start),
        )

    def BookAppointment(self, request: pb.BookAppointmentRequest, context: Context) -> Any:
        day, start = (None, None) if request.hold_id else parsed(booking.when_in, request)
        hold_id, plan_id, chair_id = request.hold_id, request.therapy_plan_id, request.chair_id
        return self._changed(
            "BookAppointment",
            request,
            pb.BookAppointmentResponse,
            lambda s: self.bookings.book(s, hold_id, plan_id, chair_id, day, start),
            key_last=True,  # its effects are its transaction's; the key rides in its write
        )

    def BookInductionCourse(self, request: pb.BookInductionCourseRequest, context: Context) -> Any:
        v = Violations()
        first = parse_date(request.first_date, "first_date", v, required=False)
        v.raise_if_any()
        morning = booking.morning_in(request.preferences)
        now = self.clock.now()
        return self.mutate(
            "BookInductionCourse",
            request,
            pb.BookInductionCourseResponse,
            lambda s: pb.BookInductionCourseResponse(
                appointments=[
                    booking.appointment_out(a, now)
                    for a in self.bookings.book_course(s, request.therapy_plan_id, first, morning)
                ]
            ),
        )

    def CheckIn(self, request: pb.CheckInRequest, context: Context) -> Any:
        appointment_id = booking.appointment_id_in(request)
        return self._changed(
            "CheckIn",
            request,
            pb.CheckInResponse,
            lambda s: self.bookings.check_in(s, appointment_id),
        )

    def StartInfusion(self, request: pb.StartInfusionRequest, context: Context) -> Any:
        started = (
            to_datetime(request.actual_start_time)
            if request.HasField("actual_start_time")
            else self.clock.now()
        )
        appointment_id = booking.appointment_id_in(request)
        return self._changed(
            "StartInfusion",
            request,
            pb.StartInfusionResponse,
            lambda s: self.bookings.start(s, appointment_id, started),
        )

    def CompleteInfusion(self, request: pb.CompleteInfusionRequest, context: Context) -> Any:
        given = parsed(booking.completion_in, request)

        def complete(session: Any) -> pb.CompleteInfusionResponse:
            appointment, next_due = self.bookings.complete(session, request.id, given)
            reply = pb.CompleteInfusionResponse(appointment=self._out(appointment))
            if next_due is not None:
                reply.next_due.CopyFrom(booking.due_out(next_due))
            return reply

        return self.mutate("CompleteInfusion", request, pb.CompleteInfusionResponse, complete)

    def MarkNoShow(self, request: pb.MarkNoShowRequest, context: Context) -> Any:
        appointment_id = booking.appointment_id_in(request)
        return self._changed(
            "MarkNoShow",
            request,
            pb.MarkNoShowResponse,
            lambda s: self.bookings.mark_no_show(s, appointment_id),
        )

    def CancelAppointment(self, request: pb.CancelAppointmentRequest, context: Context) -> Any:
        if not request.reason.strip():
            raise InvalidArgument([FieldViolation("reason", "is required")])
        appointment_id = booking.appointment_id_in(request)
        return self._changed(
            "CancelAppointment",
            request,
            pb.CancelAppointmentResponse,
            lambda s: self.bookings.cancel(s, appointment_id, request.reason),
            key_last=True,
        )

    def RescheduleAppointment(
        self, request: pb.RescheduleAppointmentRequest, context: Context
    ) -> Any:
        v = Violations()
        if not request.id:
            v.add("id", "is required")
        day, start = booking.when_in(request, v)
        v.raise_if_any()
        assert day is not None and start is not None
        appointment_id, chair_id, etag = request.id, request.chair_id, request.etag
        return self._changed(
            "RescheduleAppointment",
            request,
            pb.RescheduleAppointmentResponse,
            lambda s: self.bookings.reschedule(s, appointment_id, chair_id, day, start, etag),
            key_last=True,
        )

    def GetAppointment(self, request: pb.GetAppointmentRequest, context: Context) -> Any:
        return pb.GetAppointmentResponse(appointment=self._out(self.bookings.get(request.id)))

    def ListAppointments(self, request: pb.ListAppointmentsRequest, context: Context) -> Any:
        v = Violations()
        first = parse_date(request.start_date, "start_date", v, required=False)
        last = parse_date(request.end_date, "end_date", v, required=False)
        if not request.site_id and not request.patient_id:
            v.add("site_id", "give a site_id or a patient_id")
        v.raise_if_any()
        site_id, patient_id = request.site_id, request.patient_id
        status = booking.STATUS_IN.get(request.status)
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=f"appointments:{site_id}:{patient_id}:{first}:{last}:{request.status}",
            fetch=lambda page: self.bookings.list_appointments(
                site_id, patient_id, first, last, status, page
            ),
            key=booking.appointment_key,
        )
        now = self.clock.now()
        return pb.ListAppointmentsResponse(
            appointments=[booking.appointment_out(a, now) for a in rows], next_page_token=token
        )

    # --- the chair board and the planner --------------------------------------------------------

    def GetChairBoard(self, request: pb.GetChairBoardRequest, context: Context) -> Any:
        v = Violations()
        if not request.site_id:
            v.add("site_id", "is required")
        day = parse_date(request.local_date, "local_date", v)
        v.raise_if_any()
        assert day is not None
        return board_out(self.schedules.board(request.site_id, day), self.clock.now())

    def PlanSchedule(self, request: pb.PlanScheduleRequest, context: Context) -> Any:
        v = Violations()
        if not request.site_id:
            v.add("site_id", "is required")
        start = parse_date(request.start_date, "start_date", v, required=False)
        if request.mode == pb.PLAN_MODE_UNSPECIFIED:
            v.add("mode", "is required: PROPOSE or COMMIT")
        if request.time_limit_seconds < 0:
            v.add("time_limit_seconds", "must not be negative")
        v.raise_if_any()
        limit = float(request.time_limit_seconds or DEFAULT_TIME_LIMIT_SECONDS)
        site_id, horizon, seed = request.site_id, request.horizon_days, request.seed
        skip, objective = request.skip_without_stock, objective_in(request.objective)
        if request.mode == pb.PLAN_MODE_COMMIT:
            return self.mutate(
                "PlanSchedule",
                request,
                pb.PlanScheduleResponse,
                lambda s: planned_out(
                    self.schedules.plan(
                        s, site_id, start, horizon, True, limit, seed, skip, objective
                    )
                ),
            )
        return planned_out(
            self.schedules.propose(site_id, start, horizon, limit, seed, skip, objective)
        )

    # --- regimen conversion, authorisations and payer caps --------------------------------------

    def ConvertRegimen(self, request: pb.ConvertRegimenRequest, context: Context) -> Any:
        ask = parsed(regimen.convert_in, request)
        if ask.validate_only:
            converted = self.regimens.preview(ask)
            plan = self.records.get_plan(ask.plan_id).value
            return pb.ConvertRegimenResponse(
                conversion=regimen.conversion_out(converted, plan.route)
            )

        def convert(session: Any) -> pb.ConvertRegimenResponse:
            before = self.records.load_plan(session, ask.plan_id).route
            stored, converted = self.regimens.convert(session, ask)
            return pb.ConvertRegimenResponse(
                therapy_plan=plan_out(stored), conversion=regimen.conversion_out(converted, before)
            )

        return self.mutate("ConvertRegimen", request, pb.ConvertRegimenResponse, convert)

    def SetPlanAuthorisation(
        self, request: pb.SetPlanAuthorisationRequest, context: Context
    ) -> Any:
        authorisation = parsed(regimen.authorisation_in, request.authorisation)
        etag = request.authorisation.etag
        return self.mutate(
            "SetPlanAuthorisation",
            request,
            pb.SetPlanAuthorisationResponse,
            lambda s: pb.SetPlanAuthorisationResponse(
                authorisation=regimen.authorisation_out(
                    self.regimens.set_authorisation(s, authorisation, etag)
                )
            ),
        )

    def SetPayerCaps(self, request: pb.SetPayerCapsRequest, context: Context) -> Any:
        caps = parsed(regimen.caps_in, request.payer_caps)
        etag = request.payer_caps.etag
        return self.mutate(
            "SetPayerCaps",
            request,
            pb.SetPayerCapsResponse,
            lambda s: pb.SetPayerCapsResponse(
                payer_caps=regimen.caps_out(self.regimens.set_caps(s, caps, etag))
            ),
        )

    def RecordHomeInfusion(self, request: pb.RecordHomeInfusionRequest, context: Context) -> Any:
        given_on, grams, lots = parsed(regimen.home_in, request)

        def record(session: Any) -> pb.RecordHomeInfusionResponse:
            home, next_due = self.regimens.record_home(
                session, request.therapy_plan_id, given_on, grams, lots
            )
            reply = pb.RecordHomeInfusionResponse(home_infusion=regimen.home_out(home))
            if next_due is not None:
                reply.next_due.CopyFrom(booking.due_out(next_due))
            return reply

        return self.mutate("RecordHomeInfusion", request, pb.RecordHomeInfusionResponse, record)

    def GetPlanCoverage(self, request: pb.GetPlanCoverageRequest, context: Context) -> Any:
        v = Violations()
        if not request.therapy_plan_id:
            v.add("therapy_plan_id", "is required")
        as_of = parse_date(request.as_of, "as_of", v, required=False)
        v.raise_if_any()
        return regimen.coverage_out(self.regimens.coverage(request.therapy_plan_id, as_of))

    def _changed(
        self,
        method: str,
        request: Message,
        response_type: type[R],
        change: Callable[[Any], Appointment],
        *,
        key_last: bool = False,
    ) -> R:
        """A mutation whose answer is the appointment it changed, as of now.

        The protobuf stubs type the base ``Message()`` without keyword arguments, while every
        response class here takes ``appointment=``; hence the constructor seen as a callable.
        """
        answer = cast(Callable[..., R], response_type)
        return self.mutate(
            method,
            request,
            response_type,
            lambda s: answer(appointment=self._out(change(s))),
            key_last=key_last,
        )

    def _out(self, appointment: Appointment) -> pb.Appointment:
        return booking.appointment_out(appointment, self.clock.now())
