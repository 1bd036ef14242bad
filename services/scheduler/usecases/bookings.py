"""Booking use cases: slot search, holds, bookings, the appointment
lifecycle, induction series and the chair board.

Every booking of a site-day takes that day's lock first (a transaction-level advisory lock
on PostgreSQL, store/appointments.lock_days; the database write lock on SQLite), then re-reads
the day and checks the rules of domain/slots.py: two clients racing for one chair-minute, or
for the last nurse, queue on the lock and the second finds the conflict and gets ABORTED
naming it.

The hot paths (a booking by plan, chair and time; a move; the lifecycle's moves) read and
write through store/appointments' set-based statements (``booking_inputs``, ``booking_day``,
``BatchedAppointments``): one joined read, one read of the day, and one statement writing
what the appointment decided with its reminders, outbox rows and the idempotency response.
Holds, series and PlanSchedule place through the ORM (``place``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.convert import decimal_str
from services.common.db import Database, flush_deferred
from services.common.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from services.common.etag import check_etag
from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.common.scope import current_scope
from services.scheduler.adapters.inventory_stock import InventoryStock
from services.scheduler.domain.appointments import (
    Appointment,
    AppointmentStatus,
    Booked,
    Cancelled,
    Completion,
    Event,
    Fulfilled,
    MarkedNoShow,
    Moved,
    Parties,
    Placement,
    public_holidays,
    timing,
)
from services.scheduler.domain.capacity import DayCapacity, FixedBooking, SiteRules
from services.scheduler.domain.dosing import DoseDay, DoseResult
from services.scheduler.domain.due import CourseKind, DueItem
from services.scheduler.domain.plans import PlanStatus, TherapyPlan
from services.scheduler.domain.reminders import DEFAULT_REMINDER_OFFSETS_HOURS
from services.scheduler.domain.sites import ChairBlock, Site
from services.scheduler.domain.slots import CLOSED, HOURS, DayBook, Fit, rank, wall_minutes
from services.scheduler.store import appointments as store
from services.scheduler.store import repository as repo
from services.scheduler.store.appointments import BatchedAppointments, SqlAppointments
from services.scheduler.store.codec import plan_of
from services.scheduler.store.events import Event as OutboxEvent
from services.scheduler.store.events import addressed, board_changed
from services.scheduler.usecases.doses import Doses
from services.scheduler.usecases.records import Records, due_items_from
from services.scheduler.usecases.regimens import check_plan_allows_booking, home_refusal

S = AppointmentStatus
MAX_SLOT_RESULTS = 100
MAX_SEARCH_DAYS = 92


@dataclass(frozen=True)
class Need:
    """One infusion to place: which plan item, how long, how much."""

    plan: TherapyPlan
    item: DueItem
    chair_minutes: int
    dose_grams: Decimal
    product_id: str
    product_brand: str = ""


@dataclass(frozen=True)
class SlotSearch:
    need: Need
    slots: list[tuple[dt.date, Fit]]
    day_limits: list[tuple[dt.date, str, str]]
    stock_short: dict[dt.date, str] = dataclasses.field(default_factory=dict)
    stock_checked: bool = False


@dataclass(frozen=True)
class DayPlan:
    """A site day as the slot rules see it."""

    site: Site
    day: dt.date
    capacity: DayCapacity | None  # None: closed
    closed_reason: str
    book: DayBook | None


def site_rules(site: Site) -> SiteRules:
    c = site.capacity
    return SiteRules(c.nurse_ratio, c.start_limit, c.turnover_minutes, c.slot_minutes)


class AppointmentStore(Protocol):
    """What the appointment lifecycle needs of storage within one transaction. The database's
    is store/appointments.SqlAppointments; the fast tests pass one kept in memory."""

    def get(self, appointment_id: str) -> Appointment:
        """Locked for the rest of the transaction; NOT_FOUND if absent or out of scope."""
        ...

    def add(self, appointment: Appointment) -> None: ...

    def save(self, appointment: Appointment) -> None: ...

    def current(self, appointment_id: str) -> Appointment:
        """As stored now, with the reminders saving it scheduled or cancelled."""
        ...

    def zone(self, site_id: str) -> ZoneInfo: ...

    def parties(self, appointment: Appointment) -> Parties: ...

    def write(self, events: Sequence[OutboxEvent], now: dt.datetime) -> None:
        """Into the outbox, in the transaction."""
        ...

    def schedule_reminders(
        self, appointment_id: str, zone: ZoneInfo, offsets: Sequence[float], now: dt.datetime
    ) -> None: ...

    def cancel_reminders(self, appointment_id: str, now: dt.datetime) -> None: ...


class Bookings:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        records: Records,
        doses: Doses,
        stock: InventoryStock | None = None,
        reminder_offsets_hours: Sequence[float] = DEFAULT_REMINDER_OFFSETS_HOURS,
        appointments: Callable[[Session], AppointmentStore] = BatchedAppointments,
        new_booking: Callable[
            [Session, dict[str, ZoneInfo]], AppointmentStore
        ] = BatchedAppointments,
    ) -> None:
        self.db = db
        self.clock = clock
        self.records = records
        self.doses = doses
        self.stock = stock
        self.reminder_offsets_hours = tuple(reminder_offsets_hours)
        self.appointments = appointments
        self.new_booking = new_booking  # a new booking's store, written in one statement

    # --- the day --------------------------------------------------------------------------------

    def day_plan(self, session: Session, site: Site, day: dt.date, exclude: str = "") -> DayPlan:
        """Opening hours, chairs, blocks, nurses and the day's active bookings."""
        if _closed(site, day):
            return self._day_plan_of(site, day, [], [], [])
        chairs = [c.id for c in store.active_chairs(session, site.id)]
        if not chairs:
            return self._day_plan_of(site, day, chairs, [], [])
        zone = site.zone
        midnight = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
        next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
        blocks = [
            (b.chair_id, b.start_at, b.end_at)
            for b in store.blocks_between(session, site.id, midnight, next_midnight)
        ]
        now = self.clock.now()
        bookings = [b for b in store.fixed_on(session, site.id, day, day, now) if b.id != exclude]
        return self._day_plan_of(site, day, chairs, blocks, bookings)

    def _day_plan_of(
        self,
        site: Site,
        day: dt.date,
        chairs: Sequence[str],
        chair_blocks: Sequence[tuple[str, dt.datetime, dt.datetime]],
        bookings: Sequence[FixedBooking],
    ) -> DayPlan:
        """The day from what was read: the site's chairs in service, the chair blocks crossing
        the day, its active bookings. Several opening intervals on one day become one span
        with the gaps blocked on every chair."""
        closed = _closed(site, day)
        if closed:
            return DayPlan(site, day, None, closed, None)
        hours = sorted(
            (h for h in site.opening_hours if h.weekday == day.isoweekday()),
            key=lambda h: h.open,
        )
        if not chairs:
            return DayPlan(site, day, None, "no chair in service", None)
        open_minute, close_minute = wall_minutes(hours[0].open), wall_minutes(hours[-1].close)
        if hours[-1].close == dt.time.max.replace(microsecond=0):
            close_minute = 24 * 60
        blocks: list[tuple[str, int, int]] = []
        for before, after in zip(hours, hours[1:], strict=False):
            gap = (wall_minutes(before.close), wall_minutes(after.open))
            blocks.extend((c, *gap) for c in chairs)
        zone = site.zone
        midnight = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
        next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
        for chair_id, start_at, end_at in chair_blocks:
            start = max(start_at, midnight).astimezone(zone)
            end = min(end_at, next_midnight).astimezone(zone)
            end_minute = 24 * 60 if end.date() > day else end.hour * 60 + end.minute
            blocks.append((chair_id, start.hour * 60 + start.minute, end_minute))
        shifts = tuple(
            (wall_minutes(s.start), wall_minutes(s.end), s.nurses)
            for s in site.capacity.nurse_shifts
            if s.weekday == day.isoweekday()
        )
        capacity = DayCapacity(
            day=day,
            open_minute=open_minute,
            close_minute=close_minute,
            chairs=tuple(chairs),
            chair_blocks=tuple(blocks),
            nurse_shifts=shifts,
        )
        return DayPlan(site, day, capacity, "", DayBook(capacity, site_rules(site), list(bookings)))

    # --- what to book ---------------------------------------------------------------------------

    def open_items(self, session: Session, plan: TherapyPlan) -> list[DueItem]:
        """The plan's due items with the appointment (if any) that covers each."""
        site = repo.site_from_row(repo.site_row(session, plan.site_id))
        today = site.local_today(self.clock.now())
        return self.records.due_items(session, [plan], today)

    def need(self, plan: TherapyPlan, item: DueItem, site: Site) -> Need:
        """Chair minutes (rounded up to the site's booking grid, docs/clinical-rules.md#chair-time)
        and the dose for the item's day, from CalculateDose's rules."""
        course = CourseKind(item.course)
        result = self.doses.calculate(plan.id, plan.version, item.due_date, course)
        return self._need_of(plan, item, site, result)

    def dose_of(self, plan: TherapyPlan, item: DueItem) -> tuple[str, Decimal]:
        """The product and grams of a due item, without chair time (the forecast of unbooked
        doses: a dose given at home needs no chair, and its stock leaves the pharmacy all the
        same)."""
        result = self.doses.calculate(plan.id, plan.version, item.due_date, CourseKind(item.course))
        day = _day_of(item, result)
        grams = item.dose_grams if item.dose_grams is not None else day.vials.dose_grams
        return result.product.id, grams

    def _need_of(self, plan: TherapyPlan, item: DueItem, site: Site, result: DoseResult) -> Need:
        day = _day_of(item, result)
        if day.chair is None:
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "CHAIR_TIME_KNOWN",
                        f"therapyPlans/{plan.id}",
                        f"{result.product.brand} has no rate schedule, so its chair time "
                        "is unknown: it cannot be booked by time",
                    )
                ]
            )
        grid = site.capacity.slot_minutes
        minutes = -(-day.chair.chair_minutes // grid) * grid
        # a ramp-up step's partial dose (docs/regimens.md); the chair time stays the full dose's
        grams = item.dose_grams if item.dose_grams is not None else day.vials.dose_grams
        return Need(plan, item, minutes, grams, result.product.id, result.product.brand)

    def _plan(self, session: Session, plan_id: str, field: str) -> TherapyPlan:
        if not plan_id:
            raise InvalidArgument([FieldViolation(field, "is required")])
        plan = self.records.load_plan(session, plan_id)
        if plan.status is not PlanStatus.ACTIVE:
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "PLAN_ACTIVE", f"therapyPlans/{plan_id}", f"the plan is {plan.status}"
                    )
                ]
            )
        if plan.home_administration:  # no chair: docs/regimens.md, "Home administration"
            raise home_refusal(plan.id)
        return plan

    def _next_item(self, session: Session, plan: TherapyPlan) -> DueItem:
        return _first_free(plan, self.open_items(session, plan))

    # --- slot search ----------------------------------------------------------------------------

    def find_slots(
        self,
        plan_id: str,
        site_id: str,
        first: dt.date | None,
        last: dt.date | None,
        morning: bool | None,
        same_chair: bool,
        max_results: int,
        skip_without_stock: bool = False,
    ) -> SlotSearch:
        with self.db.read() as session:
            plan = self._plan(session, plan_id, "therapy_plan_id")
            site = repo.site_from_row(repo.site_row(session, site_id or plan.site_id))
            item = self._next_item(session, plan)
            need = self.need(plan, item, site)
            first = first or item.window_start
            last = last or item.window_end
            today = site.local_today(self.clock.now())
            first = max(first, today)
            if last < first:
                raise InvalidArgument(
                    [FieldViolation("end_date", f"the range ends before {first}")]
                )
            if (last - first).days >= MAX_SEARCH_DAYS:
                raise InvalidArgument(
                    [FieldViolation("end_date", f"search at most {MAX_SEARCH_DAYS} days")]
                )
            last_chair = ""
            if same_chair:
                previous = store.last_for_patient(session, plan.patient_id)
                last_chair = previous.chair_id if previous else ""
            found: list[tuple[dt.date, Fit]] = []
            limits: list[tuple[dt.date, str, str]] = []
            day = first
            while day <= last:
                today_plan = self.day_plan(session, site, day)
                if today_plan.book is None:
                    limits.append((day, CLOSED, today_plan.closed_reason))
                else:
                    fits, limit, text = today_plan.book.fits(need.chair_minutes, plan.patient_id)
                    if fits:
                        found.extend((day, f) for f in fits)
                    else:
                        limits.append((day, limit, text))
                day += dt.timedelta(days=1)
        ranked = rank(found, item.due_date, morning, last_chair)
        available = (
            self.stock.available(site.id, need.product_id, first, last) if self.stock else None
        )
        short: dict[dt.date, str] = {}
        for day in sorted({d for d, _ in found}) if available is not None else []:
            grams = (available or {}).get(day, Decimal(0))
            if grams < need.dose_grams:
                short[day] = (
                    f"{need.product_brand or need.product_id}: {grams.normalize():f} g in date "
                    f"and unreserved at the site on {day}; the dose is {need.dose_grams} g"
                )
        if skip_without_stock and available is not None:
            ranked = [(d, f) for d, f in ranked if d not in short]
        return SlotSearch(need, ranked[: max_results or 10], limits, short, available is not None)

    # --- booking --------------------------------------------------------------------------------

    def hold(
        self, session: Session, plan_id: str, chair_id: str, day: dt.date, start: dt.time
    ) -> Appointment:
        plan = self._plan(session, plan_id, "therapy_plan_id")
        site = repo.site_from_row(repo.site_row(session, plan.site_id))
        need = self.need(plan, self._next_item(session, plan), site)
        expires = self.clock.now() + dt.timedelta(minutes=site.capacity.hold_minutes)
        return self.place(session, site, need, chair_id, day, start, S.PENDING, expires)

    def book(
        self,
        session: Session,
        hold_id: str,
        plan_id: str,
        chair_id: str,
        day: dt.date | None,
        start: dt.time | None,
    ) -> Appointment:
        if hold_id:
            book = self.appointments(session)
            appointment = book.get(hold_id)
            return self._save(book, appointment, appointment.confirm(self.clock.now()))
        missing = [
            FieldViolation(name, "is required (or give hold_id)")
            for name, value in (
                ("therapy_plan_id", plan_id),
                ("chair_id", chair_id),
                ("local_date", day),
                ("local_start", start),
            )
            if not value
        ]
        if missing:
            raise InvalidArgument(missing)
        assert day is not None and start is not None
        return self._book_new(session, plan_id, chair_id, day, start)

    def _book_new(
        self, session: Session, plan_id: str, chair_id: str, day: dt.date, start: dt.time
    ) -> Appointment:
        """A booking by plan, chair and time, as few round trips as the rules allow: one
        joined read of the plan, patient, measurements, site and chair that also takes the
        site-day lock (PostgreSQL), one read of the day, then the booking, its reminders, its
        outbox row and the idempotency response in one statement
        (store.BatchedAppointments). The same checks, in the same order, as ``place``."""
        inputs = store.booking_inputs(session, plan_id, chair_id, day)
        if inputs is None or not current_scope().sees(inputs.site.organisation_id, inputs.site.id):
            raise NotFound("therapy plan", plan_id)
        current_scope().check("patient", inputs.patient.id, inputs.patient.organisation_id)
        plan = plan_of(inputs.plan, inputs.version)
        if plan.status is not PlanStatus.ACTIVE:
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "PLAN_ACTIVE", f"therapyPlans/{plan_id}", f"the plan is {plan.status}"
                    )
                ]
            )
        site = repo.site_from_row(inputs.site)
        if plan.site_id != site.id:  # the version names another site than the row: rare
            return self._book_placed(session, plan, chair_id, day, start)
        now = self.clock.now()
        zone = site.zone
        midnight = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
        next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
        read = store.booking_day(session, site.id, day, midnight, next_midnight, plan.id, now)
        item = _first_free(
            plan, due_items_from([plan], read.plan_appointments, site.local_today(now))
        )
        need = self._need_of(plan, item, site, self._dose(plan, inputs, item))
        chair = inputs.chair
        self._check_chair(
            site, chair_id, chair.site_id if chair else None, bool(chair and chair.active)
        )
        self.check_before_booking(session, need, site, day, covered=inputs.covered)
        plan_day = self._day_plan_of(site, day, read.chairs, read.blocks, read.bookings)
        book = self.new_booking(session, {site.id: zone})
        return self._write_placement(
            book, site, need, plan_day, chair_id, day, start, S.BOOKED, None, "", None
        )

    def _book_placed(
        self, session: Session, plan: TherapyPlan, chair_id: str, day: dt.date, start: dt.time
    ) -> Appointment:
        site = repo.site_from_row(repo.site_row(session, plan.site_id))
        need = self.need(plan, self._next_item(session, plan), site)
        return self.place(session, site, need, chair_id, day, start, S.BOOKED, None)

    def check_before_booking(
        self,
        session: Session,
        need: Need,
        site: Site,
        day: dt.date,
        *,
        moving: str = "",
        covered: bool = True,
    ) -> None:
        """The one place for checks a booking must pass before it is written, besides the
        slot rules: every way a booking is made (``book``, ``reschedule``, and ``place`` for
        holds, series and PlanSchedule; a hold confirmed was checked when it was placed) calls
        it, after the plan, the dose and the chair are known and the site-day lock is held.
        Raises to refuse: a plan given at home, or its authorisations and payer caps
        (docs/regimens.md, "Authorisations and payer caps"). ``moving``: the appointment being
        moved (not counted against the caps); ``covered`` False: the caller's read found
        neither an authorisation nor caps, so there is nothing to read."""
        if not covered and not need.plan.home_administration:
            return
        check_plan_allows_booking(
            session, need.plan, need.product_id, day, need.dose_grams, moving, self.clock.now()
        )

    def book_course(
        self,
        session: Session,
        plan_id: str,
        first: dt.date | None,
        morning: bool | None,
    ) -> list[Appointment]:
        """Every remaining induction day on consecutive open days, one transaction: the same
        chair and start time on every day where possible, else any fit per day."""
        plan = self._plan(session, plan_id, "therapy_plan_id")
        site = repo.site_from_row(repo.site_row(session, plan.site_id))
        items = [
            i
            for i in self.open_items(session, plan)
            if i.course == CourseKind.INDUCTION and not i.booked_appointment_id
        ]
        if not items:
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "INDUCTION_DUE",
                        f"therapyPlans/{plan.id}",
                        "the plan has no unbooked induction days",
                    )
                ]
            )
        needs = [self.need(plan, i, site) for i in items]
        start_day = max(first or items[0].due_date, site.local_today(self.clock.now()))
        for offset in range(MAX_SEARCH_DAYS):
            days = self._open_run(session, site, start_day + dt.timedelta(days=offset), len(items))
            if days is None:
                continue
            plans = [self.day_plan(session, site, d) for d in days]
            choice = _common_fit(plans, needs, plan.patient_id, morning)
            if choice is None:
                continue
            series = new_id()
            store.lock_days(session, site.id, days)
            return [
                self.place(session, site, n, chair, d, start, S.BOOKED, None, series_id=series)
                for n, d, (chair, start) in zip(needs, days, choice, strict=True)
            ]
        raise FailedPrecondition(
            [
                PreconditionViolation(
                    "SERIES_FITS",
                    f"therapyPlans/{plan.id}",
                    f"no {len(items)} consecutive open days from {start_day} within "
                    f"{MAX_SEARCH_DAYS} days have room for the course",
                )
            ]
        )

    def _open_run(
        self, session: Session, site: Site, day: dt.date, count: int
    ) -> list[dt.date] | None:
        """``count`` consecutive OPEN days starting at ``day`` (closed days are skipped
        between them, as "consecutive open days" means), or None if ``day`` is closed."""
        if self.day_plan(session, site, day).capacity is None:
            return None
        days = [day]
        probe = day
        while len(days) < count:
            probe += dt.timedelta(days=1)
            if (probe - day).days > 3 * count + 7:
                return None
            if self.day_plan(session, site, probe).capacity is not None:
                days.append(probe)
        return days

    def place(
        self,
        session: Session,
        site: Site,
        need: Need,
        chair_id: str,
        day: dt.date,
        start: dt.time,
        status: S,
        hold_expires: dt.datetime | None,
        series_id: str = "",
        existing: Appointment | None = None,
    ) -> Appointment:
        """Lock the day, re-read it, check every rule, and write (or move) the booking: the
        way a booking is written (series, reschedule, PlanSchedule, holds; ``book`` reads
        and writes the same in fewer statements)."""
        chair = repo.chair_row(session, chair_id) if chair_id else None
        self._check_chair(
            site, chair_id, chair.site_id if chair else None, bool(chair and chair.active)
        )
        store.lock_days(session, site.id, [day])
        self.check_before_booking(
            session, need, site, day, moving=existing.id if existing is not None else ""
        )
        plan_day = self.day_plan(session, site, day, exclude=existing.id if existing else "")
        return self._write_placement(
            SqlAppointments(session),
            site,
            need,
            plan_day,
            chair_id,
            day,
            start,
            status,
            hold_expires,
            series_id,
            existing,
        )

    @staticmethod
    def _check_chair(site: Site, chair_id: str, chair_site: str | None, active: bool) -> None:
        if chair_site is None or chair_site != site.id:
            raise InvalidArgument([FieldViolation("chair_id", f"no chair {chair_id!r} at site")])
        if not active:
            raise FailedPrecondition(
                [PreconditionViolation("CHAIR_ACTIVE", f"chairs/{chair_id}", "out of service")]
            )

    def _write_placement(
        self,
        book: AppointmentStore,
        site: Site,
        need: Need,
        plan_day: DayPlan,
        chair_id: str,
        day: dt.date,
        start: dt.time,
        status: S,
        hold_expires: dt.datetime | None,
        series_id: str,
        existing: Appointment | None,
    ) -> Appointment:
        """Check the slot rules on the locked day and write the booking (or the move)."""
        if plan_day.book is None:
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "SITE_OPEN",
                        f"sites/{site.id}",
                        f"{day} is closed: {plan_day.closed_reason}",
                    )
                ]
            )
        minute = wall_minutes(start)
        conflicts = plan_day.book.check(chair_id, minute, need.chair_minutes, need.plan.patient_id)
        if any(c.rule == HOURS for c in conflicts):  # the caller's mistake, not a race
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "OPENING_HOURS",
                        f"sites/{site.id}",
                        f"{need.chair_minutes} chair minutes from {start:%H:%M} on {day} "
                        f"do not fit the opening hours "
                        f"({plan_day.book.day.open_minute // 60:02d}:"
                        f"{plan_day.book.day.open_minute % 60:02d}–"
                        f"{plan_day.book.day.close_minute // 60:02d}:"
                        f"{plan_day.book.day.close_minute % 60:02d}) "
                        f"on the {site.capacity.slot_minutes}-minute grid",
                    )
                ]
            )
        if conflicts:
            first = conflicts[0]
            raise Aborted(
                "; ".join(c.detail for c in conflicts),
                metadata={
                    "rule": first.rule,
                    "conflicting_appointment_id": first.other_id,
                    "rules": ",".join(c.rule for c in conflicts),
                },
                reason="SLOT_TAKEN",
            )
        placement = Placement(
            site_id=site.id,
            patient_id=need.plan.patient_id,
            plan_id=need.plan.id,
            plan_version=need.plan.version,
            chair_id=chair_id,
            local_date=day,
            timing=timing(day, minute, need.chair_minutes, site.zone),
            chair_minutes=need.chair_minutes,
            course=need.item.course,
            course_day=need.item.course_day,
            due_date=need.item.due_date,
            dose_grams=need.dose_grams,
            product_id=need.product_id,
            series_id=series_id,
            hold_expires_at=hold_expires,
        )
        now = self.clock.now()
        if existing is not None:
            return self._save(book, existing, existing.move_to(placement, now))
        appointment, events = Appointment.placed(new_id(), placement, status, now)
        return self._save(book, appointment, events, new=True)

    # --- the lifecycle: load, let the appointment decide, save, write what it raised -----------

    def check_in(self, session: Session, appointment_id: str) -> Appointment:
        book = self.appointments(session)
        appointment = book.get(appointment_id)
        zone = book.zone(appointment.site_id)
        return self._save(book, appointment, appointment.check_in(self.clock.now(), zone))

    def start(self, session: Session, appointment_id: str, started: dt.datetime) -> Appointment:
        book = self.appointments(session)
        appointment = book.get(appointment_id)
        zone = book.zone(appointment.site_id)
        return self._save(book, appointment, appointment.start(self.clock.now(), zone, started))

    def mark_no_show(self, session: Session, appointment_id: str) -> Appointment:
        book = self.appointments(session)
        appointment = book.get(appointment_id)
        return self._save(book, appointment, appointment.mark_no_show(self.clock.now()))

    def cancel(self, session: Session, appointment_id: str, reason: str) -> Appointment:
        book = self.appointments(session)
        appointment = book.get(appointment_id)
        return self._save(book, appointment, appointment.cancel(self.clock.now(), reason))

    def complete(
        self, session: Session, appointment_id: str, given: Completion
    ) -> tuple[Appointment, DueItem | None]:
        """The infusion given; with the plan's next due item, for the nurse to book."""
        given.check()
        book = self.appointments(session)
        appointment = book.get(appointment_id)
        zone = book.zone(appointment.site_id)
        saved = self._save(book, appointment, appointment.complete(self.clock.now(), zone, given))
        flush_deferred(session)  # the due list below reads the appointment as fulfilled
        plan = self.records.load_plan(session, saved.plan_id)
        items = self.open_items(session, plan)
        return saved, (items[0] if items else None)

    def reschedule(
        self,
        session: Session,
        appointment_id: str,
        chair_id: str,
        day: dt.date,
        start: dt.time,
        etag: str,
    ) -> Appointment:
        """Atomic: the old slot is given up only if the new one is taken (one transaction).
        The appointment (locked), its reminders, site and patient in one read, both days'
        locks, the plan's inputs and the new day in one read each, then the move, its
        reminders, outbox rows and the idempotency response in one statement."""
        book = self.appointments(session)
        appointment = book.get(appointment_id)
        if etag:
            check_etag(
                etag, appointment.revision, field="etag", resource=f"appointment {appointment.id}"
            )
        now = self.clock.now()
        status = appointment.check_movable(now)
        chair_id = chair_id or appointment.chair_id
        store.lock_days(session, appointment.site_id, sorted({appointment.local_date, day}))
        inputs = store.booking_inputs(session, appointment.plan_id, chair_id, day, lock=False)
        if inputs is None:
            raise NotFound("therapy plan", appointment.plan_id)
        plan = plan_of(inputs.plan, inputs.version)
        site = repo.site_from_row(
            inputs.site
            if inputs.site.id == appointment.site_id
            else repo.site_row(session, appointment.site_id)
        )
        item = DueItem(
            plan_id=plan.id,
            plan_version=plan.version,
            patient_id=plan.patient_id,
            product_id=plan.product_id,
            course=appointment.course,
            course_day=appointment.course_day,
            due_date=appointment.due_date,
            window_start=appointment.due_date,
            window_end=appointment.due_date,
            overdue=False,
        )
        dose = self._dose(plan, inputs, item)
        need = dataclasses.replace(self._need_of(plan, item, site, dose), item=item)
        chair = inputs.chair
        self._check_chair(
            site, chair_id, chair.site_id if chair else None, bool(chair and chair.active)
        )
        self.check_before_booking(
            session, need, site, day, moving=appointment.id, covered=inputs.covered
        )
        zone = site.zone
        midnight = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
        next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
        read = store.booking_day(session, site.id, day, midnight, next_midnight, plan.id, now)
        others = [b for b in read.bookings if b.id != appointment.id]
        plan_day = self._day_plan_of(site, day, read.chairs, read.blocks, others)
        return self._write_placement(
            book,
            site,
            need,
            plan_day,
            chair_id,
            day,
            start,
            status,
            appointment.hold_expires_at,
            "",
            appointment,
        )

    def _dose(self, plan: TherapyPlan, inputs: store.BookingInputs, item: DueItem) -> DoseResult:
        return self.doses.calculate_loaded(
            plan,
            repo.patient_from_row(inputs.patient),
            inputs.patient.revision,
            [repo.measurement_from_row(m) for m in inputs.measurements],
            len(inputs.measurements) < store.RECENT_MEASUREMENTS,
            item.due_date,
            CourseKind(item.course),
        )

    def _save(
        self,
        book: AppointmentStore,
        appointment: Appointment,
        events: list[Event],
        *,
        new: bool = False,
    ) -> Appointment:
        """Store the appointment, then what its events set going, in its transaction: the
        inventory's reservation (through the outbox), the patient's reminders and the
        APPOINTMENT_CHANGED notice; and, for every change of any kind (a hold too), the
        BOARD_CHANGED signal the site's chair boards refresh on. Returns the appointment as
        stored (with its reminders)."""
        if new:
            book.add(appointment)
        else:
            book.save(appointment)
        now = self.clock.now()
        offsets = self.reminder_offsets_hours
        a = appointment
        book.write([_board(a, book, events)], now)
        for event in events:
            if isinstance(event, Booked):
                book.write([_stock(a, "RESERVE_STOCK")], now)
                book.schedule_reminders(a.id, book.zone(a.site_id), offsets, now)
            elif isinstance(event, Moved):
                book.write(_changed(a, book.parties(a), event.previous_start, False), now)
                book.write([_stock(a, "AMEND_RESERVATION")], now)
                book.cancel_reminders(a.id, now)
                book.schedule_reminders(a.id, book.zone(a.site_id), offsets, now)
            elif isinstance(event, Cancelled):
                book.write(_changed(a, book.parties(a), a.start_at, True), now)
                book.write([_stock(a, "RELEASE_RESERVATION")], now)
                book.cancel_reminders(a.id, now)
            elif isinstance(event, MarkedNoShow):
                book.write([_stock(a, "RELEASE_RESERVATION")], now)
                book.cancel_reminders(a.id, now)
            elif isinstance(event, Fulfilled):
                dispensed = {
                    "grams_given": decimal_str(event.grams_given),
                    "scanned_lots": event.scanned_lots,
                }
                book.write([_stock(a, "DISPENSE", **dispensed)], now)
        return book.current(a.id)

    # --- chair blocks ---------------------------------------------------------------------------

    def create_block(
        self, session: Session, chair_id: str, start: dt.datetime, end: dt.datetime, reason: str
    ) -> ChairBlock:
        chair = repo.chair_row(session, chair_id) if chair_id else None
        if chair is None:
            raise InvalidArgument([FieldViolation("chair_block.chair_id", "no such chair")])
        if end <= start:
            raise InvalidArgument(
                [FieldViolation("chair_block.end_time", "must be after start_time")]
            )
        block = ChairBlock(new_id(), chair.site_id, chair.id, start, end, reason)
        store.add_block(session, block, self.clock.now())
        return block

    def list_blocks(self, site_id: str, first: dt.date, last: dt.date) -> list[ChairBlock]:
        with self.db.read() as session:
            site = repo.site_from_row(repo.site_row(session, site_id))
            start = dt.datetime.combine(first, dt.time(0), tzinfo=site.zone)
            end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(0), tzinfo=site.zone)
            return [store.block_of(r) for r in store.blocks_between(session, site.id, start, end)]

    def delete_block(self, session: Session, block_id: str) -> None:
        store.delete_block(session, block_id)

    # --- reads ----------------------------------------------------------------------------------

    def get(self, appointment_id: str) -> Appointment:
        with self.db.read() as session:
            return store.get(session, appointment_id)

    def list_appointments(
        self,
        site_id: str,
        patient_id: str,
        first: dt.date | None,
        last: dt.date | None,
        status: S | None,
        page: PageRequest,
    ) -> list[Appointment]:
        with self.db.read() as session:
            rows = store.list_appointments(session, site_id, patient_id, first, last, status, page)
            return [store.appointment_of(r) for r in rows]

    def site(self, site_id: str) -> Site:
        with self.db.read() as session:
            return repo.site_from_row(repo.site_row(session, site_id))


