"""Input and output of the batch schedule optimiser; pure data, no behaviour.

Times are LOCAL wall-clock minutes from midnight of the site day, days are ``datetime.date``.
Conventions every module here follows (the optimiser, the greedy baseline, the validator):

- an infusion occupies its chair over ``[start, end)`` and the chair is cleaned for
  ``turnover_minutes`` after it, so the chair is taken over ``[start, end + turnover)``; the
  infusion itself must end by closing time, the cleaning after the last patient may run past it;
- a chair block ``(chair, start, end)`` takes the chair over ``[start, end)``: no booking's
  ``[start, end + turnover)`` may meet it;
- nurses: at every minute ``t`` the infusions running (``start <= t < end``, fixed bookings
  included) are at most ``nurses_on_duty(t) × nurse_ratio``; shifts add up where they overlap;
  a minute no shift covers has no nurse, so nothing may run then. A day with no
  ``nurse_shifts`` at all does not model nurses (no nurse or start limit that day);
- start limit: the starts in one clock quarter ``[15k, 15k + 15)`` are at most
  ``min(nurses_on_duty(t) for t in that quarter within opening hours) × start_limit``;
- starts lie on the clock grid: ``start_minute % granularity_minutes == 0``;
- an induction series is all or nothing, member ``i + 1`` on the open day right after member
  ``i``'s (consecutive entries of ``ScheduleProblem.days``);
- one infusion per patient per day, fixed bookings included;
- a request is placed only on an open day inside ``[earliest_day, latest_day]``; deviation is
  ``|day − due_day|`` in calendar days;
- stock, only when ``ScheduleProblem.stock`` is given (PlanSchedule's ``skip_without_stock``):
  a dose of a product goes only on a day with a ``DayStock`` entry for that product, and what
  is placed runs the stock down: on every entry day, the grams placed that day plus those
  placed earlier that did not come out of stock expiring in between are at most the day's
  grams (stock_rule.py has the arithmetic; placements draw the soonest-expiring stock first).
  Fixed bookings do not count: their reservations are already out of the grams given. A
  request with no grams (``grams == 0``) is not limited by stock.

The objective is not a rule: ``ScheduleProblem.objective`` (domain/objective.py) says what a
better schedule is; every module checks the rules above the same way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from services.scheduler.domain.objective import ObjectiveTerm, ScheduleObjective

START_LIMIT_SLOT_MINUTES = 15  # the start limit counts starts per clock quarter hour


@dataclass(frozen=True)
class SiteRules:
    nurse_ratio: int  # patients one nurse monitors at once (e.g. 4)
    start_limit: int  # infusion starts one nurse can set up per 15 minutes (e.g. 2)
    turnover_minutes: int  # cleaning between patients in a chair
    granularity_minutes: int = 15  # bookings start on this grid


@dataclass(frozen=True)
class DayCapacity:
    day: dt.date
    open_minute: int
    close_minute: int
    chairs: tuple[str, ...]  # chair ids usable that day
    chair_blocks: tuple[tuple[str, int, int], ...] = ()  # (chair, start, end): maintenance
    nurse_shifts: tuple[tuple[int, int, int], ...] = ()  # (start, end, nurses on duty)


@dataclass(frozen=True)
class FixedBooking:
    """An existing appointment or hold: fixed; it counts for chairs, nurses, starts, patients."""

    id: str
    patient_id: str
    chair_id: str
    day: dt.date
    start_minute: int
    end_minute: int  # chair occupied until end (turnover comes after)


@dataclass(frozen=True)
class InfusionRequest:
    """A due-but-unbooked infusion."""

    id: str
    patient_id: str
    duration_minutes: int  # chair minutes (already computed from the dose and the rate ramp)
    due_day: dt.date
    earliest_day: dt.date  # window
    latest_day: dt.date
    series_id: str = ""  # induction course: all requests of a series go on consecutive open days
    series_index: int = 0  # 0, 1, 2... order within the series
    # the patient's habits (learned from recent visits or set on the plan): soft, see objective
    usual_chair: str = ""
    usual_start_minute: int | None = None
    usual_weekday: int | None = None  # ISO weekday, Monday = 1
    product_id: str = ""  # the plan's product: whose stock the dose draws on
    grams: Decimal = Decimal(0)  # the dose, in grams of product_id
    product_name: str = ""  # for reasons a human reads (default: product_id)


@dataclass(frozen=True)
class DayStock:
    """Grams of one product in date and unreserved at the site on one day, and the grams that
    expire unused at the start of that day (lots whose last in-date day was the day before)."""

    product_id: str
    day: dt.date
    grams: Decimal
    expiring: Decimal = Decimal(0)


@dataclass(frozen=True)
class Placement:
    request_id: str
    day: dt.date
    chair_id: str
    start_minute: int
    end_minute: int


@dataclass(frozen=True)
class ScheduleProblem:
    rules: SiteRules
    days: tuple[DayCapacity, ...]  # the horizon's OPEN days only, ascending
    fixed: tuple[FixedBooking, ...]
    requests: tuple[InfusionRequest, ...]
    # None: stock is not a rule (the default). Otherwise the per-product, per-day grams of the
    # stock rule above (running down with what is placed); a day without an entry has none.
    stock: tuple[DayStock, ...] | None = None
    objective: ScheduleObjective = field(default_factory=ScheduleObjective)


@dataclass(frozen=True)
class ScheduleKpis:
    """What a coordinator compares two schedules by (domain/schedule_kpis.py computes them)."""

    placed: int
    unplaced: int
    in_window_share: float  # placed within [earliest, latest] / requests
    mean_deviation_days: float  # mean |day − due_day| over placed
    chair_utilisation: float  # occupied chair-minutes / open chair-minutes over the horizon
    peak_concurrent_chairs: int
    minutes_past_closing: int
    total_deviation_days: int = 0  # sum |day − due_day| over placed
    peak_starts_per_slot: int = 0  # most starts in one clock quarter (level loading)
    usual_chair_share: float = 0.0  # of placed requests with a usual chair: on it
    usual_start_share: float = 0.0  # ... with a usual start: within USUAL_START_KEPT_MINUTES
    usual_weekday_share: float = 0.0  # ... with a usual weekday: on it
    series_dropped: int = 0  # induction series with no member placed
    mean_lateness_days: float = 0.0  # mean max(0, day − due_day) over placed
    max_lateness_days: int = 0
    on_due_day_share: float = 0.0  # of placed: on the due day
    daily_utilisation_spread: float = 0.0  # standard deviation of the days' utilisation
    mean_daily_peak_starts: float = 0.0  # each day's busiest quarter, averaged over days
    # simulated: durations vary (lognormal, OVERTIME_DURATION_CV), each chair's next patient
    # waits for the previous one; mean over samples and open days of minutes past closing
    # until the last patient leaves
    expected_overtime_minutes: float = 0.0
    expected_overtime_worst_day: float = 0.0  # the open day with the most expected overtime


@dataclass(frozen=True)
class SolvePhase:
    """One solve: the horizon model (per round) or a day's exact re-solve."""

    name: str
    status: str
    objective: float | None
    best_bound: float | None
    seconds: float
    nodes: int = 0  # branch-and-bound nodes: the solver's deterministic measure of work


@dataclass(frozen=True)
class ScheduleResult:
    placements: tuple[Placement, ...]
    unplaced: tuple[tuple[str, str], ...]  # (request id, reason a human understands)
    status: str  # OPTIMAL, FEASIBLE, ... (greedy: "GREEDY")
    objective: float | None
    best_bound: float | None
    solve_seconds: float
    kpis: ScheduleKpis
    phases: tuple[SolvePhase, ...] = ()
    notes: tuple[str, ...] = field(default=())  # e.g. chair-assignment repairs
    terms: tuple[ObjectiveTerm, ...] = ()  # the objective, term by term (sums to objective)

    @property
    def gap(self) -> float | None:
        """(objective − bound) / objective: how far from proven optimal at most."""
        if self.objective is None or self.best_bound is None:
            return None
        if self.objective <= 0:
            return 0.0
        return max(0.0, (self.objective - self.best_bound) / self.objective)
