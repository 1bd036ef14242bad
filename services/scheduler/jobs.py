"""The scheduler's notification jobs, run by APScheduler 3 every
``SCHEDULER_JOBS_INTERVAL_SECONDS`` (default 60) when ``SCHEDULER_JOBS`` is on:

- **due scan** → INFUSION_DUE when a plan's dosing window has opened (site-local day) and
  nothing is booked for it: once per due cycle, dedupe key
  ``INFUSION_DUE:{plan}:{due_date}:{course_day}``.
- **reminders** → APPOINTMENT_REMINDER at each offset before a BOOKED appointment
  (``SCHEDULER_REMINDER_OFFSETS_HOURS``, default "72,24"), counted in the site's wall-clock
  time, dedupe key ``APPOINTMENT_REMINDER:{appointment}:{offset}h:{start}`` (``:2``... when
  an appointment moved back to a time it had before).
- **authorisations** → AUTHORISATION_EXPIRING when an active plan's active prior authorisation
  ends within 30 days (site-local day; docs/regimens.md): once per authorisation and end date
  (``plan_authorisations.expiry_notice_for``), dedupe key
  ``AUTHORISATION_EXPIRING:{authorisation}:{valid_to}``; a changed end date is noticed again.
- **missed** → MISSED_INFUSION when an appointment is still BOOKED (not checked in)
  ``SCHEDULER_MISSED_AFTER_MINUTES`` (default 30) after its start, dedupe key
  ``MISSED_INFUSION:{appointment}:{start}``.

Every body takes its time from the injected clock, never sleeps, and writes its events to the
scheduler's outbox (``scheduler_outbox``) in its own transaction; the outbox relay
(adapters/notify_relay.py) publishes them. The outbox's unique dedupe key (and notify's, behind it)
makes every body idempotent, so several replicas running the same job, or a pass repeated
after a crash, raise nothing twice.

Recipients: each event is written twice — once naming the patient's notify subscriber (when
``PatientRow.notify_subscriber_id`` is set; dedupe key + ``:patient``), once with no
subscriber ids, which notify routes to the staff who opted in to the topic for the site
(docs/notify.md, "Recipients").

Reminders are scheduled by the booking itself (store/reminders.py, in the booking's
transaction: one row per offset, visible on the appointment), cancelled by a cancellation, a
no-show or a move (which schedules the new time's), and raised here when their time comes,
only while the appointment is still booked. A reminder also expires at the appointment's
start, so one held back by the patient's quiet hours is never sent after the fact, and one
already handed to notify when the appointment is cancelled is cancelled there too. Only the
latest reminder due is sent, and only offsets whose time was still ahead at booking are
scheduled (booked 30 h ahead → the 24 h reminder only; booked an hour ahead → none).

The due scan keeps, per active plan, the next instant its due state can change by itself
(``scheduler_due_watch.next_check_at``: the local midnight its next window opens, or a hold's
expiry) and a watermark of its last pass (``scheduler_job_marks``). A pass reads only the
plans whose instant has come, plus the plans and appointments written since the watermark
(indexed on ``updated_at``, with a safety margin for transactions that commit late), so its
cost follows the number of plans coming due, not the number of plans. The very first pass
(no watermark) reads every active plan in one streamed query, as columns (the due inputs
stored with each plan version: store/due_inputs.py), each batch's appointments and home
doses by id range; plans with nothing given or booked that share their due fields and site are
evaluated once, and the watch rows go in one upsert per batch. Both passes evaluate alike
(``_evaluate``), so they find the same.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Table, or_, select
from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.db import Database
from services.common.identity import service_caller
from services.common.jobstore import ensure_job, register, start_scheduler
from services.scheduler.domain.appointments import AppointmentStatus
from services.scheduler.domain.due import Administration, CourseKind, DueItem, due_infusions
from services.scheduler.domain.plans import PlanStatus
from services.scheduler.domain.regimens.authorisations import EXPIRING_DAYS
from services.scheduler.domain.regimens.reviews import (
    DEFAULT_REVIEW_POLICIES,
    ReviewPolicies,
    ReviewState,
    review_state,
)
from services.scheduler.domain.reminders import DEFAULT_REMINDER_OFFSETS_HOURS, utc_stamp
from services.scheduler.domain.sites import Site
from services.scheduler.store import due_watch
from services.scheduler.store import reminders as reminder_store
from services.scheduler.store import repository as repo
from services.scheduler.store.due_watch import PlanFilter
from services.scheduler.store.events import (
    Event,
    addressed,
    chunks,
    upsert_insert,
    write_events,
)
from services.scheduler.store.home import doses_at_home
from services.scheduler.store.models import (
    AppointmentRow,
    DueWatchRow,
    HomeInfusionRow,
    JobMarkRow,
    PatientRow,
    PlanAuthorisationRow,
    PlanRow,
    SiteRow,
    outbox,
)
from services.scheduler.usecases.outcomes import review_schedules

log = logging.getLogger(__name__)

T = TypeVar("T")
DUE_SCAN = "due-scan"
REVIEW_SCAN = "review-scan"


@dataclass(frozen=True)
class JobSettings:
    reminder_offsets_hours: tuple[float, ...] = DEFAULT_REMINDER_OFFSETS_HOURS  # at booking
    missed_after: dt.timedelta = dt.timedelta(minutes=30)
    interval_seconds: float = 60.0
    # A missed appointment older than this is not reported any more (nor read).
    missed_lookback: dt.timedelta = dt.timedelta(days=7)
    # Writes up to this long before the last pass are read again (transactions that were
    # still open when it read).
    change_margin: dt.timedelta = dt.timedelta(minutes=10)
    chunk_size: int = 500
    # plans per batch of the first pass (no watermark), which reads every active plan
    first_pass_batch: int = 5000
    # The outcome-review scan reads every active plan; review dates move by days.
    review_scan_every: dt.timedelta = dt.timedelta(hours=1)
    # months to the first review and between reviews, per organisation
    review_policies: ReviewPolicies = DEFAULT_REVIEW_POLICIES


@dataclass(frozen=True)
class Found:
    """What a due scan found for a batch of plans: the events to write, and each plan's next
    check (None: nothing changes by itself)."""

    events: list[Event]
    plan_ids: list[str]
    checks: list[dt.datetime | None]


@dataclass(frozen=True)
class DueScan:
    examined: int
    raised: int


def read_ahead(batches: Iterator[T]) -> Iterator[T]:
    """``batches``, the next one read in a thread while the caller works on the current one
    (the database parses the next plans while this process evaluates and writes the last)."""
    with ThreadPoolExecutor(1, thread_name_prefix="due-scan-read") as pool:
        pending = pool.submit(next, batches, None)
        while (batch := pending.result()) is not None:
            pending = pool.submit(next, batches, None)
            yield batch


def local_midnight(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.UTC)


class SchedulerJobs:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: JobSettings | None = None,
        *,
        table: Table = outbox,
        scheduler: BaseScheduler | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings or JobSettings()
        self.table = table
        self.scheduler = scheduler or BackgroundScheduler(timezone="UTC")
        register("scheduler.notifications", self.run_all, service_caller("scheduler"))
        self.on_written: list[
            Callable[[], None]
        ] = []  # callables woken after a pass wrote events (the relay)

    # --- the schedule ----------------------------------------------------------------------

    def start(self, *more: Callable[[], None]) -> None:
        """Start the scheduler with this job and those ``more`` schedules (ensure_job calls)."""
        start_scheduler(self.scheduler, self.schedule, *more)

    def schedule(self) -> None:
        ensure_job(
            self.scheduler,
            "scheduler-notifications",
            IntervalTrigger(seconds=self.settings.interval_seconds),
            "scheduler.notifications",
            coalesce=True,
            max_instances=1,
        )

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def run_all(self) -> int:
        """One pass of every job; one job's failure does not stop the others."""
        written = 0
        bodies: tuple[tuple[str, Callable[[], int]], ...] = (
            ("due scan", self._due_scan_count),
            ("reminders", self.reminders),
            ("missed infusions", self.missed),
            ("outcome reviews", self.reviews),
            ("authorisations expiring", self.authorisations_expiring),
        )
        for name, body in bodies:
            try:
                written += body()
            except Exception:
                log.exception("scheduler job %s failed", name)
        if written:
            for wake in self.on_written:
                wake()
        return written

    def _due_scan_count(self) -> int:
        return self.due_scan().raised

    # --- helpers ---------------------------------------------------------------------------

    def _sites(self, session: Session, ids: Iterable[str]) -> dict[str, tuple[Site, str]]:
        rows = session.scalars(select(SiteRow).where(SiteRow.id.in_(sorted(set(ids)))))
        return {r.id: (repo.site_from_row(r), r.display_name) for r in rows}

    def _patients(self, session: Session, ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """patient id → (display name, notify subscriber id)"""
        found: dict[str, tuple[str, str]] = {}
        for part in chunks(sorted(set(ids)), 500):
            for pid, given, family, sub in session.execute(
                select(
                    PatientRow.id,
                    PatientRow.given_name,
                    PatientRow.family_name,
                    PatientRow.notify_subscriber_id,
                ).where(PatientRow.id.in_(part))
            ):
                found[pid] = (f"{given} {family}".strip(), sub or "")
        return found

    # --- INFUSION_DUE ----------------------------------------------------------------------

    def due_scan(self) -> DueScan:
        now = self.clock.now()
        with self.db.read() as session:
            mark = session.scalar(select(JobMarkRow.mark_at).where(JobMarkRow.name == DUE_SCAN))
        if mark is None:
            examined, raised = self._first_pass(now)
        else:
            examined = raised = 0
            with self.db.read() as session:
                candidates = self._candidates(session, now, mark)
            for part in chunks(sorted(candidates), self.settings.chunk_size):
                with self.db.write() as session:
                    raised += self._scan(session, list(part), now)
                examined += len(part)
        with self.db.write() as session:
            insert = upsert_insert(session)
            stmt = insert(JobMarkRow.__table__).values(name=DUE_SCAN, mark_at=now)
            session.execute(
                stmt.on_conflict_do_update(index_elements=["name"], set_={"mark_at": now})
            )
        return DueScan(examined, raised)

    def _first_pass(self, now: dt.datetime) -> tuple[int, int]:
        """Every active plan, a batch at a time in id order, each batch's appointments in one
        range read and its watch rows in one upsert. Three stages overlap: the next batch is
        read (read_ahead) while this one is evaluated and the last one written (a thread)."""
        examined = raised = 0
        with (
            self.db.read() as reader,
            ThreadPoolExecutor(1, thread_name_prefix="due-scan-write") as writer,
        ):
            written: Future[int] | None = None
            batches = due_watch.active_plan_batches(reader, self.settings.first_pass_batch)
            for plans in read_ahead(batches):
                with self.db.read() as session:
                    where = due_watch.of_plan_range(plans[0].id, plans[-1].id)
                    found = self._evaluate(session, plans, where, now)
                if written is not None:
                    raised += written.result()
                written = writer.submit(self._write, found, now)
                examined += len(plans)
            if written is not None:
                raised += written.result()
        with self.db.write() as session:
            due_watch.forget_inactive(session, now)
        return examined, raised

    def _candidates(self, session: Session, now: dt.datetime, mark: dt.datetime) -> set[str]:
        found = set(
            session.scalars(select(DueWatchRow.plan_id).where(DueWatchRow.next_check_at <= now))
        )
        since = mark - self.settings.change_margin
        found.update(session.scalars(select(PlanRow.id).where(PlanRow.updated_at > since)))
        found.update(
            session.scalars(
                select(AppointmentRow.plan_id).where(AppointmentRow.updated_at > since).distinct()
            )
        )
        found.update(  # doses given at home move the due date as completions do
            session.scalars(
                select(HomeInfusionRow.plan_id).where(HomeInfusionRow.created_at > since).distinct()
            )
        )
        return found

    def _scan(self, session: Session, plan_ids: list[str], now: dt.datetime) -> int:
        plans = due_watch.active_plans(session, plan_ids)
        active = {row.id for row in plans}
        # paused, stopped or deleted: nothing to watch until the plan is written again
        due_watch.forget(session, [p for p in plan_ids if p not in active])
        found = self._evaluate(session, plans, due_watch.of_plans(sorted(active)), now)
        return self._record(session, found, now)

    def _write(self, found: Found, now: dt.datetime) -> int:
        with self.db.write() as session:
            return self._record(session, found, now)

    def _record(self, session: Session, found: Found, now: dt.datetime) -> int:
        raised = write_events(session, self.table, found.events, now)
        due_watch.save(session, found.plan_ids, found.checks, now)
        return raised

    def _evaluate(
        self, session: Session, plans: Sequence[Any], selected: PlanFilter, now: dt.datetime
    ) -> Found:
        """INFUSION_DUE for ``plans`` (active, with their due columns) whose window is open and
        unbooked; their watch rows. ``selected`` names (at least) these plans, for reading
        their appointments and doses given at home. Reads only."""
        if not plans:
            return Found([], [], [])
        # rows unpacked as tuples (id, patient, site, version, inputs): attribute access on
        # 100,000 rows is a measurable share of the first pass
        sites = self._sites(session, {site_id for _, _, site_id, _, _ in plans})
        given: dict[str, list[Administration]] = {}
        booked: dict[tuple[str, str, int], Any] = {}
        active: set[str] | None = None  # wanted only when there are appointments
        for appt in due_watch.appointments(session, selected, now):
            if active is None:
                active = {plan_id for plan_id, _, _, _, _ in plans}
            if appt.plan_id not in active:
                continue
            if appt.status == AppointmentStatus.FULFILLED:
                given.setdefault(appt.plan_id, []).append(
                    Administration(
                        appt.local_date,
                        CourseKind(appt.course),
                        appt.due_date,
                        appt.course_day or 0,
                    )
                )
            else:
                booked[(appt.plan_id, appt.course, appt.course_day)] = appt
        for plan_id, doses in doses_at_home(session, selected(HomeInfusionRow.plan_id)).items():
            given.setdefault(plan_id, []).extend(doses)  # doses given at home count as given
        todays = {sid: site[0].local_today(now) for sid, site in sites.items()}
        midnights: dict[tuple[str, dt.date], dt.datetime] = {}
        with_history = given.keys() | {plan for plan, _, _ in booked}
        # A plan with nothing given and nothing booked is due by its due inputs and site alone:
        # plans that share them (equal inputs, equal strings) share the outcome (the first
        # pass meets thousands of such).
        alike: dict[tuple[str, str], tuple[DueItem | None, dt.datetime | None]] = {}
        notices: list[tuple[Any, DueItem]] = []
        watched: list[str] = []
        checks: list[dt.datetime | None] = []
        for row in plans:
            plan_id, _, site_id, _, inputs = row
            today = todays.get(site_id)
            if today is None:
                continue
            if plan_id in with_history:
                outcome = self._due_of(row, given, booked, today, sites[site_id][0], midnights)
            else:
                shared = alike.get((site_id, inputs))
                if shared is None:
                    shared = self._due_of(row, given, booked, today, sites[site_id][0], midnights)
                    alike[(site_id, inputs)] = shared
                outcome = shared
            notice, next_check = outcome
            if notice is not None:
                notices.append((row, notice))
            watched.append(plan_id)
            checks.append(next_check)
        patients = self._patients(session, (row.patient_id for row, _ in notices))
        events: list[Event] = []
        for row, item in notices:
            name, subscriber = patients.get(row.patient_id, ("", ""))
            payload = {
                "patient_id": row.patient_id,
                "site_id": row.site_id,
                "therapy_plan_id": row.id,
                "due_date": item.due_date.isoformat(),
                "window_opens": item.window_start.isoformat(),
                "window_closes": item.window_end.isoformat(),
                "patient_name": name,
            }
            key = f"INFUSION_DUE:{row.id}:{item.due_date.isoformat()}:{item.course_day}"
            events += addressed("INFUSION_DUE", key, payload, subscriber)
        return Found(events, watched, checks)

    @staticmethod
    def _due_of(
        row: Any,
        given: dict[str, list[Administration]],
        booked: dict[tuple[str, str, int], Any],
        today: dt.date,
        site: Site,
        midnights: dict[tuple[str, dt.date], dt.datetime],
    ) -> tuple[DueItem | None, dt.datetime | None]:
        """One plan's open unbooked item to notify (the first; the next after it is handled),
        if any, and the next instant its state can change by itself."""
        spec, history = due_watch.due_spec_of(row)
        history += given.get(row.id, [])
        wake: list[dt.datetime] = []
        notice: DueItem | None = None
        for item in due_infusions(spec, history, today):
            cover = booked.get((row.id, item.course.value, item.course_day))
            if cover is not None:
                if cover.status == AppointmentStatus.PENDING and cover.hold_expires_at:
                    wake.append(cover.hold_expires_at)  # a hold may lapse unbooked
            elif item.window_start > today:
                opens = (row.site_id, item.window_start)
                if opens not in midnights:
                    midnights[opens] = local_midnight(item.window_start, site.zone)
                wake.append(midnights[opens])
            elif notice is None:
                notice = item
        return notice, min(wake, default=None)

    # --- APPOINTMENT_REMINDER and MISSED_INFUSION -------------------------------------------

    def _booked_between(
        self, session: Session, first: dt.datetime, last: dt.datetime
    ) -> list[AppointmentRow]:
        return list(
            session.scalars(
                select(AppointmentRow)
                .where(
                    AppointmentRow.status == AppointmentStatus.BOOKED.value,
                    AppointmentRow.start_at > first,
                    AppointmentRow.start_at <= last,
                )
                .order_by(AppointmentRow.start_at, AppointmentRow.id)
            )
        )

    def _appointment_payload(
        self, row: AppointmentRow, site: tuple[Site, str], name: str
    ) -> dict[str, Any]:
        return {
            "appointment_id": row.id,
            "patient_id": row.patient_id,
            "site_id": row.site_id,
            "site_name": site[1],
            "start_time": row.start_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "time_zone": site[0].time_zone,
            "patient_name": name,
        }

    def reminders(self) -> int:
        """Raise the reminders bookings scheduled (store/reminders.py) whose time has come."""
        now = self.clock.now()
        with self.db.write() as session:
            claimed = reminder_store.claim_due(session, now)
            sites = self._sites(session, (a.site_id for a, _ in claimed))
            patients = self._patients(session, (a.patient_id for a, _ in claimed))
            events: list[Event] = []
            for row, reminder in claimed:
                name, subscriber = patients.get(row.patient_id, ("", ""))
                payload = self._appointment_payload(row, sites[row.site_id], name)
                events += addressed(
                    "APPOINTMENT_REMINDER",
                    reminder.dedupe_key,
                    payload,
                    subscriber,
                    expires_at=row.start_at,
                )
            return write_events(session, self.table, events, now)

    def missed(self) -> int:
        now = self.clock.now()
        latest = now - self.settings.missed_after
        with self.db.write() as session:
            rows = self._booked_between(session, now - self.settings.missed_lookback, latest)
            sites = self._sites(session, (r.site_id for r in rows))
            patients = self._patients(session, (r.patient_id for r in rows))
            events: list[Event] = []
            for row in rows:
                site = sites.get(row.site_id)
                if site is None:
                    continue
                name, subscriber = patients.get(row.patient_id, ("", ""))
                key = f"MISSED_INFUSION:{row.id}:{utc_stamp(row.start_at)}"
                payload = self._appointment_payload(row, site, name)
                events += addressed("MISSED_INFUSION", key, payload, subscriber)
            return write_events(session, self.table, events, now)

    # --- OUTCOME_REVIEW_DUE --------------------------------------------------------------------

    def reviews(self) -> int:
        """OUTCOME_REVIEW_DUE for each active plan whose review is due or overdue, once per
        review date (the outbox's dedupe key); a full pass at most every review_scan_every."""
        now = self.clock.now()
        with self.db.read() as session:
            mark = session.scalar(select(JobMarkRow.mark_at).where(JobMarkRow.name == REVIEW_SCAN))
            if mark is not None and now - mark < self.settings.review_scan_every:
                return 0
            plan_ids = sorted(
                session.scalars(select(PlanRow.id).where(PlanRow.status == PlanStatus.ACTIVE.value))
            )
        raised = 0
        for part in chunks(plan_ids, self.settings.chunk_size):
            with self.db.write() as session:
                raised += self._review_part(session, list(part), now)
        with self.db.write() as session:
            insert = upsert_insert(session)
            stmt = insert(JobMarkRow.__table__).values(name=REVIEW_SCAN, mark_at=now)
            session.execute(
                stmt.on_conflict_do_update(index_elements=["name"], set_={"mark_at": now})
            )
        return raised

    def _review_part(self, session: Session, plan_ids: list[str], now: dt.datetime) -> int:
        plans = list(
            session.scalars(
                select(PlanRow).where(
                    PlanRow.id.in_(plan_ids), PlanRow.status == PlanStatus.ACTIVE.value
                )
            )
        )
        schedules = review_schedules(session, plans, self.settings.review_policies)
        sites = self._sites(session, (p.site_id for p in plans))
        due: list[tuple[PlanRow, dt.date]] = []
        for plan in plans:
            schedule, site = schedules.get(plan.id), sites.get(plan.site_id)
            if schedule is None or schedule.due is None or site is None:
                continue
            state = review_state(schedule.due, site[0].local_today(now))
            if state in (ReviewState.DUE, ReviewState.OVERDUE):
                due.append((plan, schedule.due))
        patients = self._patients(session, (p.patient_id for p, _ in due))
        events: list[Event] = []
        for plan, day in due:
            name, _ = patients.get(plan.patient_id, ("", ""))
            payload = {
                "patient_id": plan.patient_id,
                "site_id": plan.site_id,
                "therapy_plan_id": plan.id,
                "due_date": day.isoformat(),
                "patient_name": name,
            }
            key = f"OUTCOME_REVIEW_DUE:{plan.id}:{day.isoformat()}"
            events += addressed("OUTCOME_REVIEW_DUE", key, payload, "")  # staff only
        return write_events(session, self.table, events, now)

    # --- AUTHORISATION_EXPIRING --------------------------------------------------------------

    def authorisations_expiring(self) -> int:
        """AUTHORISATION_EXPIRING for each active authorisation of an active plan that ends
        within EXPIRING_DAYS of the site's today, once per end date."""
        now = self.clock.now()
        # UTC days one either side of any site's local day; the exact test is per site below
        first = now.date() - dt.timedelta(days=1)
        last = now.date() + dt.timedelta(days=EXPIRING_DAYS + 1)
        with self.db.write() as session:
            rows = session.execute(
                select(PlanAuthorisationRow, PlanRow.patient_id, PlanRow.site_id)
                .join(PlanRow, PlanRow.id == PlanAuthorisationRow.plan_id)
                .where(
                    PlanAuthorisationRow.active.is_(True),
                    PlanAuthorisationRow.valid_to >= first,
                    PlanAuthorisationRow.valid_to <= last,
                    or_(
                        PlanAuthorisationRow.expiry_notice_for.is_(None),
                        PlanAuthorisationRow.expiry_notice_for != PlanAuthorisationRow.valid_to,
                    ),
                    PlanRow.status == PlanStatus.ACTIVE.value,
                )
                .order_by(PlanAuthorisationRow.valid_to, PlanAuthorisationRow.id)
            ).all()
            sites = self._sites(session, (site_id for _, _, site_id in rows))
            patients = self._patients(session, (patient_id for _, patient_id, _ in rows))
            events: list[Event] = []
            for auth, patient_id, site_id in rows:
                site = sites.get(site_id)
                if site is None:
                    continue
                left = (auth.valid_to - site[0].local_today(now)).days
                if not 0 <= left <= EXPIRING_DAYS:
                    continue
                name, subscriber = patients.get(patient_id, ("", ""))
                payload = {
                    "patient_id": patient_id,
                    "site_id": site_id,
                    "therapy_plan_id": auth.plan_id,
                    "authorisation_id": auth.id,
                    "payer": auth.payer,
                    "valid_to": auth.valid_to.isoformat(),
                    "days_left": left,
                    "patient_name": name,
                }
                key = f"AUTHORISATION_EXPIRING:{auth.id}:{auth.valid_to.isoformat()}"
                events += addressed("AUTHORISATION_EXPIRING", key, payload, subscriber)
                auth.expiry_notice_for = auth.valid_to
            return write_events(session, self.table, events, now)
