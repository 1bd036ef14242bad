"""Appointments, slots, chair blocks and the due list: protobuf ⇄ the booking use cases' values.
No rules live here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

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
from services.common.pagination import PageRequest
from services.scheduler.domain.appointments import (
    Appointment,
    AppointmentStatus,
    Completion,
    timing,
)
from services.scheduler.domain.due import DueItem
from services.scheduler.domain.reminders import ReminderStatus
from services.scheduler.domain.sites import ChairBlock
from services.scheduler.domain.slots import Fit, wall_time
from services.scheduler.usecases.bookings import SlotSearch

STATUS: dict[AppointmentStatus, Any] = {
    s: pb.AppointmentStatus.Value(f"APPOINTMENT_STATUS_{s.value}") for s in AppointmentStatus
}
STATUS_IN = {v: k for k, v in STATUS.items()}
REMINDER_STATUS: dict[ReminderStatus, Any] = {
    s: pb.ReminderStatus.Value(f"REMINDER_STATUS_{s.value}") for s in ReminderStatus
}
COURSE = {"MAINTENANCE": pb.COURSE_KIND_MAINTENANCE, "INDUCTION": pb.COURSE_KIND_INDUCTION}


def appointment_out(a: Appointment, now: dt.datetime) -> pb.Appointment:
    status = a.status_at(now)
    msg = pb.Appointment(
        id=a.id,
        site_id=a.site_id,
        patient_id=a.patient_id,
        therapy_plan_id=a.plan_id,
        plan_version=a.plan_version,
        chair_id=a.chair_id,
        status=STATUS[status],
        local_date=from_date(a.local_date),
        local_start=from_time_of_day(wall_time(a.start_minute)),
        local_end=from_time_of_day(wall_time(a.end_minute)),
        start_time=from_datetime(a.start_at),
        end_time=from_datetime(a.end_at),
        chair_minutes=a.chair_minutes,
        course=COURSE[a.course],
        course_day=a.course_day,
        series_id=a.series_id,
        dose_grams=decimal_str(a.dose_grams),
        product_id=a.product_id,
        cancel_reason=a.cancel_reason or ("hold expired" if status is not a.status else ""),
        grams_given=decimal_str(a.grams_given),
        scanned_lots=[pb.ScannedLot(**lot) for lot in a.scanned_lots],
        etag=etag_for(a.revision),
        create_time=from_datetime(a.created_at),
        update_time=from_datetime(a.updated_at),
        stock_status=a.stock_status,
        stock_note=a.stock_note,
        stock_at_risk=a.stock_status == "AT_RISK",
    )
    msg.reminders.extend(
        pb.AppointmentReminder(
            offset=r.offset_label,
            due_time=from_datetime(r.due_at),
            status=REMINDER_STATUS[r.status],
        )
        for r in a.reminders
    )
    for field, value in (
        ("hold_expire_time", a.hold_expires_at),
        ("actual_start_time", a.actual_start_at),
        ("actual_end_time", a.actual_end_at),
    ):
        if value is not None:
            getattr(msg, field).CopyFrom(from_datetime(value))
    return msg


def due_out(item: DueItem, authorisation: pb.AuthorisationState | None = None) -> pb.DueInfusion:
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
        ramp_step=item.ramp_step,
        dose_grams=decimal_str(item.dose_grams),
        authorisation=authorisation,
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


def block_out(block: ChairBlock) -> pb.ChairBlock:
    return pb.ChairBlock(
        id=block.id,
        chair_id=block.chair_id,
        start_time=from_datetime(block.start_at),
        end_time=from_datetime(block.end_at),
        reason=block.reason,
    )


def appointment_key(a: Appointment) -> list[str]:
    """An appointment's place in a list: by day, start and id."""
    return [a.local_date.isoformat(), str(a.start_minute), a.id]


def appointment_id_in(request: Any) -> str:
    if not request.id:
        raise InvalidArgument([FieldViolation("id", "is required")])
    return str(request.id)


def when_in(request: Any, v: Violations) -> tuple[dt.date | None, dt.time | None]:
    """A request's ``local_date`` and ``local_start``: the wall-clock time of a booking."""
    day = parse_date(request.local_date, "local_date", v)
    start = parse_time_of_day(request.local_start, "local_start", v)
    return day, start


def morning_in(prefs: pb.SlotPreferences) -> bool | None:
    if prefs.time_of_day == pb.TIME_OF_DAY_PREFERENCE_MORNING:
        return True
    if prefs.time_of_day == pb.TIME_OF_DAY_PREFERENCE_AFTERNOON:
        return False
    return None


def block_times_in(block: pb.ChairBlock, v: Violations) -> tuple[dt.datetime, dt.datetime]:
    if not block.HasField("start_time"):
        v.add("chair_block.start_time", "is required")
    if not block.HasField("end_time"):
        v.add("chair_block.end_time", "is required")
    return to_datetime(block.start_time), to_datetime(block.end_time)


def completion_in(request: pb.CompleteInfusionRequest, v: Violations) -> Completion:
    """What the nurse records at the end of an infusion: grams given, times, scanned lots."""
    if not request.id:
        v.add("id", "is required")
    grams = parse_decimal(request.grams_given, "grams_given", v)
    return Completion(
        grams=grams if grams is not None else Decimal(0),
        started=to_datetime(request.actual_start_time)
        if request.HasField("actual_start_time")
        else None,
        ended=to_datetime(request.actual_end_time) if request.HasField("actual_end_time") else None,
        lots=lots_in(request.scanned_lots, v),
    )


def lots_in(scanned: Iterable[pb.ScannedLot], v: Violations) -> list[dict[str, Any]]:
    """Scanned lots as an infusion's record keeps them: a lot number or a scan, 1 vial or more
    (a chair's CompleteInfusion, a home dose's RecordHomeInfusion)."""
    lots = []
    for i, lot in enumerate(scanned):
        if not lot.lot_number and not lot.gs1_element_string:
            v.add(f"scanned_lots[{i}].lot_number", "give the lot number or the scan")
        if lot.vials <= 0:
            v.add(f"scanned_lots[{i}].vials", "must be at least 1")
        lots.append(
            {
                "lot_number": lot.lot_number,
                "gs1_element_string": lot.gs1_element_string,
                "vials": lot.vials,
                "product_id": lot.product_id,
            }
        )
    return lots


def slots_out(found: SlotSearch, zone: ZoneInfo) -> pb.FindSlotsResponse:
    due = found.need.item.due_date
    slots = []
    for day, fit in found.slots:
        slot = slot_out(day, fit, due, zone, found.need.chair_minutes)
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


def due_key(item: DueItem) -> list[str]:
    """A due item's place in the due list: by date, plan and course day."""
    return [item.due_date.isoformat(), item.plan_id, f"{item.course_day:03d}"]


def due_after(items: list[DueItem], page: PageRequest) -> list[DueItem]:
    """The due list is computed whole (it is not a query): a page is cut from it by key."""
    if page.after:
        after = page.after
        items = [i for i in items if due_key(i) > after]
    return items[: page.size + 1]
