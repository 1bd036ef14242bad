"""When a plan's outcome review is due (docs/clinical-rules.md#outcome-reviews).

Continued treatment depends on showing it works: effectiveness is assessed by 6 months and then
at least yearly, and treatment stops if it does not. So the first review falls 6 months after
therapy starts, each decision sets the next 12 months later, a stop ends the schedule, and a
switch of route (IV ↔ SC or HyQvia) brings the review forward to 6 months into the new route if
that is earlier. A new regimen version does not move it: the review judges the therapy, not the
latest adjustment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from services.scheduler.domain.regimens.calendar import add_months

FIRST_REVIEW_MONTHS = 6
REVIEW_EVERY_MONTHS = 12
ROUTE_SWITCH_MONTHS = 6
DUE_FROM_DAYS = 30  # listed as due from 30 days before


class Decision(StrEnum):
    CONTINUE = "CONTINUE"
    ADJUST = "ADJUST"
    TRIAL_REDUCTION = "TRIAL_REDUCTION"
    STOP = "STOP"


@dataclass(frozen=True)
class ReviewDecision:
    date: dt.date
    decision: Decision


@dataclass(frozen=True)
class RouteSwitch:
    first_new_route_date: dt.date


class ReviewState(StrEnum):
    NOT_YET = "NOT_YET"
    DUE = "DUE"  # from 30 days before the due date, to the due date itself
    OVERDUE = "OVERDUE"
    ENDED = "ENDED"  # after a stop: a restart is a new start


@dataclass(frozen=True)
class ReviewMonths:
    """The months to the first review and between reviews (an organisation may set its own;
    the defaults are docs/clinical-rules.md#outcome-reviews)."""

    first: int = FIRST_REVIEW_MONTHS
    every: int = REVIEW_EVERY_MONTHS

    def __post_init__(self) -> None:
        if not (1 <= self.first <= 24 and 1 <= self.every <= 24):
            raise ValueError("review months must be 1 to 24")


@dataclass(frozen=True)
class ReviewPolicies:
    """The default months and any organisation's own."""

    default: ReviewMonths = ReviewMonths()
    by_organisation: tuple[tuple[str, ReviewMonths], ...] = ()

    def of(self, organisation_id: str) -> ReviewMonths:
        return dict(self.by_organisation).get(organisation_id, self.default)


DEFAULT_REVIEW_POLICIES = ReviewPolicies()


@dataclass(frozen=True)
class ReviewSchedule:
    due: dt.date | None
    explanation: tuple[str, ...]


def review_due(
    therapy_start: dt.date,
    events: Iterable[ReviewDecision | RouteSwitch],
    months: ReviewMonths = ReviewMonths(),
) -> ReviewSchedule:
    """Replays the decisions and route switches in date order from the therapy's start."""
    anchor = "(docs/clinical-rules.md#outcome-reviews)"
    due: dt.date | None = add_months(therapy_start, months.first)
    why = [f"First review: start {therapy_start} + {months.first} months = {due} {anchor}."]

    def when(event: ReviewDecision | RouteSwitch) -> dt.date:
        return event.date if isinstance(event, ReviewDecision) else event.first_new_route_date

    for event in sorted(events, key=when):
        if due is None:
            break
        if isinstance(event, ReviewDecision):
            if event.decision is Decision.STOP:
                due = None
                why.append(f"Stopped on {event.date}: no further review.")
            else:
                due = add_months(event.date, months.every)
                why.append(
                    f"{event.decision.value.lower()} decided on {event.date}: next review "
                    f"+ {months.every} months = {due}."
                )
        else:
            switched = add_months(event.first_new_route_date, ROUTE_SWITCH_MONTHS)
            if switched < due:
                why.append(
                    f"Route switched, first new-route dose {event.first_new_route_date}: "
                    f"+ 6 months = {switched}, earlier than {due}."
                )
                due = switched
    return ReviewSchedule(due, tuple(why))


def review_state(due: dt.date | None, today: dt.date) -> ReviewState:
    if due is None:
        return ReviewState.ENDED
    if today > due:
        return ReviewState.OVERDUE
    if (due - today).days <= DUE_FROM_DAYS:
        return ReviewState.DUE
    return ReviewState.NOT_YET
