"""Scheduling stored jobs idempotently (services/common/jobstore.py): ``ensure_job`` keeps a job
that is already as asked (its next run time too) and replaces one that differs;
``start_scheduler`` schedules after the start and retries a scheduling that failed; a job that
raises leaves the scheduler running the others. On APScheduler's memory store; the same on the
services' database stores: tests/integration/test_jobstore.py."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pytest
from apscheduler.events import EVENT_JOB_ERROR
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from services.common import jobstore
from services.common.identity import service_caller

PAST = dt.datetime(2026, 1, 1, 6, 0, tzinfo=dt.UTC)


@pytest.fixture
def scheduler() -> Iterator[BackgroundScheduler]:
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start(paused=True)
    yield scheduler
    scheduler.shutdown(wait=False)


def test_a_job_is_scheduled_only_once_the_scheduler_started() -> None:
    """Before the start APScheduler sees only the jobs added in this process, not the stored
    ones: scheduling then is how a restart met its own stored job (ConflictingIdError)."""
    with pytest.raises(RuntimeError, match="after the scheduler started"):
        jobstore.ensure_job(
            BackgroundScheduler(), "daily:site-1", IntervalTrigger(hours=1), "test.tick"
        )


def test_a_job_already_as_asked_is_kept_with_its_next_run_time(
    scheduler: BackgroundScheduler,
) -> None:
    daily = CronTrigger(hour=6, timezone="Europe/London")
    jobstore.ensure_job(scheduler, "daily", daily, "test.tick", "site-1", coalesce=True)
    scheduler.modify_job("daily", next_run_time=PAST)  # due while the service was down
    again = CronTrigger(hour=6, timezone="Europe/London")
    jobstore.ensure_job(scheduler, "daily", again, "test.tick", "site-1", coalesce=True)
    # an interval is the same whatever its (default) start date, i.e. when it was made
    jobstore.ensure_job(scheduler, "scan", IntervalTrigger(seconds=60), "test.tick")
    scheduler.modify_job("scan", next_run_time=PAST)
    later = IntervalTrigger(seconds=60, start_date=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    jobstore.ensure_job(scheduler, "scan", later, "test.tick")
    assert [(j.id, j.next_run_time) for j in scheduler.get_jobs()] == [
        ("daily", PAST),
        ("scan", PAST),
    ]


@pytest.mark.parametrize(
    ("trigger", "args", "options"),
    [
        (CronTrigger(hour=7, timezone="Europe/London"), ("site-1",), {}),  # another time
        (CronTrigger(hour=6, timezone="America/New_York"), ("site-1",), {}),  # another zone
        (CronTrigger(hour=6, timezone="Europe/London"), ("site-2",), {}),  # other arguments
        (CronTrigger(hour=6, timezone="Europe/London"), ("site-1",), {"coalesce": False}),
    ],
)
def test_a_job_that_differs_is_replaced(
    scheduler: BackgroundScheduler,
    trigger: CronTrigger,
    args: tuple[str, ...],
    options: dict[str, bool],
) -> None:
    daily = CronTrigger(hour=6, timezone="Europe/London")
    jobstore.ensure_job(scheduler, "daily", daily, "test.tick", "site-1", coalesce=True)
    scheduler.modify_job("daily", next_run_time=PAST)
    jobstore.ensure_job(scheduler, "daily", trigger, "test.tick", *args, **options)
    (job,) = scheduler.get_jobs()
    assert repr(job.trigger) == repr(trigger)
    assert job.args == ("test.tick", *args)
    assert job.next_run_time > dt.datetime.now(dt.UTC)


def test_an_interval_of_another_length_and_a_new_one_off_time_replace_the_job(
    scheduler: BackgroundScheduler,
) -> None:
    jobstore.ensure_job(scheduler, "scan", IntervalTrigger(seconds=60), "test.tick")
    jobstore.ensure_job(scheduler, "scan", IntervalTrigger(seconds=5), "test.tick")
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)
    jobstore.ensure_job(scheduler, "once", DateTrigger(run_date=PAST), "test.tick")
    jobstore.ensure_job(scheduler, "once", DateTrigger(run_date=soon), "test.tick")
    assert {j.id: str(j.trigger) for j in scheduler.get_jobs()} == {
        "scan": "interval[0:00:05]",
        "once": f"date[{soon:%Y-%m-%d %H:%M:%S} UTC]",
    }


def test_scheduling_that_fails_at_start_is_retried_and_the_scheduler_runs() -> None:
    attempts: list[int] = []

    def schedule() -> None:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise ConnectionError("database gone between the migrations and now")
        jobstore.ensure_job(scheduler, "scan", IntervalTrigger(seconds=60), "test.tick")

    scheduler = BackgroundScheduler(timezone="UTC", jobstore_retry_interval=30)
    jobstore.start_scheduler(scheduler, schedule)
    try:
        assert scheduler.state == STATE_RUNNING  # not left paused
        (retry,) = scheduler.get_jobs(jobstore.LOCAL_STORE)
        wait = retry.next_run_time - dt.datetime.now(dt.UTC)
        assert dt.timedelta(seconds=25) < wait <= dt.timedelta(seconds=30)
        assert scheduler.get_job("scan") is None
        retry.func(*retry.args)  # what the scheduler runs then (and removes, a one-off)
        assert scheduler.get_job("scan") is not None
        (same,) = scheduler.get_jobs(jobstore.LOCAL_STORE)  # no further retry
        assert same.next_run_time == retry.next_run_time
        assert attempts == [0, 1]
    finally:
        scheduler.shutdown(wait=False)


def test_a_job_that_raises_leaves_the_scheduler_running_the_others() -> None:
    failed = threading.Semaphore(0)
    ran = threading.Event()

    def broken() -> None:
        raise RuntimeError("a job's own bug")

    jobstore.register("test.broken", broken, service_caller("inventory"))
    jobstore.register("test.after", ran.set, service_caller("inventory"))
    scheduler = jobstore.ResilientScheduler(timezone="UTC")
    scheduler.add_listener(lambda _: failed.release(), EVENT_JOB_ERROR)
    scheduler.start()
    try:
        now = dt.datetime.now(dt.UTC)
        scheduler.add_job(jobstore.run, DateTrigger(run_date=now), args=["test.broken"])
        # a stored job of a name this release no longer registers
        scheduler.add_job(jobstore.run, DateTrigger(run_date=now), args=["test.retired"])
        assert failed.acquire(timeout=10) and failed.acquire(timeout=10)
        scheduler.add_job(jobstore.run, DateTrigger(run_date=now), args=["test.after"])
        assert ran.wait(10), "the scheduler stopped running jobs after one raised"
    finally:
        scheduler.shutdown(wait=False)
