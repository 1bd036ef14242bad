"""A site's schedule planned by the scheduler's optimiser (PlanSchedule), as rows a person
reads: each proposed infusion with its day, times, chair and patient by name, what could not be
placed and why, and how good the plan is (the solver's status, the objective against the greedy
schedule's, the gap to the proven bound). Free of HTTP and of the terminal, so the command line
and a page can show the same thing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from dataclasses import dataclass

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import from_date, to_date
from services.console import reads, views
from services.console.backend import UserCalls, pages

MAX_HORIZON_DAYS = 92  # PlanSchedule's own limit
MAX_TIME_LIMIT_SECONDS = 120


@dataclass(frozen=True)
class Proposed:
    date: dt.date
    start: str
    end: str
    chair: str
    patient: str
    plan: str
    course_day: int
    days_from_due: int
    stock_short: str  # the forecast's note when the day lacks stock, else ""
    appointment_id: str  # set when the plan was committed
    chair_id: str
    start_minutes: int
    end_minutes: int


@dataclass(frozen=True)
class NotPlaced:
    plan: str
    course_day: int
    reason: str


@dataclass(frozen=True)
class Planned:
    committed: bool
    proposals: list[Proposed]
    unplaced: list[NotPlaced]
    solver_status: str
    objective: str
    greedy_objective: str
    gap: str
    solve_seconds: str
    stock_checked: bool
    notes: list[str]


def plan_schedule(
    calls: UserCalls,
    site_id: str,
    first: dt.date,
    days: int,
    *,
    commit: bool,
    time_limit_seconds: int,
    skip_without_stock: bool,
    request_id: str,
) -> Planned:
    """PlanSchedule for ``days`` days from ``first``: proposals only, or booked with
    ``commit`` (``request_id`` makes a retried commit book nothing twice)."""
    answer = calls.scheduler.PlanSchedule(
        pb.PlanScheduleRequest(
            site_id=site_id,
            start_date=from_date(first),
            horizon_days=days,
            mode=pb.PLAN_MODE_COMMIT if commit else pb.PLAN_MODE_PROPOSE,
            time_limit_seconds=time_limit_seconds,
            skip_without_stock=skip_without_stock,
            request_id=request_id,
        )
    )
    chairs = {
        c.id: c.display_name or c.id
        for c in pages(
            lambda token: calls.scheduler.ListChairs(
                pb.ListChairsRequest(site_id=site_id, page_size=reads.MAX_PAGE, page_token=token)
            ),
            "chairs",
        )
    }
    names = reads.patient_names(calls, (p.patient_id for p in answer.proposals))
    proposals = sorted(
        (
            Proposed(
                date=to_date(p.slot.local_date),
                start=views.clock(reads.minutes(p.slot.local_start)),
                end=views.clock(reads.minutes(p.slot.local_end)),
                chair=chairs.get(p.slot.chair_id, p.slot.chair_id),
                patient=names.get(p.patient_id, p.patient_id),
                plan=p.therapy_plan_id,
                course_day=p.course_day,
                days_from_due=p.slot.days_from_due,
                stock_short=p.slot.stock_note if p.slot.stock_short else "",
                appointment_id=p.appointment_id,
                chair_id=p.slot.chair_id,
                start_minutes=reads.minutes(p.slot.local_start),
                end_minutes=reads.minutes(p.slot.local_end),
            )
            for p in answer.proposals
        ),
        key=lambda p: (p.date, p.start, p.chair),
    )
    return Planned(
        committed=commit,
        proposals=proposals,
        unplaced=[NotPlaced(u.therapy_plan_id, u.course_day, u.reason) for u in answer.unplaced],
        solver_status=answer.solver_status,
        objective=answer.objective,
        greedy_objective=answer.greedy_objective,
        gap=answer.gap,
        solve_seconds=answer.solve_seconds,
        stock_checked=answer.stock_checked,
        notes=list(answer.notes),
    )


def fingerprint(planned: Planned) -> str:
    """What was proposed, in a few characters: the page that shows a proposal sends it back
    with "book these", so the booking can say whether the optimiser booked what the person saw
    (the same input gives the same schedule; a booking made in between changes the input)."""
    key = sorted(
        f"{p.plan}/{p.course_day}/{p.date}/{p.start}/{p.chair_id}" for p in planned.proposals
    )
    return hashlib.sha256("\n".join(key).encode()).hexdigest()[:16]


def boards_with_proposals(
    calls: UserCalls, site: pb.Site, planned: Planned
) -> list[tuple[dt.date, reads.Board, int]]:
    """Each day with proposals: the day's chair board as booked, with the proposed infusions
    not booked yet drawn on their chairs as "proposed" blocks, and how many there are."""
    days: dict[dt.date, list[Proposed]] = {}
    for p in planned.proposals:
        days.setdefault(p.date, []).append(p)
    # booked ones (a committed plan) are on the board already, as appointments
    out = []
    for day, proposed in sorted(days.items()):
        board = reads.chair_board(calls, site, day)
        extra: dict[str, list[reads.Block]] = {}
        for p in proposed:
            if p.appointment_id:
                continue
            interval = views.Interval(p.start_minutes, p.end_minutes)
            placed = views.place(interval, board.axis)
            extra.setdefault(p.chair_id, []).append(
                reads.Block(
                    appointment_id="",
                    patient=p.patient,
                    product="",
                    dose=f"course day {p.course_day}" if p.course_day else "",
                    status="proposed",
                    start=p.start,
                    end=p.end,
                    left=placed.left,
                    width=placed.width,
                    kind="PROPOSED",
                )
            )
        rows = [
            dataclasses.replace(row, blocks=[*row.blocks, *extra.get(row.chair_id, [])])
            for row in board.rows
        ]
        out.append((day, dataclasses.replace(board, rows=rows), len(proposed)))
    return out
