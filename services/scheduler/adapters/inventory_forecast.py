"""The nightly forecast the scheduler owes the inventory: the doses it expects but has
not booked, per site, product and day, so reorder suggestions see the months ahead.

For each active plan, chair or home: its next due infusion if nothing books it yet, then one
infusion every interval after that up to the horizon (future cycles are never booked yet). Grams
come from the dose calculation for the next due day (CalculateDose's rules). Every day of the
horizon is sent for every product the site forecasts, zeros included, so days that have since
been booked or dropped are cleared at the inventory. The rows go through the outbox (topic
DEMAND_FORECAST) and the relay calls UpsertDemandForecast with the row id as request_id.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from decimal import Decimal

from sqlalchemy import select

from services.common.clock import Clock
from services.common.convert import decimal_str
from services.common.db import Database
from services.common.errors import DomainError
from services.scheduler.domain.due import CourseKind
from services.scheduler.domain.plans import PlanStatus
from services.scheduler.domain.regimens.switch import doses_after
from services.scheduler.store import repository as repo
from services.scheduler.store.codec import plan_from_spec
from services.scheduler.store.events import Event, write_events
from services.scheduler.store.models import SiteRow, outbox
from services.scheduler.usecases.bookings import Bookings
from services.scheduler.usecases.records import Records

log = logging.getLogger(__name__)

HORIZON_DAYS = 120


class ForecastPush:
    def __init__(self, db: Database, clock: Clock, records: Records, bookings: Bookings) -> None:
        self.db = db
        self.clock = clock
        self.records = records
        self.bookings = bookings

    def push(self, horizon_days: int = HORIZON_DAYS) -> int:
        """Write one DEMAND_FORECAST row per site; returns how many were written."""
        written = 0
        with self.db.read() as session:
            site_ids = list(session.scalars(select(SiteRow.id).order_by(SiteRow.id)))
        for site_id in site_ids:
            try:
                written += self._site(site_id, horizon_days)
            except Exception:  # one site's failure must not stop the others
                log.exception("forecast push failed for site %s", site_id)
        return written

    def _site(self, site_id: str, horizon_days: int) -> int:
        with self.db.write() as session:
            site = repo.site_from_row(repo.site_row(session, site_id))
            today = site.local_today(self.clock.now())
            last = today + dt.timedelta(days=horizon_days - 1)
            pairs = repo.plans_with_versions(session, site_id, PlanStatus.ACTIVE.value)
            plans = {row.id: plan_from_spec(row.id, v.version, v.spec) for row, v in pairs}
            grams: dict[tuple[str, dt.date], Decimal] = defaultdict(Decimal)
            for item in self.records.due_items(session, list(plans.values()), today):
                plan = plans[item.plan_id]
                try:  # the dose, not the chair: a home dose has none and still leaves stock
                    product_id, dose_grams = self.bookings.dose_of(plan, item)
                except DomainError:  # no dose today: nothing to forecast
                    continue
                day = max(item.due_date, today)
                if not item.booked_appointment_id and day <= last:
                    grams[(product_id, day)] += dose_grams
                if item.course is CourseKind.INDUCTION:
                    continue  # maintenance after the course is forecast once it has begun
                full = dose_grams if item.dose_grams is None else plan.maintenance_dose
                # a converted version's ramp-up and days of the week (docs/regimens.md)
                for day, dose in doses_after(plan, item.due_date, item.ramp_step, last):
                    if day >= today:
                        grams[(product_id, day)] += full if dose is None else dose
            products = sorted({product for product, _ in grams})
            if not products:
                return 0
            days = [today + dt.timedelta(days=i) for i in range(horizon_days)]
            entries = [
                {
                    "site_id": site_id,
                    "product_id": product,
                    "day": day.isoformat(),
                    "grams": decimal_str(grams.get((product, day), Decimal(0))),
                }
                for product in products
                for day in days
            ]
            event = Event(
                "DEMAND_FORECAST", f"DEMAND_FORECAST:{site_id}:{today}", {"forecasts": entries}
            )
            return write_events(session, outbox, [event], self.clock.now())
