"""APScheduler 3 with its jobs kept in the service's own database (issue 5 §6), so the schedule
and each job's next run time survive a restart: a daily check missed while the service was
down still runs when it comes back (within the job's misfire grace time).

Jobs are stored pickled, so they must name a module-level function: every job runs
``run(name, *args)``, and the service registers the callable behind each name at start-up
(its bound methods hold connections and cannot be pickled). Several replicas may share one
store; each then runs the jobs too, which is why every job body here is idempotent (dedupe keys,
state changes that happen once).

APScheduler 3 does not expect a shared store: when two replicas run a one-off job, the second
one's removal finds nothing and raises in the scheduler's own thread, which dies silently (no
more jobs, health still SERVING). The store here treats "already gone" as done, and the
scheduler survives any error in a round of its own bookkeeping (a database restart too): it
logs it and tries again after ``jobstore_retry_interval``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Column, Float, LargeBinary, MetaData, Table, Unicode

from services.common.db import Database
from services.common.identity import Caller, running_as

log = logging.getLogger(__name__)

_REGISTRY: dict[str, Callable[..., object]] = {}


class SharedJobStore(SQLAlchemyJobStore):  # type: ignore[misc]  # untyped library
    """A store several replicas share: a job another replica already updated away or
    removed is not an error."""

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
    end of the thread."""

    def _process_jobs(self) -> float | None:
        try:
            return super()._process_jobs()  # type: ignore[no-any-return]
        except Exception:
            log.exception("job scheduler round failed; retrying")
            return float(self.jobstore_retry_interval)


def register(name: str, job: Callable[..., object], caller: Caller) -> None:
    """``job`` runs as ``caller`` (its service: services.common.identity.service_caller)."""
    _REGISTRY[name] = running_as(caller, job)


def run(name: str, *args: object) -> None:
    """What every stored job calls (a picklable module-level reference)."""
    job = _REGISTRY.get(name)
    if job is None:
        raise LookupError(f"no job {name!r} registered in this process")
    job(*args)


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
