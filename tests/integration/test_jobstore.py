"""Jobs kept in the service's database (services/common/jobstore.py): a job and its next run
time survive a restart of the scheduler, on SQLite and PostgreSQL; stored jobs call functions
registered by name, acting as the service that registered them."""

from __future__ import annotations

import datetime as dt

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from sqlalchemy.exc import OperationalError

from services.common import jobstore
from services.common.db import Database
from services.common.identity import current_caller, service_caller
from services.common.migrations import upgrade
from services.inventory.store.models import job_table


def test_a_job_survives_a_restart(database_url: str) -> None:
    db = Database(database_url)
    try:
        upgrade("inventory", db.engine)
        ran: list[tuple[str, str]] = []
        jobstore.register(
            "test.tick",
            lambda x: ran.append((x, current_caller().subject)),
            service_caller("inventory"),
        )
        when = dt.datetime(2030, 1, 1, 6, 0, tzinfo=dt.UTC)
        first = jobstore.database_scheduler(db, job_table)
        first.start(paused=True)
        first.add_job(jobstore.run, DateTrigger(run_date=when), args=["test.tick", "x"], id="x")
        first.shutdown(wait=False)
        again = jobstore.database_scheduler(db, job_table)  # the service restarted
        again.start(paused=True)
        try:
            job = again.get_job("x")
            assert job is not None and job.next_run_time == when
            job.func(*job.args)  # what the scheduler will call at that time
            assert ran == [("x", "inventory")]
        finally:
            again.shutdown(wait=False)
    finally:
        db.dispose()


def test_an_unregistered_job_says_so() -> None:
    with pytest.raises(LookupError, match="no job 'nobody.home'"):
        jobstore.run("nobody.home")


def test_a_job_another_replica_already_removed_is_not_an_error(database_url: str) -> None:
    """Both replicas of a service run the same one-off start-up job; the second to finish
    finds it removed. APScheduler 3's own store raises JobLookupError there, in the scheduler's
    thread, which then stops running every job for good."""
    db = Database(database_url)
    try:
        upgrade("inventory", db.engine)
        scheduler = jobstore.database_scheduler(db, job_table)
        scheduler.start(paused=True)
        try:
            when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
            job = scheduler.add_job(
                jobstore.run, DateTrigger(run_date=when), args=["test.once"], id="once"
            )
            store = scheduler._lookup_jobstore("default")
            store.remove_job("once")  # the other replica
            store.remove_job("once")  # this one: already gone is done
            store.update_job(job)  # nor is updating a job that is gone
            assert scheduler.get_job("once") is None
        finally:
            scheduler.shutdown(wait=False)
    finally:
        db.dispose()


def test_a_failing_round_does_not_end_the_scheduler(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error APScheduler does not catch itself (e.g. updating a job while the database
    restarts) ends its thread; here it is logged and retried after jobstore_retry_interval."""
    db = Database(database_url)
    try:
        scheduler = jobstore.database_scheduler(db, job_table)

        def database_away(self: object) -> float | None:
            raise OperationalError("UPDATE", {}, Exception("server closed the connection"))

        monkeypatch.setattr(BackgroundScheduler, "_process_jobs", database_away)
        assert scheduler._process_jobs() == scheduler.jobstore_retry_interval
    finally:
        db.dispose()
