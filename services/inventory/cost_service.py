"""Cost of what was dispensed and wasted, and the value of what is on the shelf."""

from __future__ import annotations

from services.common.clock import Clock
from services.common.db import Database
from services.inventory.site_service import SiteService


class CostService:
    def __init__(self, db: Database, clock: Clock, sites: SiteService) -> None:
        self.db = db
        self.clock = clock
        self.sites = sites
