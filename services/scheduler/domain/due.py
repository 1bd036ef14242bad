"""When a plan's next infusion is due, and its tolerance window
(docs/clinical-rules.md#next-due-date, #due-window).

Rule, in order:
1. An induction course not yet completed comes first: its days fall on consecutive days from
   the plan's start (or from the course's first given day once it has begun).
2. After an induction course, the first maintenance dose is due one interval after the
   course's first day (docs/clinical-rules.md#next-due-date), unless a maintenance dose has
   been given since.
3. Otherwise the next dose is due one interval after the last administration (a dose given
   before the plan was entered counts: the plan's ``last_infusion_date``). That re-anchors the
   cadence on the day the infusion was actually given; a plan that keeps its
   original cadence counts the interval from the last infusion's due date instead, and the
   item says how far that infusion drifted from its due date and whether that was outside the
   window.
4. A plan with no history and no induction is due on its start date: nothing has been given
   yet to add an interval to, so the start date is the first dose's date.
5. A version on a new route (docs/regimens.md, "Regimen conversion") counts only the doses
   given from its regimen start date. Its ramp-up, if any, comes first: step n + 1 is due its
   gap after step n as given (the first on the start date), with the step's own dose; then
   rule 3 at the steady interval. With several infusions an interval (``infusion_days``, e.g.
   days 0, 2 and 4 of each week), the next one is the first pattern day after the last given,
   counted from the start date.
6. A maintenance dose split over consecutive days (``infusion_days`` 0, 1, … n − 1, by
   ProposeRegimenAdjustment's split over days, docs/clinical-rules.md#split-over-days) is a
   course like an induction's: its days carry course days 1…n and are due together, on
   consecutive days; once day k is given, days k + 1… follow it day by day; the next course is
   due one interval after the course's first day (its due date with ``keep_cadence``). A dose
   given as one day (course day 0, before the split) counts as a whole course.
The window is [due − days early, due + days late]; an item is overdue when its window closed
before the reference day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

DEFAULT_WINDOW_DAYS = 4  # ±4 days: docs/clinical-rules.md#due-window


class CourseKind(StrEnum):
    MAINTENANCE = "MAINTENANCE"
    INDUCTION = "INDUCTION"


@dataclass(frozen=True)
class Administration:
    given_on: dt.date
    course: CourseKind
    due_on: dt.date | None = None  # the due date it was booked for, when known
    course_day: int = 0  # 1…n within a course of several days; 0 for a one-day dose


@dataclass(frozen=True)
class DueSpec:
    plan_id: str
    plan_version: int
    patient_id: str
    product_id: str
    start_date: dt.date
    interval_days: int
    window_days_early: int = DEFAULT_WINDOW_DAYS
    window_days_late: int = DEFAULT_WINDOW_DAYS
    induction_days: int = 0
    keep_cadence: bool = False
    # rule 5: (day from start_date, grams) of each ramp-up dose; days of the interval;
    # the first day whose doses count
    ramp: tuple[tuple[int, Decimal], ...] = ()
    infusion_days: tuple[int, ...] = ()
    history_from: dt.date | None = None


@dataclass(frozen=True)
class DueItem:
    plan_id: str
    plan_version: int
    patient_id: str
    product_id: str
    course: CourseKind
    course_day: int
    due_date: dt.date
    window_start: dt.date
    window_end: dt.date
    overdue: bool
    drift_days: int = 0
    drifted: bool = False
    booked_appointment_id: str = ""
    ramp_step: int = 0  # 1-based step of a ramp-up; 0 outside one
    dose_grams: Decimal | None = None  # a ramp-up step's dose


def due_infusions(
    spec: DueSpec, history: Sequence[Administration], today: dt.date
) -> list[DueItem]:
    """The next due infusion(s) of one plan: every remaining induction day, or one dose."""
    if spec.history_from is not None:
        history = [a for a in history if a.given_on >= spec.history_from]
    induction = sorted(
        a.given_on
        for a in history
        if a.course is CourseKind.INDUCTION and a.given_on >= spec.start_date
    )
    maintenance = sorted(
        (a for a in history if a.course is CourseKind.MAINTENANCE), key=lambda a: a.given_on
    )

    def item(
        course: CourseKind,
        day: int,
        due: dt.date,
        drift: int = 0,
        ramp_step: int = 0,
        grams: Decimal | None = None,
    ) -> DueItem:
        start = due - dt.timedelta(days=spec.window_days_early)
        end = due + dt.timedelta(days=spec.window_days_late)
        return DueItem(
            plan_id=spec.plan_id,
            plan_version=spec.plan_version,
            patient_id=spec.patient_id,
            product_id=spec.product_id,
            course=course,
            course_day=day,
            due_date=due,
            window_start=start,
            window_end=end,
            overdue=end < today,
            drift_days=drift,
            drifted=not -spec.window_days_early <= drift <= spec.window_days_late,
            ramp_step=ramp_step,
            dose_grams=grams,
        )

    if spec.induction_days and len(induction) < spec.induction_days:
        first = induction[0] if induction else spec.start_date
        next_day = induction[-1] + dt.timedelta(days=1) if induction else first
        return [
            item(CourseKind.INDUCTION, day, next_day + dt.timedelta(days=offset))
            for offset, day in enumerate(range(len(induction) + 1, spec.induction_days + 1))
        ]
    interval = dt.timedelta(days=spec.interval_days)
    if induction:
        maintenance = [a for a in maintenance if a.given_on >= induction[0]]
    if spec.ramp and not induction:
        given = [a.given_on for a in maintenance if a.given_on >= spec.start_date]
        step = len(given)
        if step < len(spec.ramp):
            day, grams = spec.ramp[step]
            due = (
                spec.start_date + dt.timedelta(days=day)
                if not given
                else given[-1] + dt.timedelta(days=day - spec.ramp[step - 1][0])
            )
            return [item(CourseKind.MAINTENANCE, 0, due, ramp_step=step + 1, grams=grams)]
    if split_days(spec.infusion_days) > 1:
        start = induction[0] + interval if induction else spec.start_date
        return _split_course(spec, maintenance, start, item)
    if len(spec.infusion_days) > 1 and maintenance and not induction:
        last_day = maintenance[-1].given_on
        if last_day >= spec.start_date:
            offset = (last_day - spec.start_date).days
            cycle, position = divmod(offset, spec.interval_days)
            later = [d for d in spec.infusion_days if d > position]
            nxt = (
                cycle * spec.interval_days + later[0]
                if later
                else (cycle + 1) * spec.interval_days + spec.infusion_days[0]
            )
            return [item(CourseKind.MAINTENANCE, 0, spec.start_date + dt.timedelta(days=nxt))]
    if maintenance:
        last = maintenance[-1]
        drift = (last.given_on - last.due_on).days if last.due_on else 0
        anchor = last.due_on if spec.keep_cadence and last.due_on else last.given_on
        return [item(CourseKind.MAINTENANCE, 0, anchor + interval, drift)]
    if induction:
        return [item(CourseKind.MAINTENANCE, 0, induction[0] + interval)]
    return [item(CourseKind.MAINTENANCE, 0, spec.start_date)]


def split_days(infusion_days: Sequence[int]) -> int:
    """How many consecutive days one dose is split over: n for days 0, 1, … n − 1, else 1
    (one day, or SC infusions spread over the week)."""
    n = len(infusion_days)
    return n if n > 1 and tuple(infusion_days) == tuple(range(n)) else 1


def _split_course(
    spec: DueSpec,
    maintenance: Sequence[Administration],
    start: dt.date,
    item: Callable[..., DueItem],
) -> list[DueItem]:
    """Rule 6: the rest of the course under way, or the whole next one (the first from
    ``start`` when none has been given)."""
    n = split_days(spec.infusion_days)
    if not maintenance:
        return [
            item(CourseKind.MAINTENANCE, day, start + dt.timedelta(days=day - 1))
            for day in range(1, n + 1)
        ]
    last = maintenance[-1]
    if 1 <= last.course_day < n:
        return [
            item(
                CourseKind.MAINTENANCE,
                day,
                last.given_on + dt.timedelta(days=day - last.course_day),
            )
            for day in range(last.course_day + 1, n + 1)
        ]
    first = last
    if last.course_day > 1:  # the course's first day, as given (days before it counted back)
        starts = [a for a in maintenance if a.course_day == 1 and a.given_on <= last.given_on]
        first = (
            starts[-1]
            if starts
            else Administration(last.given_on - dt.timedelta(days=last.course_day - 1), last.course)
        )
    drift = (first.given_on - first.due_on).days if first.due_on else 0
    anchor = first.due_on if spec.keep_cadence and first.due_on else first.given_on
    due = anchor + dt.timedelta(days=spec.interval_days)
    return [
        item(
            CourseKind.MAINTENANCE, day, due + dt.timedelta(days=day - 1), drift if day == 1 else 0
        )
        for day in range(1, n + 1)
    ]
