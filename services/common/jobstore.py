"""APScheduler 3 with its jobs kept in the service's own database, so the schedule
and each job's next run time survive a restart: a daily check missed while the service was
down still runs when it comes back (within the job's misfire grace time).

Jobs are stored pickled, so they must name a module-level function: every job runs
``run(name, *args)``, and the service registers the callable behind each name at start-up
(its bound methods hold connections and cannot be pickled). Several replicas may share one
store; each then runs the jobs too, which is why every job body here is idempotent (dedupe keys,
state changes that happen once).

A service (re)starts on a store that already holds its jobs, perhaps while another replica
starts too. So jobs are put in the store only through ``ensure_job``, and only once the
scheduler has started (``start_scheduler``): before that APScheduler sees only the jobs added in
this process, not the stored ones, and adding one the store holds fails the start with
ConflictingIdError. ``ensure_job`` keeps a stored job that is already as asked, next run time
included (a daily check missed while the service was down still runs), replaces one that
differs (a new interval, a new one-off time), and takes "another replica just added it" as
done.

APScheduler 3 does not expect a shared store: when two replicas run a one-off job, the second
one's removal finds nothing and raises in the scheduler's own thread, which dies silently (no
more jobs, health still SERVING). The store here treats "already gone" as done, and the
scheduler survives any error in a round of its own bookkeeping (a database restart too): it
logs it and tries again after ``jobstore_retry_interval``. A job that raises is APScheduler's
to log (its executor catches everything); neither it nor a failure to schedule the jobs at
start ends the process or the scheduler's thread.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Column, Float, LargeBinary, MetaData, Table, Unicode

from services.common import metrics, tracing
from services.common.db import Database
from services.common.identity import Caller, running_as

log = logging.getLogger(__name__)

_REGISTRY: dict[str, Callable[..., object]] = {}
# This process's own housekeeping (retrying the start-up scheduling), never stored or shared.
LOCAL_STORE = "local"


class SharedJobStore(SQLAlchemyJobStore):  # type: ignore[misc]  # untyped library
    """A store several replicas share: a job another replica already updated away or
    removed is not an error. Starting it touches no database: the migrations made its table
    (define_job_table), so a database that blinks as the service starts fails only the
    scheduling, which is retried (start_scheduler)."""

    def start(self, scheduler: BaseScheduler, alias: str) -> None:
        BaseJobStore.start(self, scheduler, alias)  # not SQLAlchemyJobStore's CREATE TABLE

    def update_job(self, job: Job) -> None:
        try:
            super().update_job(job)
        except JobLookupError:
            log.debug("job %s was removed by another replica", job.id)

    def remove_job(self, job_id: str) -> None:
        try:
            super().remove_job(job_id)
        except JobLookupError:
            log.debug("job %s was removed by another replica", job_id)


class ResilientScheduler(BackgroundScheduler):  # type: ignore[misc]  # untyped library
    """A failed round of the scheduler's own bookkeeping is logged and retried, never the
    end of the thread. No round once shut down: APScheduler's thread, woken by ``shutdown``,
    would otherwise run one more round, fail to hand the due jobs to the executor it just
    closed, and store them as run (a job due as the service stops would be lost)."""

    def _process_jobs(self) -> float | None:
        if self.state == STATE_STOPPED:
            return None
        try:
            return super()._process_jobs()  # type: ignore[no-any-return]
        except Exception:
            log.exception("job scheduler round failed; retrying")
            return float(self.jobstore_retry_interval)


def register(name: str, job: Callable[..., object], caller: Caller) -> None:
    """``job`` runs as ``caller`` (its service: services.common.identity.service_caller)."""
    _REGISTRY[name] = running_as(caller, job)


def run(name: str, *args: object) -> None:
    """What every stored job calls (a picklable module-level reference): counted and timed by
    name, and traced as the root of its own trace (what it writes to an outbox carries it)."""
    job = _REGISTRY.get(name)
    if job is None:
        raise LookupError(f"no job {name!r} registered in this process")
    with metrics.job(name), tracing.span(f"job {name}"):
        job(*args)


def ensure_job(
    scheduler: BaseScheduler,
    job_id: str,
    trigger: BaseTrigger,
    name: str,
    *args: object,
    **options: Any,
) -> None:
    """Have the store hold ``job_id`` calling ``run(name, *args)`` on ``trigger`` with
    ``options`` (coalesce, misfire_grace_time, max_instances): the one way a service schedules
    a stored job, so that doing it again — at every start, on every replica — is harmless.

    A stored job already like that is left alone, its next run time too (one that came while
    the service was down still runs, within its misfire grace time); one that differs is
    replaced; one another replica adds at the same moment is not an error."""
    if not scheduler.running:
        raise RuntimeError(
            f"schedule {job_id} after the scheduler started: before, the stored jobs are unseen"
        )
    stored = scheduler.get_job(job_id)
    if stored is not None and _same(stored, trigger, (name, *args), options):
        return
    try:
        scheduler.add_job(
            run,
            trigger,
            args=[name, *args],
            id=job_id,
            replace_existing=stored is not None,
            **options,
        )
    except ConflictingIdError:  # stored by another replica since get_job
        log.debug("job %s was added by another replica", job_id)


def _same(job: Job, trigger: BaseTrigger, args: tuple[object, ...], options: Any) -> bool:
    return (
        job.func is run
        and tuple(job.args) == args
        and _fires(job.trigger) == _fires(trigger)
        and all(getattr(job, key, None) == value for key, value in options.items())
    )


def _fires(trigger: BaseTrigger) -> str:
    """What decides when a trigger fires. An interval's start date is only "when it was made",
    so an interval is its length; the others' repr holds every field, time zone included."""
    return str(trigger) if isinstance(trigger, IntervalTrigger) else repr(trigger)


