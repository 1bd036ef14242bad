"""The inventory's daily jobs (APScheduler 3): at each site's local expiry-check time, the
expiry check (lots past expiry become EXPIRED, reservations on unusable lots move, LOT_EXPIRING
at the site's thresholds) and then the reorder check (REORDER_DUE, LOW_STOCK).

Jobs live in the service's database (services/common/jobstore.py), so a check missed while the
service was down runs when it returns; at start and every ``INVENTORY_JOBS_INTERVAL_SECONDS``
(default 300) a refresh adds a daily job for each stock site created since (on any replica).
Scheduling goes through ``ensure_job``, so a restart, or a second replica, on a store that
already holds the jobs keeps them as they are. Both bodies
are idempotent — state changes happen once and every event has a dedupe key — so a second
replica running the same job, or a run repeated after a crash, raises nothing twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from services.common.identity import service_caller
from services.common.jobstore import ensure_job, register, run, start_scheduler
from services.common.pagination import PageRequest
from services.inventory.domain.sites import StockSite
from services.inventory.usecases.sites import Sites

log = logging.getLogger(__name__)

REFRESH_SECONDS = 300.0
STARTUP_CHECK_DELAY = dt.timedelta(seconds=20)
# A daily job missed while the service was down still runs if it restarts within 6 hours.
MISFIRE_GRACE_SECONDS = 6 * 3600


def daily_trigger(site: StockSite) -> CronTrigger:
    """The site's local check time, whatever the season: APScheduler resolves the IANA zone,
    so 06:00 in Europe/London is 06:00 UTC in winter and 05:00 UTC in summer."""
    return CronTrigger(
        hour=site.expiry_check_time.hour,
        minute=site.expiry_check_time.minute,
        timezone=site.zone,
    )


class InventoryJobs:
    def __init__(
        self,
        sites: Sites,
        expiry_check: Callable[[str], object],
        reorder_check: Callable[[str], object],
        scheduler: BaseScheduler | None = None,
        name: str = "inventory",
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self.sites = sites
        self.expiry_check = expiry_check
        self.reorder_check = reorder_check
        self.scheduler = scheduler or BackgroundScheduler(timezone="UTC")
        self.name = name
        self.refresh_seconds = refresh_seconds
        caller = service_caller("inventory")
        for job, body in (("daily", self.daily), ("refresh", self.refresh)):
            register(f"{name}.{job}", body, caller)
        register(f"{name}.all_sites", self.all_sites, caller)

    def start(self) -> None:
        start_scheduler(self.scheduler, self.schedule)

    def schedule(self) -> None:
        """The jobs this service keeps in its store (see services/common/jobstore.py)."""
        ensure_job(
            self.scheduler,
            "refresh-sites",
            IntervalTrigger(seconds=self.refresh_seconds),
            f"{self.name}.refresh",
            coalesce=True,
        )
        # A check shortly after start as well: a service that was down at a site's check time,
        # or a fresh `make run`, raises today's expiry and reorder events without waiting for
        # tomorrow. The dedupe keys make a second check of the same day a no-op.
        ensure_job(
            self.scheduler,
            "startup-check",
            DateTrigger(run_date=dt.datetime.now(dt.UTC) + STARTUP_CHECK_DELAY),
            f"{self.name}.all_sites",
        )
        run(f"{self.name}.refresh")  # as the service, like every stored job

    def all_sites(self) -> None:
        page = PageRequest(1000, None)
        while True:
            batch = self.sites.list_sites(page)
            for site, _ in batch[: page.size]:
                self.daily(site.id)
            if len(batch) <= page.size:
                return
            page = PageRequest(page.size, [batch[page.size - 1][0].id])

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def refresh(self) -> None:
        """A daily job for every site (those already stored are kept as they are)."""
        page = PageRequest(1000, None)
        while True:
            batch = self.sites.list_sites(page)
            for site, _ in batch[: page.size]:
                ensure_job(
                    self.scheduler,
                    f"daily:{site.id}",
                    daily_trigger(site),
                    f"{self.name}.daily",
                    site.id,
                    coalesce=True,
                    misfire_grace_time=MISFIRE_GRACE_SECONDS,
                )
            if len(batch) <= page.size:
                return
            page = PageRequest(page.size, [batch[page.size - 1][0].id])

    def daily(self, site_id: str) -> None:
        """Expiry first, so that the reorder check sees what is really usable."""
        for name, job in (("expiry", self.expiry_check), ("reorder", self.reorder_check)):
            try:
                job(site_id)
            except Exception:  # one site's failure must not stop the others' jobs
                log.exception("%s check failed for site %s", name, site_id)
