"""PlanSchedule and the chair board: the stored state of a site's horizon as a
ScheduleProblem for the optimiser and its greedy baseline (domain/optimiser.py, greedy.py),
and the day's timelines and KPIs a chair-board screen needs.

Stock: by default the proposals are planned regardless of stock and each is flagged
when its day's available grams cannot cover it. With ``skip_without_stock`` the inventory is
asked first (every product of the due infusions, over their windows) and its per-day grams
become the problem's stock budget, so the optimiser, the greedy baseline and the validator keep
infusions off days without stock and share a day's grams among that day's infusions. When the
inventory cannot be asked for every product, the plan is made without the budget and
``stock_checked`` is false, as FindSlots does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.scheduler.domain.appointments import Appointment, AppointmentStatus
from services.scheduler.domain.capacity import (
    DayStock,
    InfusionRequest,
    Placement,
    ScheduleKpis,
    ScheduleProblem,
    ScheduleResult,
)
from services.scheduler.domain.greedy import Board as ResourceBoard
from services.scheduler.domain.greedy import greedy
from services.scheduler.domain.habits import RECENT_VISITS, Visit, learned
from services.scheduler.domain.objective import (
    ObjectiveTerm,
    objective_with,
    terms,
    validate_objective,
)
from services.scheduler.domain.optimiser import solve
from services.scheduler.domain.plans import PlanStatus
from services.scheduler.domain.schedule_kpis import kpis
from services.scheduler.domain.sites import Site
from services.scheduler.store import appointments as store
from services.scheduler.store import repository as repo
from services.scheduler.store.codec import plan_of
from services.scheduler.usecases.bookings import Bookings, DayPlan, Need, site_rules
from services.scheduler.usecases.records import Records
from services.scheduler.usecases.regimens import check_plan_allows_booking

MAX_HORIZON_DAYS = 92  # the longest horizon one PlanSchedule call plans: a quarter
MAX_TIME_LIMIT_SECONDS = 120
HABIT_DAYS = 365  # habits are learned from the fulfilled visits of the last year

Available = dict[str, dict[dt.date, Decimal]]  # product → day → grams (InventoryStock)
# product → day → (grams available, grams expiring unused at its start)
Figures = dict[str, dict[dt.date, tuple[Decimal, Decimal]]]


def _budget(figures: Figures) -> tuple[DayStock, ...]:
    return tuple(
        DayStock(product, day, grams, expiring)
        for product, days in sorted(figures.items())
        for day, (grams, expiring) in sorted(days.items())
    )


def _grams(figures: Figures) -> Available:
    return {p: {d: grams for d, (grams, _) in days.items()} for p, days in figures.items()}


def _stock_limited(problem: ScheduleProblem, result: ScheduleResult) -> dict[str, str]:
    """Unplaced request → its product, when that product's stock left after the placements
    falls short of its dose on at least one open day of its window."""
    if problem.stock is None:
        return {}
    requests = {r.id: r for r in problem.requests}
    board = ResourceBoard(problem)
    for p in result.placements:
        board.place(requests[p.request_id], board.index[p.day], p.start_minute, p.chair_id)
    out: dict[str, str] = {}
    for request_id, _ in result.unplaced:
        r = requests[request_id]
        if r.grams > 0 and any(not board.stock_ok(r, i) for i in board.window_days(r)):
            out[request_id] = r.product_id
    return out


@dataclass(frozen=True)
class Planned:
    site: Site
    problem: ScheduleProblem
    needs: dict[str, Need]  # request id → what it books
    closed_early: list[tuple[str, str]]  # (request id, reason): never reached the solver
    result: ScheduleResult
    baseline: ScheduleResult
    booked: dict[str, str]  # request id → appointment id (COMMIT mode)
    stock_short: dict[str, str] = dataclasses.field(default_factory=dict)  # request → note
    stock_checked: bool = False
    # skip_without_stock: request → the product whose stock kept it off a day of its window
    stock_limited: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def baseline_terms(self) -> tuple[ObjectiveTerm, ...]:
        """The greedy baseline on the proposal's objective, term by term."""
        return terms(self.problem, self.baseline.placements)


@dataclass(frozen=True)
class Board:
    day: DayPlan
    appointments: list[Appointment]
    chair_names: dict[str, str]
    kpis: ScheduleKpis


