"""The inventory's daily jobs: when they fire in a site's zone (both sides of a DST change),
that every site gets one, and that one site's failure does not stop the rest."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from services.common.pagination import PageRequest
from services.inventory.domain.sites import StockSite
from services.inventory.jobs import InventoryJobs, daily_trigger

UTC = dt.UTC
LONDON = StockSite("site-1", "Site 1", "Europe/London", dt.time(6, 0))


def test_daily_check_fires_at_local_time_in_winter_and_summer() -> None:
    trigger = daily_trigger(LONDON)
    winter = trigger.get_next_fire_time(None, dt.datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
    assert winter.astimezone(UTC) == dt.datetime(2026, 11, 25, 6, 0, tzinfo=UTC)  # GMT
    summer = trigger.get_next_fire_time(None, dt.datetime(2027, 6, 1, 9, 0, tzinfo=UTC))
    assert summer.astimezone(UTC) == dt.datetime(2027, 6, 2, 5, 0, tzinfo=UTC)  # BST = UTC+1
    # the night the clocks go forward (28 March 2027): still 06:00 local, i.e. 05:00 UTC
    spring = trigger.get_next_fire_time(None, dt.datetime(2027, 3, 27, 12, 0, tzinfo=UTC))
    assert spring.astimezone(UTC) == dt.datetime(2027, 3, 28, 5, 0, tzinfo=UTC)


class FakeSites:
    def __init__(self, sites: list[StockSite]) -> None:
        self.sites = sites

    def list_sites(self, page: PageRequest) -> list[tuple[StockSite, dt.datetime]]:
        after = page.after[0] if page.after else ""
        rows = [s for s in sorted(self.sites, key=lambda s: s.id) if s.id > after]
        return [(s, dt.datetime(2026, 1, 1, tzinfo=UTC)) for s in rows[: page.size + 1]]


def test_every_site_gets_one_daily_job_and_failures_stay_local(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[tuple[str, str]] = []

    def expiry(site_id: str) -> Any:
        ran.append(("expiry", site_id))
        if site_id == "site-1":
            raise RuntimeError("database unavailable")

    def reorder(site_id: str) -> Any:
        ran.append(("reorder", site_id))

    sites = FakeSites([LONDON])
    jobs = InventoryJobs(sites, expiry, reorder, BackgroundScheduler(timezone="UTC"))  # type: ignore[arg-type]
    jobs.scheduler.start(paused=True)
    try:
        jobs.refresh()
        sites.sites.append(StockSite("site-2", "Site 2", "America/New_York", dt.time(7, 30)))
        jobs.refresh()
        jobs.refresh()  # nothing new: no duplicate jobs
        ids = sorted(j.id for j in jobs.scheduler.get_jobs())
    finally:
        jobs.scheduler.shutdown(wait=False)
    assert ids == ["daily:site-1", "daily:site-2"]
    jobs.daily("site-1")
    jobs.daily("site-2")
    # expiry failed on site-1: logged, and its reorder check and site-2's jobs still ran
    assert ran == [
        ("expiry", "site-1"),
        ("reorder", "site-1"),
        ("expiry", "site-2"),
        ("reorder", "site-2"),
    ]
    assert "expiry check failed for site site-1" in caplog.text


def test_the_start_up_check_runs_every_site_once() -> None:
    ran: list[str] = []
    sites = FakeSites([LONDON, StockSite("site-2", "Site 2", "America/New_York", dt.time(7, 30))])
    jobs = InventoryJobs(  # type: ignore[arg-type]
        sites, ran.append, lambda _: None, BackgroundScheduler(timezone="UTC")
    )
    jobs.all_sites()
    assert ran == ["site-1", "site-2"]