def _day_of(item: DueItem, result: DoseResult) -> DoseDay:
    """The day of the dose calculation a due item is (an induction's course day, else the
    first)."""
    course = CourseKind(item.course)
    index = max(item.course_day - 1, 0) if course is CourseKind.INDUCTION else 0
    return result.days[min(index, len(result.days) - 1)]


def _stock(a: Appointment, topic: str, **extra: Any) -> OutboxEvent:
    """What the inventory owes this booking (DISPENSE carries what was given), written to the
    outbox with the booking, so a booking never fails because the pharmacy service is down;
    adapters/inventory_relay.py calls the inventory, and a refusal marks the booking AT_RISK.
    Keyed by the revision that raised it: a retried call writes nothing twice."""
    payload = {
        "appointment_id": a.id,
        "site_id": a.site_id,
        "patient_id": a.patient_id,
        "product_id": a.product_id,
        "grams": decimal_str(a.dose_grams),
        "needed_on": a.local_date.isoformat(),
        **extra,
    }
    return OutboxEvent(topic, f"{topic}:{a.id}:{a.revision}", payload)


def _board(a: Appointment, book: AppointmentStore, events: Sequence[object]) -> OutboxEvent:
    """The BOARD_CHANGED signal of this change (a move names the day it left as well, so the
    board showing that day refreshes too)."""
    previous = next((e.previous_start for e in events if isinstance(e, Moved)), None)
    return board_changed(
        a.id,
        a.site_id,
        a.local_date,
        a.status.value,
        a.revision,
        a.stock_status,
        previous_local_date=(
            previous.astimezone(book.zone(a.site_id)).date() if previous is not None else None
        ),
    )


