"""Jobs kept in the service's database (services/common/jobstore.py): a job and its next run
time survive a restart of the scheduler, on SQLite and PostgreSQL; stored jobs call functions
registered by name."""

from __future__ import annotations

import datetime as dt

import pytest
from apscheduler.triggers.date import DateTrigger

from services.common import jobstore
from services.common.db import Database
from services.common.migrations import upgrade
from services.inventory.store.models import job_table


def test_a_job_survives_a_restart(database_url: str) -> None:
    db = Database(database_url)
    try:
        upgrade("inventory", db.engine)
        ran: list[str] = []
        jobstore.register("test.tick", ran.append)
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
            assert ran == ["x"]
        finally:
            again.shutdown(wait=False)
    finally:
        db.dispose()


def test_an_unregistered_job_says_so() -> None:
    with pytest.raises(LookupError, match="no job 'nobody.home'"):
        jobstore.run("nobody.home")
