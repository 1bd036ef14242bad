"""The demo data `make run` loads: stocked sites with realistic expiries and costs, written
through the service layer, and the same stock after a second run."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from services.common.clock import FixedClock
from services.common.db import Database
from services.inventory.demo import LOTS, seed_demo
from services.inventory.seed import seed_catalogue
from services.inventory.settings import load_settings
from services.inventory.store.models import (
    LotRow,
    MovementRow,
    ReorderPolicyRow,
    StockSiteRow,
    StorageUnitRow,
)

NOW = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)


def snapshot(url: str) -> dict[str, object]:
    db = Database(url, pool_size=1)
    try:
        with db.read() as s:
            lots = s.scalars(select(LotRow).order_by(LotRow.lot_number)).all()
            return {
                "sites": s.scalar(select(func.count()).select_from(StockSiteRow)),
                "units": s.scalar(select(func.count()).select_from(StorageUnitRow)),
                "movements": s.scalar(select(func.count()).select_from(MovementRow)),
                "policies": s.scalar(select(func.count()).select_from(ReorderPolicyRow)),
                "lots": [
                    (r.site_id, r.lot_number, r.on_hand_vials, r.expiry_date, r.unit_cost)
                    for r in lots
                ],
                "rows": lots,
            }
    finally:
        db.dispose()


def test_demo_stock_is_realistic_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'inventory.db'}"
    settings = load_settings({"INVENTORY_DATABASE_URL": url})
    clock = FixedClock(NOW)
    seed_catalogue(settings, clock)
    first = seed_demo(settings, clock)
    assert (first.sites_created, first.units_created, first.lots_received) == (2, 4, len(LOTS))
    assert first.policies_set == 2
    before = snapshot(url)
    clock.advance(dt.timedelta(days=3))  # a later `make run`
    again = seed_demo(settings, clock)
    assert (again.sites_created, again.units_created, again.lots_received) == (0, 0, 0)
    assert again.policies_set == 0
    after = snapshot(url)
    assert {k: v for k, v in after.items() if k != "rows"} == {
        k: v for k, v in before.items() if k != "rows"
    }

    rows: list[LotRow] = before["rows"]  # type: ignore[assignment]
    assert before["movements"] == len(LOTS)  # one receipt per lot
    today = NOW.date()  # London is on UTC in November
    days = sorted((r.expiry_date - today).days for r in rows)
    soon = [d for d in days if 30 <= d <= 90]
    later = [d for d in days if 365 <= d <= 913]  # 12 to 30 months
    assert len(soon) >= 3 and len(later) >= len(rows) - len(soon)
    assert len(later) > len(rows) / 2
    for r in rows:
        per_gram = r.unit_cost / r.presentation_grams
        # £34/g national average (docs/clinical-rules.md#cost), give or take contract prices
        assert Decimal("30") <= per_gram <= Decimal("38"), (r.lot_number, per_gram)
        assert r.currency == "GBP" and r.on_hand_vials > 0 and r.storage_unit_id
    ten_g = [r.unit_cost for r in rows if r.lot_number == "LE25B044"]
    assert ten_g == [Decimal("340.00")]  # a 10 g Gammagard vial at £34/g