class Schedules:
    def __init__(self, db: Database, clock: Clock, records: Records, bookings: Bookings) -> None:
        self.db = db
        self.clock = clock
        self.records = records
        self.bookings = bookings

    def problem(
        self,
        session: Session,
        site_id: str,
        start: dt.date | None,
        horizon: int,
        objective: Mapping[str, int] | None = None,
    ) -> tuple[Site, ScheduleProblem, dict[str, Need], list[tuple[str, str]]]:
        """The site's horizon as a problem; ``objective``: this call's weights over the
        site's."""
        if not 1 <= horizon <= MAX_HORIZON_DAYS:
            raise InvalidArgument(
                [FieldViolation("horizon_days", f"must be 1 to {MAX_HORIZON_DAYS} days")]
            )
        site = repo.site_from_row(repo.site_row(session, site_id))
        validate_objective(objective or {}, "objective").raise_if_any()
        settings = {**site.schedule_objective, **(objective or {})}
        today = site.local_today(self.clock.now())
        first = max(start or today, today)
        last = first + dt.timedelta(days=horizon - 1)
        days = []
        day = first
        while day <= last:
            plan_day = self.bookings.day_plan(session, site, day)
            if plan_day.capacity is not None:
                days.append(plan_day.capacity)
            day += dt.timedelta(days=1)
        now = self.clock.now()
        fixed = tuple(store.fixed_on(session, site.id, first, last, now))
        pairs = repo.plans_with_versions(session, site.id, PlanStatus.ACTIVE.value)
        plans = [plan_of(row, v) for row, v in pairs]
        by_id = {p.id: p for p in plans}
        requests: list[InfusionRequest] = []
        needs: dict[str, Need] = {}
        early: list[tuple[str, str]] = []
        visits = store.recent_fulfilled(
            session,
            site.id,
            {p.patient_id for p in plans},
            today - dt.timedelta(days=HABIT_DAYS),
            RECENT_VISITS,
        )
        for item in self.records.due_items(session, plans, today):
            if item.booked_appointment_id:
                continue
            request_id = f"{item.plan_id}:{item.course_day}"
            earliest, latest = max(item.window_start, first), min(item.window_end, last)
            if item.window_start > last:
                continue  # due after the horizon: not this plan's business yet
            if earliest > latest:
                early.append((request_id, f"its window closed on {item.window_end}"))
                continue
            plan = by_id[item.plan_id]
            if plan.home_administration:
                continue  # given at home: no chair to plan
            try:
                need = self.bookings.need(plan, item, site)
            except FailedPrecondition as unknown:  # e.g. a product with no rate schedule
                early.append((request_id, unknown.message))
                continue
            try:  # the plan's authorisation and payer caps on the day it is due
                check_plan_allows_booking(
                    session,
                    plan,
                    need.product_id,
                    max(item.due_date, earliest),
                    need.dose_grams,
                    "",
                    self.clock.now(),
                )
            except FailedPrecondition as refused:
                early.append((request_id, refused.message))
                continue
            needs[request_id] = need
            seen = [
                Visit(r.local_date, r.start_minute, r.chair_id)
                for r in visits.get(plan.patient_id, [])
            ]
            usual = plan.usual.over(learned(seen))
            # an induction's days, or a dose split over consecutive days: one series
            course = item.course_day >= 1
            requests.append(
                InfusionRequest(
                    id=request_id,
                    patient_id=plan.patient_id,
                    duration_minutes=need.chair_minutes,
                    due_day=item.due_date,
                    earliest_day=earliest,
                    latest_day=latest,
                    series_id=plan.id if course else "",
                    series_index=item.course_day - 1 if course else 0,
                    usual_chair=usual.chair_id,
                    usual_start_minute=usual.start_minute,
                    usual_weekday=usual.weekday,
                    product_id=need.product_id,
                    grams=need.dose_grams,
                    product_name=need.product_brand or need.product_id,
                )
            )
        problem = ScheduleProblem(
            site_rules(site),
            tuple(days),
            fixed,
            tuple(requests),
            objective=objective_with(settings),
        )
        return site, problem, needs, early

    def plan(
        self,
        session: Session,
        site_id: str,
        start: dt.date | None,
        horizon: int,
        commit: bool,
        time_limit: float,
        seed: int,
        skip_without_stock: bool = False,
        objective: Mapping[str, int] | None = None,
    ) -> Planned:
        if not 0 < time_limit <= MAX_TIME_LIMIT_SECONDS:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "time_limit_seconds", f"must be 1 to {MAX_TIME_LIMIT_SECONDS} seconds"
                    )
                ]
            )
        site, problem, needs, early = self.problem(session, site_id, start, horizon, objective)
        figures: Figures | None = None
        if skip_without_stock:
            figures = self._available(site, problem)
            if figures is not None:
                problem = dataclasses.replace(problem, stock=_budget(figures))
        baseline = greedy(problem)
        result = solve(problem, time_limit, seed)
        booked: dict[str, str] = {}
        if commit:
            days = sorted({p.day for p in result.placements})
            store.lock_days(session, site.id, days)
            for p in sorted(result.placements, key=lambda p: (p.day, p.start_minute)):
                row = self.bookings.place(
                    session,
                    site,
                    needs[p.request_id],
                    p.chair_id,
                    p.day,
                    dt.time(p.start_minute // 60, p.start_minute % 60),
                    AppointmentStatus.BOOKED,
                    None,
                    series_id=needs[p.request_id].plan.id
                    if needs[p.request_id].item.course_day >= 1
                    else "",
                )
                booked[p.request_id] = row.id
        short: dict[str, str]
        if skip_without_stock:
            # not checked (inventory down, no stock site, nothing due): nothing flagged or
            # held back, as FindSlots; checked even when nothing could be placed
            checked = figures is not None
            short = self._stock(site, needs, result, _grams(figures))[0] if figures else {}
            limited = _stock_limited(problem, result)
        else:
            short, checked = self._stock(site, needs, result)
            limited = {}
        return Planned(
            site, problem, needs, early, result, baseline, booked, short, checked, limited
        )

    def _available(self, site: Site, problem: ScheduleProblem) -> Figures | None:
        """Grams (and expiring grams) per product and day over the requests' windows, or None
        when the inventory cannot say for one of the products (then nothing is held against
        stock)."""
        stock = self.bookings.stock
        if stock is None or not problem.requests:
            return None
        first = min(r.earliest_day for r in problem.requests)
        last = max(r.latest_day for r in problem.requests)
        out: Figures = {}
        for product in sorted({r.product_id for r in problem.requests}):
            days = stock.days(site.id, product, first, last)
            if days is None:
                return None
            out[product] = days
        return out

    def _stock(
        self,
        site: Site,
        needs: dict[str, Need],
        result: ScheduleResult,
        known: Available | None = None,
    ) -> tuple[dict[str, str], bool]:
        """Each placed infusion whose day the site's stock cannot cover (as FindSlots judges
        it: each infusion against the day's available grams, not the proposals together).
        ``known``: grams already read from the inventory (skip_without_stock)."""
        stock = self.bookings.stock
        if (known is None and stock is None) or not result.placements:
            return {}, False
        first = min(p.day for p in result.placements)
        last = max(p.day for p in result.placements)
        short: dict[str, str] = {}
        for product in sorted({needs[p.request_id].product_id for p in result.placements}):
            if known is not None:
                available: dict[dt.date, Decimal] | None = known.get(product, {})
            else:
                assert stock is not None
                available = stock.available(site.id, product, first, last)
            if available is None:
                return {}, False
            for p in result.placements:
                need = needs[p.request_id]
                grams = available.get(p.day, Decimal(0))
                if need.product_id == product and grams < need.dose_grams:
                    short[p.request_id] = (
                        f"{need.product_brand or product}: {grams.normalize():f} g in date and "
                        f"unreserved on {p.day}; the dose is {need.dose_grams} g"
                    )
        return short, True

    def propose(
        self,
        site_id: str,
        start: dt.date | None,
        horizon: int,
        time_limit: float,
        seed: int,
        skip_without_stock: bool = False,
        objective: Mapping[str, int] | None = None,
    ) -> Planned:
        """PROPOSE mode: the planning in a read transaction, so nothing of it is written."""
        with self.db.read() as session:
            return self.plan(
                session,
                site_id,
                start,
                horizon,
                False,
                time_limit,
                seed,
                skip_without_stock,
                objective,
            )

    def board(self, site_id: str, day: dt.date) -> Board:
        with self.db.read() as session:
            site = repo.site_from_row(repo.site_row(session, site_id))
            plan_day = self.bookings.day_plan(session, site, day)
            rows = store.active_on(
                session, site.id, day, day, self.clock.now(), with_reminders=True
            )
            names = {c.id: c.display_name for c in store.active_chairs(session, site.id)}
            windows = {}
            for row in rows:
                if row.plan_id not in windows:
                    plan = self.records.load_plan(session, row.plan_id)
                    windows[row.plan_id] = (plan.window_days_early, plan.window_days_late)
            appointments = [store.appointment_of(r) for r in rows]
        requests = tuple(
            InfusionRequest(
                id=r.id,
                patient_id=r.patient_id,
                duration_minutes=r.chair_minutes,
                due_day=r.due_date,
                earliest_day=r.due_date - dt.timedelta(days=windows[r.plan_id][0]),
                latest_day=r.due_date + dt.timedelta(days=windows[r.plan_id][1]),
            )
            for r in rows
        )
        placements = [
            Placement(r.id, r.local_date, r.chair_id, r.start_minute, r.end_minute) for r in rows
        ]
        capacity = (plan_day.capacity,) if plan_day.capacity else ()
        problem = ScheduleProblem(site_rules(site), capacity, (), requests)
        return Board(plan_day, appointments, names, kpis(problem, placements))
