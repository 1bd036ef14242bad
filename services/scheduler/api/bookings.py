"""Slot search, booking lifecycle, chair blocks and the chair board: protobuf ↔ the booking use
cases. No rules live here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import grpc

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import (
    decimal_str,
    from_date,
    from_datetime,
    from_time_of_day,
    parse_date,
    parse_decimal,
    parse_time_of_day,
    to_datetime,
)
from services.common.errors import FieldViolation, InvalidArgument, Violations
from services.common.etag import etag_for
from services.common.pagination import page_request, split_page
from services.scheduler.domain.appointments import AppointmentStatus, timing
from services.scheduler.domain.due import DueItem
from services.scheduler.domain.reminders import ReminderStatus
from services.scheduler.domain.slots import Fit, wall_time
from services.scheduler.store.models import AppointmentRow, ChairBlockRow
from services.scheduler.usecases.bookings import Bookings, effective_status

STATUS: dict[AppointmentStatus, Any] = {
    s: pb.AppointmentStatus.Value(f"APPOINTMENT_STATUS_{s.value}") for s in AppointmentStatus
}
_STATUS_IN = {v: k for k, v in STATUS.items()}
REMINDER_STATUS: dict[ReminderStatus, Any] = {
    s: pb.ReminderStatus.Value(f"REMINDER_STATUS_{s.value}") for s in ReminderStatus
}
COURSE = {"MAINTENANCE": pb.COURSE_KIND_MAINTENANCE, "INDUCTION": pb.COURSE_KIND_INDUCTION}


def appointment_out(row: AppointmentRow, now: dt.datetime) -> pb.Appointment:
    msg = pb.Appointment(
        id=row.id,
        site_id=row.site_id,
        patient_id=row.patient_id,
        therapy_plan_id=row.plan_id,
        plan_version=row.plan_version,
        chair_id=row.chair_id,
        status=STATUS[effective_status(row, now)],
        local_date=from_date(row.local_date),
        local_start=from_time_of_day(wall_time(row.start_minute)),
        local_end=from_time_of_day(wall_time(row.end_minute)),
        start_time=from_datetime(row.start_at),
        end_time=from_datetime(row.end_at),
        chair_minutes=row.chair_minutes,
        course=COURSE[row.course],
        course_day=row.course_day,
        series_id=row.series_id,
        dose_grams=decimal_str(row.dose_grams),
        product_id=row.product_id,
        cancel_reason=row.cancel_reason
        or ("hold expired" if effective_status(row, now).value != row.status else ""),
        grams_given=decimal_str(row.grams_given),
        scanned_lots=[pb.ScannedLot(**lot) for lot in row.scanned_lots],
        etag=etag_for(row.revision),
        create_time=from_datetime(row.created_at),
        update_time=from_datetime(row.updated_at),
        stock_status=row.stock_status,
        stock_note=row.stock_note,
        stock_at_risk=row.stock_status == "AT_RISK",
    )
    msg.reminders.extend(
        pb.AppointmentReminder(
            offset=r.offset_label,
            due_time=from_datetime(r.due_at),
            status=REMINDER_STATUS[ReminderStatus(r.status)],
        )
        for r in row.reminders
    )
    for field, value in (
        ("hold_expire_time", row.hold_expires_at),
        ("actual_start_time", row.actual_start_at),
        ("actual_end_time", row.actual_end_at),
    ):
        if value is not None:
            getattr(msg, field).CopyFrom(from_datetime(value))
    return msg


def due_out(item: DueItem) -> pb.DueInfusion:
    return pb.DueInfusion(
        therapy_plan_id=item.plan_id,
        plan_version=item.plan_version,
        patient_id=item.patient_id,
        product_id=item.product_id,
        course=COURSE[item.course.value],
        course_day=item.course_day,
        due_date=from_date(item.due_date),
        window_start=from_date(item.window_start),
        window_end=from_date(item.window_end),
        overdue=item.overdue,
        booked_appointment_id=item.booked_appointment_id,
        drift_days=item.drift_days,
        drifted=item.drifted,
    )


def slot_out(day: dt.date, fit: Fit, due: dt.date, zone: Any, minutes: int) -> pb.Slot:
    when = timing(day, fit.start, minutes, zone)
    return pb.Slot(
        chair_id=fit.chair_id,
        local_date=from_date(day),
        local_start=from_time_of_day(wall_time(when.start_minute)),
        local_end=from_time_of_day(wall_time(when.end_minute)),
        start_time=from_datetime(when.start_at),
        end_time=from_datetime(when.end_at),
        nurse_load=fit.nurse_load,
        nurse_capacity=fit.nurse_capacity,
        days_from_due=(day - due).days,
    )


def block_out(row: ChairBlockRow) -> pb.ChairBlock:
    return pb.ChairBlock(
        id=row.id,
        chair_id=row.chair_id,
        start_time=from_datetime(row.start_at),
        end_time=from_datetime(row.end_at),
        reason=row.reason,
    )


def _when(
    day_msg: Any, start_msg: Any, day_field: str, start_field: str, v: Violations
) -> tuple[dt.date | None, dt.time | None]:
    day = parse_date(day_msg, day_field, v)
    start = parse_time_of_day(start_msg, start_field, v)
    return day, start


def _morning(prefs: pb.SlotPreferences) -> bool | None:
    if prefs.time_of_day == pb.TIME_OF_DAY_PREFERENCE_MORNING:
        return True
    if prefs.time_of_day == pb.TIME_OF_DAY_PREFERENCE_AFTERNOON:
        return False
    return None


class BookingApi:
    """Mixed into SchedulerApi; ``bookings`` and ``_mutate`` come from it."""

    bookings: Bookings
    _mutate: Callable[..., Any]

    def _now(self) -> dt.datetime:
        return self.bookings.clock.now()

    def _appointment_reply(self, rtype: type[Any]) -> Callable[[AppointmentRow], Any]:
        return lambda row: rtype(appointment=appointment_out(row, self._now()))

    # --- chair blocks ---------------------------------------------------------------------------

    def CreateChairBlock(
        self, request: pb.CreateChairBlockRequest, context: grpc.ServicerContext
    ) -> Any:
        b = request.chair_block
        v = Violations()
        if not b.HasField("start_time"):
            v.add("chair_block.start_time", "is required")
        if not b.HasField("end_time"):
            v.add("chair_block.end_time", "is required")
        v.raise_if_any()
        start, end = to_datetime(b.start_time), to_datetime(b.end_time)
        return self._mutate(
            "CreateChairBlock",
            request,
            pb.CreateChairBlockResponse,
            lambda s: pb.CreateChairBlockResponse(
                chair_block=block_out(
                    self.bookings.create_block(s, b.chair_id, start, end, b.reason)
                )
            ),
        )

    def ListChairBlocks(
        self, request: pb.ListChairBlocksRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        first = parse_date(request.start_date, "start_date", v)
        last = parse_date(request.end_date, "end_date", v)
        if not request.site_id:
            v.add("site_id", "is required")
        v.raise_if_any()
        assert first is not None and last is not None
        rows = self.bookings.list_blocks(request.site_id, first, last)
        return pb.ListChairBlocksResponse(chair_blocks=[block_out(r) for r in rows])

    def DeleteChairBlock(
        self, request: pb.DeleteChairBlockRequest, context: grpc.ServicerContext
    ) -> Any:
        def delete(session: Any) -> pb.DeleteChairBlockResponse:
            self.bookings.delete_block(session, request.id)
            return pb.DeleteChairBlockResponse()

        return self._mutate("DeleteChairBlock", request, pb.DeleteChairBlockResponse, delete)

    # --- slots and booking ----------------------------------------------------------------------

    def FindSlots(self, request: pb.FindSlotsRequest, context: grpc.ServicerContext) -> Any:
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
            _morning(request.preferences),
            request.preferences.same_chair_as_last,
            request.max_results,
            request.skip_without_stock,
        )
        site = self.bookings.site(request.site_id or found.need.plan.site_id)
        due = found.need.item.due_date
        slots = []
        for day, fit in found.slots:
            slot = slot_out(day, fit, due, site.zone, found.need.chair_minutes)
            if day in found.stock_short:
                slot.stock_short = True
                slot.stock_note = found.stock_short[day]
            slots.append(slot)
        return pb.FindSlotsResponse(
            slots=slots,
            stock_checked=found.stock_checked,
            day_limits=[
                pb.DayLimit(local_date=from_date(day), limit=limit, detail=detail)
                for day, limit, detail in found.day_limits
            ],
            chair_minutes=found.need.chair_minutes,
            due_date=from_date(due),
        )

    def HoldSlot(self, request: pb.HoldSlotRequest, context: grpc.ServicerContext) -> Any:
        v = Violations()
        day, start = _when(request.local_date, request.local_start, "local_date", "local_start", v)
        v.raise_if_any()
        assert day is not None and start is not None
        reply = self._appointment_reply(pb.HoldSlotResponse)
        return self._mutate(
            "HoldSlot",
            request,
            pb.HoldSlotResponse,
            lambda s: reply(
                self.bookings.hold(s, request.therapy_plan_id, request.chair_id, day, start)
            ),
        )

    def BookAppointment(
        self, request: pb.BookAppointmentRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        day = start = None
        if not request.hold_id:
            day, start = _when(
                request.local_date, request.local_start, "local_date", "local_start", v
            )
        v.raise_if_any()
        reply = self._appointment_reply(pb.BookAppointmentResponse)
        return self._mutate(
            "BookAppointment",
            request,
            pb.BookAppointmentResponse,
            lambda s: reply(
                self.bookings.book(
                    s, request.hold_id, request.therapy_plan_id, request.chair_id, day, start
                )
            ),
        )

    def BookInductionCourse(
        self, request: pb.BookInductionCourseRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        first = parse_date(request.first_date, "first_date", v, required=False)
        v.raise_if_any()
        now = self._now()
        return self._mutate(
            "BookInductionCourse",
            request,
            pb.BookInductionCourseResponse,
            lambda s: pb.BookInductionCourseResponse(
                appointments=[
                    appointment_out(row, now)
                    for row in self.bookings.book_course(
                        s, request.therapy_plan_id, first, _morning(request.preferences)
                    )
                ]
            ),
        )

    def _move(
        self, name: str, request: Any, rtype: type[Any], status: AppointmentStatus, **kw: Any
    ) -> Any:
        if not request.id:
            raise InvalidArgument([FieldViolation("id", "is required")])
        reply = self._appointment_reply(rtype)
        return self._mutate(
            name, request, rtype, lambda s: reply(self.bookings.move(s, request.id, status, **kw))
        )

    def CheckIn(self, request: pb.CheckInRequest, context: grpc.ServicerContext) -> Any:
        return self._move("CheckIn", request, pb.CheckInResponse, AppointmentStatus.CHECKED_IN)

    def StartInfusion(self, request: pb.StartInfusionRequest, context: grpc.ServicerContext) -> Any:
        started = (
            to_datetime(request.actual_start_time)
            if request.HasField("actual_start_time")
            else self._now()
        )
        return self._move(
            "StartInfusion",
            request,
            pb.StartInfusionResponse,
            AppointmentStatus.IN_PROGRESS,
            actual_start_at=started,
        )

    def MarkNoShow(self, request: pb.MarkNoShowRequest, context: grpc.ServicerContext) -> Any:
        return self._move("MarkNoShow", request, pb.MarkNoShowResponse, AppointmentStatus.NOSHOW)

    def CancelAppointment(
        self, request: pb.CancelAppointmentRequest, context: grpc.ServicerContext
    ) -> Any:
        if not request.reason.strip():
            raise InvalidArgument([FieldViolation("reason", "is required")])
        return self._move(
            "CancelAppointment",
            request,
            pb.CancelAppointmentResponse,
            AppointmentStatus.CANCELLED,
            cancel_reason=request.reason,
        )

    def CompleteInfusion(
        self, request: pb.CompleteInfusionRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        if not request.id:
            v.add("id", "is required")
        grams = parse_decimal(request.grams_given, "grams_given", v)
        for i, lot in enumerate(request.scanned_lots):
            if not lot.lot_number and not lot.gs1_element_string:
                v.add(f"scanned_lots[{i}].lot_number", "give the lot number or the scan")
            if lot.vials <= 0:
                v.add(f"scanned_lots[{i}].vials", "must be at least 1")
        v.raise_if_any()
        assert grams is not None
        started = (
            to_datetime(request.actual_start_time)
            if request.HasField("actual_start_time")
            else None
        )
        ended = (
            to_datetime(request.actual_end_time) if request.HasField("actual_end_time") else None
        )
        lots = [
            {
                "lot_number": lot.lot_number,
                "gs1_element_string": lot.gs1_element_string,
                "vials": lot.vials,
                "product_id": lot.product_id,
            }
            for lot in request.scanned_lots
        ]

        def complete(session: Any) -> pb.CompleteInfusionResponse:
            row, next_due = self.bookings.complete(session, request.id, grams, started, ended, lots)
            reply = pb.CompleteInfusionResponse(appointment=appointment_out(row, self._now()))
            if next_due is not None:
                reply.next_due.CopyFrom(due_out(next_due))
            return reply

        return self._mutate("CompleteInfusion", request, pb.CompleteInfusionResponse, complete)

    def RescheduleAppointment(
        self, request: pb.RescheduleAppointmentRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        if not request.id:
            v.add("id", "is required")
        day, start = _when(request.local_date, request.local_start, "local_date", "local_start", v)
        v.raise_if_any()
        assert day is not None and start is not None
        reply = self._appointment_reply(pb.RescheduleAppointmentResponse)
        return self._mutate(
            "RescheduleAppointment",
            request,
            pb.RescheduleAppointmentResponse,
            lambda s: reply(
                self.bookings.reschedule(s, request.id, request.chair_id, day, start, request.etag)
            ),
        )

    def GetAppointment(
        self, request: pb.GetAppointmentRequest, context: grpc.ServicerContext
    ) -> Any:
        return pb.GetAppointmentResponse(
            appointment=appointment_out(self.bookings.get(request.id), self._now())
        )

    def ListAppointments(
        self, request: pb.ListAppointmentsRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        first = parse_date(request.start_date, "start_date", v, required=False)
        last = parse_date(request.end_date, "end_date", v, required=False)
        if not request.site_id and not request.patient_id:
            v.add("site_id", "give a site_id or a patient_id")
        v.raise_if_any()
        scope = (
            f"appointments:{request.site_id}:{request.patient_id}:{first}:{last}:{request.status}"
        )
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.bookings.list_appointments(
                request.site_id,
                request.patient_id,
                first,
                last,
                _STATUS_IN.get(request.status),
                page,
            ),
            page,
            lambda r: [r.local_date.isoformat(), str(r.start_minute), r.id],
            scope=scope,
        )
        now = self._now()
        return pb.ListAppointmentsResponse(
            appointments=[appointment_out(r, now) for r in rows], next_page_token=token
        )
