"""Reservation, dispensing, waste, transfer, recall and expiry RPCs: protobuf ↔ use cases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.inventory.reservation_service import ReservationService


class ReservationApi:
    """Mixed into InventoryApi; ``reservations`` and ``_mutate`` come from it."""

    reservations: ReservationService
    _mutate: Callable[..., Any]
