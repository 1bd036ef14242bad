"""PlanSchedule's proposal, the chair board and a site's objective weights: the planner's
results as protobuf. No rules live here."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import from_time_of_day
from services.scheduler.api.bookings import COURSE, appointment_out, slot_out
from services.scheduler.domain.appointments import AppointmentStatus
from services.scheduler.domain.capacity import ScheduleKpis
from services.scheduler.domain.objective import ObjectiveTerm, ScheduleObjective
from services.scheduler.domain.slots import Fit, wall_time
from services.scheduler.usecases.schedules import Board, Planned

DEFAULT_TIME_LIMIT_SECONDS = 10


def _share(value: float) -> str:
    return format(Decimal(str(round(value, 4))).normalize(), "f")


OBJECTIVE_FIELDS = tuple(f.name for f in dataclasses.fields(ScheduleObjective))


def objective_in(msg: pb.ScheduleObjective) -> dict[str, int]:
    """The weights the message sets (its optional fields that are present)."""
    return {name: getattr(msg, name) for name in OBJECTIVE_FIELDS if msg.HasField(name)}


def objective_out(settings: dict[str, int]) -> pb.ScheduleObjective:
    return pb.ScheduleObjective(**settings)


def kpis_out(k: ScheduleKpis) -> pb.ScheduleKpis:
    return pb.ScheduleKpis(
        placed=k.placed,
        unplaced=k.unplaced,
        in_window_share=_share(k.in_window_share),
        mean_deviation_days=_share(k.mean_deviation_days),
        chair_utilisation=_share(k.chair_utilisation),
        peak_concurrent_chairs=k.peak_concurrent_chairs,
        minutes_past_closing=k.minutes_past_closing,
        total_deviation_days=k.total_deviation_days,
        series_dropped=k.series_dropped,
        mean_lateness_days=_share(k.mean_lateness_days),
        max_lateness_days=k.max_lateness_days,
        on_due_day_share=_share(k.on_due_day_share),
        usual_weekday_share=_share(k.usual_weekday_share),
        usual_start_share=_share(k.usual_start_share),
        usual_chair_share=_share(k.usual_chair_share),
        daily_utilisation_spread=_share(k.daily_utilisation_spread),
        peak_starts_per_slot=k.peak_starts_per_slot,
        mean_daily_peak_starts=_share(k.mean_daily_peak_starts),
        expected_overtime_minutes=_share(k.expected_overtime_minutes),
        expected_overtime_worst_day=_share(k.expected_overtime_worst_day),
    )


def terms_out(terms: tuple[ObjectiveTerm, ...]) -> list[pb.ObjectiveTerm]:
    return [
        pb.ObjectiveTerm(name=t.name, value=_share(t.value), cost=_share(t.cost)) for t in terms
    ]


def _number(value: float | None) -> str:
    return "" if value is None else _share(value)


def planned_out(planned: Planned) -> pb.PlanScheduleResponse:
    result = planned.result
    requests = {r.id: r for r in planned.problem.requests}
    proposals = []
    for p in sorted(result.placements, key=lambda p: (p.day, p.start_minute, p.chair_id)):
        need = planned.needs[p.request_id]
        fit = Fit(p.chair_id, p.start_minute, p.end_minute, 0, 0)
        slot = slot_out(
            p.day, fit, requests[p.request_id].due_day, planned.site.zone, need.chair_minutes
        )
        if p.request_id in planned.stock_short:
            slot.stock_short = True
            slot.stock_note = planned.stock_short[p.request_id]
        proposals.append(
            pb.ProposedAppointment(
                therapy_plan_id=need.plan.id,
                patient_id=need.plan.patient_id,
                course=COURSE[need.item.course.value],
                course_day=need.item.course_day,
                slot=slot,
                appointment_id=planned.booked.get(p.request_id, ""),
            )
        )
    unplaced = [
        pb.Unplaced(
            therapy_plan_id=request_id.split(":")[0],
            course_day=int(request_id.split(":")[1]),
            reason=reason,
            stock_product_id=planned.stock_limited.get(request_id, ""),
        )
        for request_id, reason in [*planned.closed_early, *result.unplaced]
    ]
    return pb.PlanScheduleResponse(
        proposals=proposals,
        unplaced=unplaced,
        kpis=kpis_out(result.kpis),
        greedy_kpis=kpis_out(planned.baseline.kpis),
        solver_status=result.status,
        objective=_number(result.objective),
        best_bound=_number(result.best_bound),
        solve_seconds=_number(result.solve_seconds),
        stock_checked=planned.stock_checked,
        objective_terms=terms_out(result.terms),
        greedy_objective=_number(sum(t.cost for t in planned.baseline_terms)),
        greedy_objective_terms=terms_out(planned.baseline_terms),
        gap=_number(result.gap),
        notes=list(result.notes),
    )


def _span(kind: str, start: int, end: int) -> pb.BoardItem:
    return pb.BoardItem(
        kind=kind,
        local_start=from_time_of_day(wall_time(start)),
        local_end=from_time_of_day(wall_time(end)),
    )


def board_out(board: Board, now: dt.datetime) -> pb.GetChairBoardResponse:
    """Each chair's day as a timeline: appointments, holds and blocks, FREE spans between."""
    capacity = board.day.capacity
    reply = pb.GetChairBoardResponse(kpis=kpis_out(board.kpis))
    if capacity is None:
        return reply
    reply.open.CopyFrom(from_time_of_day(wall_time(capacity.open_minute)))
    reply.close.CopyFrom(from_time_of_day(wall_time(capacity.close_minute)))
    for chair_id in capacity.chairs:
        busy: list[tuple[int, int, pb.BoardItem]] = []
        for row in board.appointments:
            if row.chair_id != chair_id:
                continue
            kind = "HOLD" if row.status is AppointmentStatus.PENDING else "APPOINTMENT"
            busy.append(
                (
                    row.start_minute,
                    row.end_minute,
                    pb.BoardItem(kind=kind, appointment=appointment_out(row, now)),
                )
            )
        for chair, start, end in capacity.chair_blocks:
            if chair == chair_id:
                busy.append((start, end, pb.BoardItem(kind="BLOCK", detail="not in service")))
        busy.sort(key=lambda item: item[0])
        items: list[pb.BoardItem] = []
        cursor = capacity.open_minute
        for start, end, item in busy:
            if start > cursor:
                items.append(_span("FREE", cursor, start))
            item.local_start.CopyFrom(from_time_of_day(wall_time(start)))
            item.local_end.CopyFrom(from_time_of_day(wall_time(end)))
            items.append(item)
            cursor = max(cursor, end)
        if cursor < capacity.close_minute:
            items.append(_span("FREE", cursor, capacity.close_minute))
        reply.chairs.append(
            pb.ChairTimeline(
                chair_id=chair_id,
                display_name=board.chair_names.get(chair_id, ""),
                items=items,
            )
        )
    return reply