def start_scheduler(scheduler: BaseScheduler, *schedules: Callable[[], None]) -> None:
    """Start ``scheduler``, then run ``schedules`` (each puts jobs in the store with
    ``ensure_job``), paused meanwhile so that no stored job runs on a half-made schedule.

    Scheduling that fails (the database gone between the migrations and now) is logged and
    tried again every ``jobstore_retry_interval`` from a job kept in this process's memory
    until it succeeds: the service keeps serving and its scheduler keeps running."""
    with contextlib.suppress(ValueError):  # there already: started before (and shut down)
        scheduler.add_jobstore(MemoryJobStore(), LOCAL_STORE)
    scheduler.start(paused=True)
    try:
        _schedule(scheduler, schedules)
    finally:
        scheduler.resume()


def _schedule(scheduler: BaseScheduler, schedules: Sequence[Callable[[], None]]) -> None:
    try:
        for schedule in schedules:
            schedule()
    except Exception:
        retry = float(scheduler.jobstore_retry_interval)
        log.exception("could not schedule the jobs; trying again in %g s", retry)
        scheduler.add_job(
            _schedule,
            DateTrigger(run_date=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=retry)),
            args=[scheduler, schedules],
            id="schedule-jobs",
            jobstore=LOCAL_STORE,
            replace_existing=True,
        )


def define_job_table(metadata: MetaData, service: str) -> Table:
    """The table APScheduler's SQLAlchemyJobStore uses, declared here too so that Alembic
    creates it and the migrations-match-models check covers it."""
    return Table(
        f"{service}_apscheduler_jobs",
        metadata,
        Column("id", Unicode(191), primary_key=True),
        Column("next_run_time", Float(25), index=True),
        Column("job_state", LargeBinary, nullable=False),
    )


def database_scheduler(db: Database, table: Table) -> BackgroundScheduler:
    # Its own MetaData: the store declares the same table itself, and the service's metadata
    # already has it (define_job_table).
    store = SharedJobStore(engine=db.engine, tablename=table.name, metadata=MetaData())
    return ResilientScheduler(jobstores={"default": store}, timezone="UTC")
