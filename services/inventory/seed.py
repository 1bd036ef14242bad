"""`python -m services.inventory seed`: migrate, then load the shipped catalogue (idempotent:
products are matched by code; unchanged ones are left alone)."""

from __future__ import annotations

from pathlib import Path

from services.common.clock import Clock, SystemClock
from services.common.db import Database
from services.common.migrations import upgrade
from services.common.settings import ServiceSettings
from services.inventory.data import load_products
from services.inventory.usecases.catalogue import Catalogue


def seed_catalogue(
    settings: ServiceSettings, clock: Clock | None = None, path: Path | None = None
) -> tuple[int, int]:
    """Returns (products in the file, products created or changed)."""
    products = load_products(path)
    db = Database(settings.database_url, pool_size=2)
    try:
        upgrade("inventory", db.engine)
        service = Catalogue(db, clock or SystemClock())
        changed = 0
        with db.write() as session:
            for product in products:
                _, did_change = service.upsert_by_code(session, product)
                changed += did_change
        return len(products), changed
    finally:
        db.dispose()
