"""Forecast, reorder and purchase-order RPCs of InventoryService: protobuf ↔ planning use
cases. No rules live here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.inventory.planning_service import PlanningService


class PlanningApi:
    """Mixed into InventoryApi; ``planning`` and ``_mutate`` come from it."""

    planning: PlanningService
    _mutate: Callable[..., Any]
