"""A day's grams a new booking can draw on, from the inventory's forecast figures
(services/scheduler/adapters/inventory_stock.py bookable_grams), worked by hand: S is the day's
stock, R its reserved demand, F its forecast (unbooked) demand."""

from __future__ import annotations

from decimal import Decimal as D

from services.scheduler.adapters.inventory_stock import bookable_grams


def test_stock_covers_everything() -> None:
    # S 200, R 50, F 70: projected 200 − 120 = 80, no shortfall → 80 + 70 = 150 = S − R
    assert bookable_grams(D(80), D(70), D(0)) == D(150)


def test_stock_covers_the_reservations_but_not_the_forecast() -> None:
    # S 100, R 50, F 70: projected 0, shortfall 20 → 0 + 70 − 20 = 50 = S − R
    assert bookable_grams(D(0), D(70), D(20)) == D(50)


def test_an_empty_shelf_offers_nothing_whatever_the_forecast() -> None:
    # S 0, R 0, F 70: projected 0, shortfall 70 → 0 (adding F back alone would say 70)
    assert bookable_grams(D(0), D(70), D(70)) == D(0)


def test_reservations_beyond_the_stock_leave_nothing() -> None:
    # S 30, R 50, F 70: projected 0, shortfall 90 → 70 − 90 < 0 → 0
    assert bookable_grams(D(0), D(70), D(90)) == D(0)
