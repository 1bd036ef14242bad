"""Cost of what was dispensed and wasted, and the value of what is on the shelf."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import NotFound, Violations
from services.inventory.domain.cost import (
    CostLine,
    Grouping,
    ProductValue,
    cost_lines,
    period_bounds,
    validate_period,
    valuation,
)
from services.inventory.store import cost as store
from services.inventory.usecases.sites import Sites


@dataclass(frozen=True)
class CostQuery:
    """A request as parsed: None where a field was missing or malformed (already reported)."""

    site_id: str
    start: dt.date | None
    end: dt.date | None
    grouping: Grouping | None


@dataclass(frozen=True)
class CostReport:
    lines: list[CostLine]
    totals: list[CostLine]
    valuation: list[ProductValue]
    valuation_totals: dict[str, Decimal]


class Costs:
    def __init__(self, db: Database, clock: Clock, sites: Sites) -> None:
        self.db = db
        self.clock = clock
        self.sites = sites

    def report(self, query: CostQuery, violations: Violations) -> CostReport:
        """Checks every field (adding to what the caller found while parsing) before reading
        anything; the period is the site's local days as UTC instants."""
        with self.db.read() as session:
            site = None
            if not query.site_id:
                violations.add("site_id", "is required")
            else:
                try:
                    site = self.sites.get(query.site_id, session)
                except NotFound:
                    violations.add("site_id", f"no stock site {query.site_id!r}")
            validate_period(query.start, query.end, violations)
            violations.raise_if_any()
            assert site is not None and query.start and query.end and query.grouping
            since, until = period_bounds(query.start, query.end, site.zone)
            movements = store.cost_movements(session, site.id, since, until)
            who = (
                {}
                if query.grouping is Grouping.PRODUCT
                else store.recipients(session, {m.reservation_id for m in movements})
            )
            held = store.holdings(session, site.id, until)
        lines, totals = cost_lines(movements, query.grouping, who)
        values, value_totals = valuation(held)
        return CostReport(lines, totals, values, value_totals)