def _changed(
    a: Appointment, parties: Parties, previous: dt.datetime, cancelled: bool
) -> list[OutboxEvent]:
    """APPOINTMENT_CHANGED to the site's staff and to the patient (if they have a notify
    subscriber)."""
    payload = {
        "appointment_id": a.id,
        "patient_id": a.patient_id,
        "site_id": a.site_id,
        "site_name": parties.site_name,
        "previous_start_time": previous.isoformat(),
        "time_zone": parties.time_zone,
        "cancelled": cancelled,
        "patient_name": parties.patient_name,
    }
    if not cancelled:
        payload["start_time"] = a.start_at.isoformat()
    return addressed(
        "APPOINTMENT_CHANGED",
        f"APPOINTMENT_CHANGED:{a.id}:{a.revision}",
        payload,
        parties.notify_subscriber_id,
    )


def _closed(site: Site, day: dt.date) -> str:
    """Why the site is closed on ``day`` ("" when it opens)."""
    if day in site.closure_dates:
        return "closure date"
    if day in public_holidays(site.capacity, range(day.year, day.year + 1)):
        return "public holiday"
    if not any(h.weekday == day.isoweekday() for h in site.opening_hours):
        return "not open on that weekday"
    return ""


def _first_free(plan: TherapyPlan, items: Sequence[DueItem]) -> DueItem:
    """The plan's next infusion not booked yet (NOT_BOOKED_YET when every one is)."""
    free = [i for i in items if not i.booked_appointment_id]
    if not free:
        booked = ", ".join(i.booked_appointment_id for i in items)
        raise FailedPrecondition(
            [
                PreconditionViolation(
                    "NOT_BOOKED_YET",
                    f"therapyPlans/{plan.id}",
                    f"the plan's next infusion is already booked ({booked})",
                )
            ]
        )
    return free[0]


def _common_fit(
    days: Sequence[DayPlan], needs: Sequence[Need], patient_id: str, morning: bool | None
) -> list[tuple[str, dt.time]] | None:
    """One (chair, start) per day: the same pair on every day if one fits all, else the best
    fit of each day; None if some day has no fit."""
    per_day: list[list[Fit]] = []
    for plan_day, need in zip(days, needs, strict=True):
        if plan_day.book is None:
            return None
        fits, _, _ = plan_day.book.fits(need.chair_minutes, patient_id)
        if not fits:
            return None
        ordered = [f for _, f in rank([(plan_day.day, f) for f in fits], plan_day.day, morning, "")]
        per_day.append(ordered)
    common = set.intersection(*({(f.chair_id, f.start) for f in fits} for fits in per_day))
    if common:
        chair, start = next(
            (f.chair_id, f.start) for f in per_day[0] if (f.chair_id, f.start) in common
        )
        return [(chair, dt.time(start // 60, start % 60))] * len(per_day)
    return [
        (fits[0].chair_id, dt.time(fits[0].start // 60, fits[0].start % 60)) for fits in per_day
    ]
