"""What the inventory says about stock on the days FindSlots offers: a slot on a day
the site's in-date stock of the plan's product cannot cover is flagged (or skipped).

Read from the inventory's GetStockForecast: a day's available grams are what its stock holds
once that day's reservations are met (bookable_grams). Forecasts are the scheduler's own
pushes of unbooked doses, this patient's among them, so they are not held against the slot;
bookings' reservations are. An approximation on purpose: it answers "is there
stock for this dose that day", not "which vials". When the inventory cannot be asked, slots are
not flagged and the reply says the stock was not checked.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import grpc
from google.type.date_pb2 import Date

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 2


class InventoryStock:
    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = inventory_pb2_grpc.InventoryServiceStub(channel)

    def available(
        self, site_id: str, product_id: str, first: dt.date, last: dt.date
    ) -> dict[dt.date, Decimal] | None:
        """Grams available per day, or None if the inventory cannot say."""
        days = self.days(site_id, product_id, first, last)
        return None if days is None else {day: grams for day, (grams, _) in days.items()}

    def days(
        self, site_id: str, product_id: str, first: dt.date, last: dt.date
    ) -> dict[dt.date, tuple[Decimal, Decimal]] | None:
        """Per day, (grams available, grams expiring unused at its start); None if the
        inventory cannot say. PlanSchedule's stock rule needs the expiry to let a dose use up
        a short-dated lot without counting it against the days after."""
        try:
            days = self.stub.GetStockForecast(
                inv.GetStockForecastRequest(
                    site_id=site_id,
                    product_id=product_id,
                    horizon_days=(last - first).days + 1,
                    start_date=Date(year=first.year, month=first.month, day=first.day),
                ),
                timeout=TIMEOUT_SECONDS,
            ).days
        except grpc.RpcError as error:
            log.info("stock not checked for %s at %s: %s", product_id, site_id, error.code())
            return None
        return {
            dt.date(d.date.year, d.date.month, d.date.day): (
                bookable_grams(
                    Decimal(d.projected_available_grams or "0"),
                    Decimal(d.forecast_demand_grams or "0"),
                    Decimal(d.shortfall_grams or "0"),
                ),
                Decimal(d.expiring_grams or "0"),
            )
            for d in days
        }


def bookable_grams(projected: Decimal, forecast: Decimal, shortfall: Decimal) -> Decimal:
    """The day's stock left after its reservations, from the forecast's figures. The forecast
    met reservations and forecast demand from the day's stock S: projected = S − met, and
    shortfall = demand − met. Forecast grams it met are not held against a slot (they are
    this kind of unbooked dose), so S − reserved = projected + forecast − shortfall, and never
    below 0 (reservations alone may exceed S)."""
    return max(Decimal(0), projected + forecast - shortfall)
