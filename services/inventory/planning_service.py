"""Demand forecast, stock forecast, reorder policy and suggestions, purchase orders."""

from __future__ import annotations

from services.common.clock import Clock
from services.common.db import Database
from services.common.outbox import Outbox
from services.inventory.catalogue_service import CatalogueService
from services.inventory.site_service import SiteService
from services.inventory.stock_service import StockService


class PlanningService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        catalogue: CatalogueService,
        sites: SiteService,
        stock: StockService,
        outbox: Outbox,
    ) -> None:
        self.db = db
        self.clock = clock
        self.catalogue = catalogue
        self.sites = sites
        self.stock = stock
        self.outbox = outbox
