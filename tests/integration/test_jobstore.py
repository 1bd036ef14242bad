"""Jobs kept in the service's database (services/common/jobstore.py): a job and its next run
time survive a restart of the scheduler, on SQLite and PostgreSQL; stored jobs call functions
registered by name, acting as the service that registered them."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from services.common import jobstore
from services.common.clock import SystemClock
from services.common.db import Database
from services.common.identity import acting_as, current_caller, service_caller
from services.common.migrations import upgrade
from services.inventory.domain.sites import StockSite
from services.inventory.jobs import InventoryJobs
from services.inventory.store.models import job_table
from services.inventory.usecases.sites import Sites
from tests.e2e.harness import free_port


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
        scheduler.start()
        try:
            assert scheduler._process_jobs() == scheduler.jobstore_retry_interval
        finally:
            scheduler.shutdown(wait=False)
    finally:
        db.dispose()


# --- restarting on a store that already holds the jobs -----------------------------------------


def _inventory_jobs(db: Database, checked: Callable[[str], object]) -> InventoryJobs:
    return InventoryJobs(
        Sites(db, SystemClock()),
        checked,
        lambda _: None,
        jobstore.database_scheduler(db, job_table),
    )


def _stored(db: Database) -> dict[str, float | None]:
    with db.engine.connect() as conn:
        return {row.id: row.next_run_time for row in conn.execute(select(job_table))}


def test_inventory_restarts_on_a_store_holding_its_daily_jobs(database_url: str) -> None:
    """The restart `make run` and a crash-looping pod hit: the second start found
    ``daily:<site>`` in the store and failed with ConflictingIdError after SERVING. It now
    keeps the stored jobs as they are: no error, no duplicate, and a check that came due while
    the service was down runs when it is back."""
    db = Database(database_url)
    checked: list[str] = []
    site_1_checked = threading.Event()

    def expiry_check(site_id: str) -> None:
        checked.append(site_id)
        if site_id == "site-1":
            site_1_checked.set()

    try:
        upgrade("inventory", db.engine)
        sites = Sites(db, SystemClock())
        for site_id in ("site-1", "site-2"):
            with acting_as(service_caller("inventory")), db.write() as session:
                site = StockSite(site_id, site_id, "Europe/London", dt.time(6), organisation_id="o")
                sites.create(session, site)
        first = _inventory_jobs(db, expiry_check)
        first.start()
        first.shutdown()
        stored = _stored(db)
        assert set(stored) == {"daily:site-1", "daily:site-2", "refresh-sites", "startup-check"}
        # site-1's check came due while the service was down
        down = jobstore.database_scheduler(db, job_table)
        down.start(paused=True)
        missed = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        down.modify_job("daily:site-1", next_run_time=missed)
        down.shutdown(wait=False)

        again = _inventory_jobs(db, expiry_check)
        again.start()
        try:
            assert site_1_checked.wait(10), "the check missed while down did not run"
        finally:
            again.shutdown()
        assert checked == ["site-1"]
        after = _stored(db)
        assert set(after) == set(stored)
        assert after["daily:site-2"] == stored["daily:site-2"]  # kept, not rescheduled
        assert after["daily:site-1"] == stored["daily:site-1"]  # ran, and set for tomorrow
        again = _inventory_jobs(db, expiry_check)  # and again: nothing changes
        again.start()
        again.shutdown()
        assert {k: v for k, v in _stored(db).items() if k != "startup-check"} == {
            k: v for k, v in after.items() if k != "startup-check"
        }
    finally:
        db.dispose()


def test_a_job_due_as_the_scheduler_stops_is_left_for_the_next_start(database_url: str) -> None:
    """APScheduler's thread runs one more round when ``shutdown`` wakes it; that round could
    not hand a due job to the closed executor, yet stored it as run (a daily check due as the
    service stopped was lost). A stopped scheduler runs no round."""
    db = Database(database_url)
    try:
        upgrade("inventory", db.engine)
        due = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        scheduler = jobstore.database_scheduler(db, job_table)
        scheduler.start(paused=True)
        scheduler.add_job(
            jobstore.run, "interval", hours=1, next_run_time=due, args=["test.tick"], id="tick"
        )
        scheduler.shutdown(wait=False)
        assert scheduler._process_jobs() is None  # what the woken thread runs
        assert _stored(db) == {"tick": due.timestamp()}
    finally:
        db.dispose()


def test_two_replicas_scheduling_the_same_job_at_once_store_it_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both looked before either stored it: the second insert violates the job table's key,
    which is the other replica's job, not an error."""
    db = Database(database_url)
    try:
        upgrade("inventory", db.engine)
        replicas = [jobstore.database_scheduler(db, job_table) for _ in range(2)]
        for replica in replicas:
            replica.start(paused=True)
        try:
            for replica in replicas:
                monkeypatch.setattr(replica, "get_job", lambda job_id, jobstore=None: None)
                jobstore.ensure_job(
                    replica, "daily:site-1", CronTrigger(hour=6), "test.tick", "site-1"
                )
        finally:
            for replica in replicas:
                replica.shutdown(wait=False)
        assert list(_stored(db)) == ["daily:site-1"]
    finally:
        db.dispose()


def test_a_database_away_at_start_delays_the_scheduling_and_ends_nothing() -> None:
    """Between the migrations and the scheduling the database went away: the service keeps
    serving with its scheduler running, and schedules its jobs once the database is back."""
    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone")  # refused
    try:
        scheduler = jobstore.database_scheduler(db, job_table)
        jobstore.start_scheduler(
            scheduler,
            lambda: jobstore.ensure_job(scheduler, "scan", CronTrigger(hour=6), "test.tick"),
        )
        try:
            assert scheduler.state == STATE_RUNNING
            (retry,) = scheduler.get_jobs(jobstore.LOCAL_STORE)
            assert retry.id == "schedule-jobs"
        finally:
            scheduler.shutdown(wait=False)
    finally:
        db.dispose()
