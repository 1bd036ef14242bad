"""GetCostReport: protobuf ↔ the cost use case. No rules live here."""

from __future__ import annotations

from services.inventory.cost_service import CostService


class CostApi:
    """Mixed into InventoryApi; ``costs`` comes from it."""

    costs: CostService
